import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RangeLock, type RangeHandle } from '@qcow2/cluster';

type Op =
  | { kind: 'acquire'; first: number; span: number }
  | { kind: 'try'; first: number; span: number }
  | { kind: 'release'; pick: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('acquire' as const), first: fc.integer({ min: 0, max: 16 }), span: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ kind: fc.constant('try' as const), first: fc.integer({ min: 0, max: 16 }), span: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
);

const overlap = (a: { first: number; last: number }, b: { first: number; last: number }): boolean =>
  a.first <= b.last && b.first <= a.last;

describe('RangeLock', () => {
  it('tryAcquire refuses a range free of holders that overlaps an earlier waiter, which then goes first', async () => {
    const lock = new RangeLock();
    const h = lock.tryAcquire(0, 5)!;
    const order: string[] = [];
    const waiter = lock.acquire(3, 8).then((w) => {
      order.push('waiter');
      return w;
    });
    expect(lock.tryAcquire(7, 9)).toBeUndefined();
    expect(lock.tryAcquire(9, 12)).toBeDefined();
    h.release();
    const w = await waiter;
    expect(order).toEqual(['waiter']);
    expect(lock.isLocked(8, 8)).toBe(true);
    w.release();
    expect(lock.isLocked(8, 8)).toBe(false);
  });

  it('never grants overlapping ranges at once, serves overlapping requests in order, and grants every request once all are released', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const lock = new RangeLock();
        const held: RangeHandle[] = [];
        /** Requests in the order made, with when (grant sequence number) each was granted. */
        const requests: { first: number; last: number; granted?: number }[] = [];
        let grants = 0;
        const check = (): void => {
          for (let i = 0; i < held.length; i++) {
            for (let j = i + 1; j < held.length; j++) expect(overlap(held[i]!, held[j]!)).toBe(false);
          }
        };
        const settle = async (): Promise<void> => {
          for (let i = 0; i < 3; i++) await Promise.resolve();
        };
        for (const o of ops) {
          if (o.kind === 'release') {
            if (held.length === 0) continue;
            const [h] = held.splice(o.pick % held.length, 1);
            h!.release();
            h!.release(); // a second release is a no-op
          } else {
            const request: { first: number; last: number; granted?: number } = { first: o.first, last: o.first + o.span };
            if (o.kind === 'try') {
              const h = lock.tryAcquire(request.first, request.last);
              const blocked =
                held.some((x) => overlap(x, request)) || requests.some((r) => r.granted === undefined && overlap(r, request));
              expect(h === undefined).toBe(blocked);
              if (h === undefined) continue;
              request.granted = grants++;
              requests.push(request);
              held.push(h);
            } else {
              requests.push(request);
              void lock.acquire(request.first, request.last).then((h) => {
                request.granted = grants++;
                held.push(h);
              });
            }
          }
          await settle();
          check();
        }
        // Release everything, repeatedly, until every request was granted.
        for (let round = 0; round < 200 && requests.some((r) => r.granted === undefined); round++) {
          while (held.length > 0) held.pop()!.release();
          await settle();
          check();
        }
        expect(requests.every((r) => r.granted !== undefined)).toBe(true);
        // Overlapping requests were granted in the order they were made.
        for (let i = 0; i < requests.length; i++) {
          for (let j = i + 1; j < requests.length; j++) {
            if (overlap(requests[i]!, requests[j]!)) expect(requests[i]!.granted!).toBeLessThan(requests[j]!.granted!);
          }
        }
        while (held.length > 0) held.pop()!.release();
        expect(lock.size).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
