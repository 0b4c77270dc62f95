/**
 * I/O error injection: a write workload (open, write/zero/discard/compressed/read/flush, close)
 * on a storage that fails its Nth read, write, flush, truncate or discard, for every N the
 * workload reaches. The failure must surface as a Qcow2Error with code IO from the call that
 * met it (nothing else, no hang, no unhandled rejection); the file as it stood then (and the
 * same without its unflushed writes) opens and checks as after a power cut; and when the fault
 * was transient, the rest of the workload and close still work, leaving every completed
 * operation's bytes in place.
 */
import { isQcow2Error, Qcow2Error } from '@qcow2/format';
import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { createFaultyStorage, createRecordingStorage, replayStorageLog, type StorageCallKind, type StorageOp } from '@qcow2/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { checkImage, createImage, openImage, type Image } from '../src/index.js';
import {
  checkCrashedFile,
  describeConfig,
  equalBytes,
  freshWorkloadImage,
  isDirty,
  lostBytes,
  Model,
  openOptions,
  runOp,
  workloadOps,
  type Durable,
  type WorkloadConfig,
} from './crash-workload.js';

const KINDS: readonly StorageCallKind[] = ['read', 'write', 'flush', 'truncate', 'discard'];
/** At most this many N per kind and config (evenly spread when the workload makes more calls). */
const MAX_PER_KIND = 120;
const HANG_MS = 10_000;

const base = { version: 3 as const, extendedL2: false, cut: 0, l2Small: false, ops: 40 };
const RUNS: WorkloadConfig[] = [
  { ...base, seed: 201, clusterBits: 12, refcountOrder: 4, lazy: false, backing: 'none', clusters: 32 },
  { ...base, seed: 202, clusterBits: 12, refcountOrder: 4, lazy: true, backing: 'raw', clusters: 32 },
  { ...base, seed: 203, clusterBits: 9, refcountOrder: 0, lazy: false, backing: 'qcow2', clusters: 96, l2Small: true },
  { ...base, seed: 204, clusterBits: 16, refcountOrder: 6, lazy: false, backing: 'none', clusters: 6, ops: 30 },
  { ...base, seed: 205, clusterBits: 14, refcountOrder: 3, lazy: true, backing: 'none', clusters: 16, extendedL2: true },
  { ...base, seed: 206, clusterBits: 12, refcountOrder: 4, lazy: false, backing: 'raw', clusters: 24, version: 2, cut: 2 },
];

/** Snapshot workloads (seeds whose ops create, apply and delete) and the faults tried per kind inside their snapshot operations. */
const SNAPSHOT_RUNS: WorkloadConfig[] = [
  { ...base, seed: 258, clusterBits: 12, refcountOrder: 4, lazy: false, backing: 'none', clusters: 32, snapshots: true },
  { ...base, seed: 255, clusterBits: 9, refcountOrder: 3, lazy: true, backing: 'qcow2', clusters: 96, snapshots: true, l2Small: true },
];
const SNAPSHOT_PER_KIND = 60;

const totals = { snapshotInjected: 0, swallowed: [] as string[], runs: 0, repairInjected: 0, createInjected: 0, injected: 0, surfaced: 0, notReached: 0, crashStates: 0, corruptions: 0, lost: 0, leaks: 0 };
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);

const MARK = 'injected fault';

function injectedError(kind: StorageCallKind, n: number): Qcow2Error {
  return new Qcow2Error('IO', `${MARK}: ${kind} #${n}`);
}

/** `error` is the injected one, or wraps it. */
function fromInjected(error: unknown, injected: unknown): boolean {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    if (e === injected) return true;
    if (typeof e === 'object' && 'message' in e && String(e.message).includes(MARK)) return true;
    e = typeof e === 'object' && 'cause' in e ? e.cause : undefined;
  }
  return false;
}

async function timed<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after ${HANG_MS} ms (hang)`)), HANG_MS);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

interface Outcome {
  problems: string[];
  /** The fault fired (the workload reached the Nth call). */
  fired: boolean;
  /** The fault fired and some call rejected with it (not swallowed). */
  surfaced: boolean;
  calls: Record<StorageCallKind, number>;
  /** Per kind, the call numbers (1-based, [first, last]) each snapshot operation made. */
  snapshotCalls: Record<StorageCallKind, [number, number][]>;
}

/** One workload run with the Nth call of `kind` failing (none when `n` is 0). */
async function runWithFault(
  c: WorkloadConfig,
  fresh: Awaited<ReturnType<typeof freshWorkloadImage>>,
  kind: StorageCallKind,
  n: number,
): Promise<Outcome> {
  const problems: string[] = [];
  const log: StorageOp[] = [];
  const inner = createMemoryStorage({ initial: fresh.image });
  const faulty = createFaultyStorage(createRecordingStorage(inner, log), injectedError);
  if (n > 0) faulty.arm({ kind, n });
  const ops = workloadOps(c);
  const model = new Model(c, fresh.base);
  /** The last completed flush: the model then and the ops since (their guest ranges). */
  /** Snapshots known to exist (created, not deleted, by operations that completed). */
  const live = new Set<string>();
  const snapshotsNow = (): NonNullable<Durable['snapshots']> => ({ contents: model.snapshotContents, mustExist: [...live] });
  let durable: Durable = { model: model.bytes.slice(), since: [], snapshots: snapshotsNow() };
  /** Snapshots whose create or delete failed: they may or may not be there. */
  const uncertain = new Set<string>();
  const snapshotCalls = Object.fromEntries(KINDS.map((k) => [k, [] as [number, number][]])) as Record<StorageCallKind, [number, number][]>;
  /** Guest ranges of ops that failed: their content is unknown. */
  const failedRanges: [number, number][] = [];
  let failure: { at: number; durable: Durable; where: string } | undefined;

  const failed = (error: unknown, where: string): void => {
    if (!isQcow2Error(error) || error.code !== 'IO' || !fromInjected(error, faulty.fired)) {
      problems.push(`${where}: expected the injected fault as Qcow2Error IO, got ${isQcow2Error(error) ? `${error.code} ` : ''}${String(error)}`);
    }
    if (failure === undefined) {
      failure = { at: log.length, durable: { ...durable, since: durable.since.slice() }, where };
    }
    // A transient fault: the rest runs without it.
    faulty.arm(undefined);
  };

  let image: Image | undefined;
  try {
    image = await timed('open', openImage(faulty, openOptions(c, fresh.backing)));
  } catch (error) {
    failed(error, 'open');
  }
  if (image !== undefined) {
    for (const [i, op] of ops.entries()) {
      const ranges = model.touched(op);
      durable.since.push(...ranges);
      const sinceBefore = durable.since.length - ranges.length;
      const callsBefore = { ...faulty.calls };
      try {
        // Reads check the model only where no failed op left unknown bytes.
        const reads = op.kind === 'read' ? [op] : op.kind === 'batch' ? op.ops.filter((o) => o.kind === 'read') : [];
        const trusted = reads.every((r) => failedRanges.every(([a, b]) => r.offset + r.length <= a || r.offset >= b));
        await timed(
          `op ${i} ${op.kind}`,
          runOp(image, op, model, {
            checkReads: trusted,
            onBatchFlush: (before) => {
              durable = { model: before, since: durable.since.slice(sinceBefore) };
            },
          }),
        );
        if (op.kind === 'snapshot') {
          // A snapshot operation flushes everything before and after its own steps.
          if (op.action === 'create') live.add(op.name);
          if (op.action === 'delete') live.delete(op.name);
          uncertain.delete(op.name);
          for (const kind of KINDS) snapshotCalls[kind].push([callsBefore[kind] + 1, faulty.calls[kind]]);
        }
        if (op.kind === 'flush' || op.kind === 'snapshot') durable = { model: model.bytes.slice(), since: [], snapshots: snapshotsNow() };
      } catch (error) {
        if (op.kind === 'snapshot' && uncertain.has(op.name) && isQcow2Error(error) && error.code === 'NOT_FOUND') {
          // An earlier failed create or delete of it left it out: nothing happened.
          continue;
        }
        if (op.kind === 'snapshot') {
          uncertain.add(op.name);
          if (op.action === 'delete') {
            // It may be gone already.
            live.delete(op.name);
            const snaps = durable.snapshots!;
            durable = { ...durable, snapshots: { contents: snaps.contents, mustExist: snaps.mustExist.filter((n) => n !== op.name) } };
          }
        }
        failed(error, `op ${i} ${JSON.stringify(op)}`);
        failedRanges.push(...ranges);
        if (op.kind === 'snapshot' && op.action === 'apply') {
          // The active disk is the snapshot's or the old one: the model follows what the image
          // reads now (snapshots created later must hold that).
          const now = await image.readBytes(0, model.bytes.length).catch(() => undefined);
          if (now !== undefined) model.bytes.set(now);
        }
      }
    }
    try {
      await timed('close', image.close());
    } catch (error) {
      failed(error, 'close');
      // Closing again (the fault is gone) may finish the job or do nothing; never anything but a Qcow2Error.
      await timed('second close', image.close()).catch((e: unknown) => {
        if (!isQcow2Error(e)) problems.push(`second close: ${String(e)}`);
      });
    }
  }

  if (failure !== undefined) {
    // The file as the failure left it (a crash then), and the same without its unflushed writes.
    for (const dropUnflushed of [false, true]) {
      const file = replayStorageLog(fresh.image, log, failure.at, dropUnflushed ? () => false : undefined);
      const after = await checkCrashedFile(file, c, fresh.backing, failure.durable);
      totals.crashStates += 1;
      totals.corruptions += after.corruptions;
      totals.lost += after.lost;
      totals.leaks += after.leaks;
      for (const p of after.problems) problems.push(`${failure.where}, crash ${dropUnflushed ? 'dropping unflushed writes' : 'keeping all writes'}: ${p}`);
    }
  }

  // What the engine left after the rest of the workload and close.
  const left = inner.snapshot();
  const closeFailed = failure?.where === 'close' || failure?.where === 'open';
  const final: Durable = closeFailed && failure !== undefined ? failure.durable : { model: model.bytes, since: failedRanges, snapshots: snapshotsNow() };
  if (failure?.where === 'open') {
    // Nothing ran: the file is as it was, or as a crash during the open's own writes left it.
    if (isDirty(left) && !c.lazy) problems.push('dirty after a failed open');
  }
  const after = await checkCrashedFile(left, c, fresh.backing, final);
  totals.corruptions += after.corruptions;
  totals.lost += after.lost;
  totals.leaks += after.leaks;
  for (const p of after.problems) problems.push(`after the workload and close${failure === undefined ? '' : ` (failed at ${failure.where})`}: ${p}`);
  if (failure === undefined && !closeFailed) {
    const { lost } = lostBytes(after.reopened.length > 0 ? await contentOf(after.reopened, c, fresh.backing) : new Uint8Array(), final);
    if (lost > 0) problems.push(`${lost} bytes differ from the model after a clean run`);
  }
  return { problems, fired: faulty.fired !== undefined, surfaced: failure !== undefined, calls: { ...faulty.calls }, snapshotCalls };
}

async function contentOf(file: Uint8Array, c: WorkloadConfig, backing: Uint8Array | undefined): Promise<Uint8Array> {
  const image = await openImage(createMemoryStorage({ initial: file, readOnly: true }), openOptions(c, backing, true));
  try {
    return await image.readBytes(0, image.virtualSize);
  } finally {
    await image.close();
  }
}

/** N from 1 to `count`, all of them or `max` spread evenly (both ends included). */
function sample(count: number, max: number): number[] {
  if (count <= max) return Array.from({ length: count }, (_, i) => i + 1);
  return [...new Set(Array.from({ length: max }, (_, i) => 1 + Math.round((i * (count - 1)) / (max - 1))))];
}

describe('I/O errors at every storage call of a write workload surface as Qcow2Error IO and leave the image as a crash would', () => {
  afterAll(() => {
    process.off('unhandledRejection', onUnhandled);
    console.log(
      `io-error totals: ${totals.runs} runs, ${totals.injected} injected failures in workloads (${totals.snapshotInjected} in snapshot workloads), ${totals.repairInjected} in repairs, ${totals.createInjected} in createImage (${totals.surfaced} surfaced as Qcow2Error IO, ${totals.swallowed.length} absorbed by the engine: ${totals.swallowed.slice(0, 5).join('; ')}), ` +
        `${totals.crashStates} crash states checked; corruptions found ${totals.corruptions}, flushed bytes lost ${totals.lost}, ` +
        `leaked clusters ${totals.leaks}; unhandled rejections ${unhandled.length}`,
    );
  });

  for (const c of RUNS) {
    it(`${describeConfig(c)}: every read, write, flush, truncate and discard call failing in turn (up to ${MAX_PER_KIND} each)`, async () => {
      const fresh = await freshWorkloadImage(c);
      const clean = await runWithFault(c, fresh, 'read', 0);
      expect(clean.problems, 'the workload without a fault').toEqual([]);
      const problems: string[] = [];
      const tried: Record<string, number> = {};
      for (const kind of KINDS) {
        const ns = sample(clean.calls[kind], MAX_PER_KIND);
        tried[kind] = ns.length;
        for (const n of ns) {
          const out = await runWithFault(c, fresh, kind, n);
          totals.injected += 1;
          if (out.surfaced) totals.surfaced += 1;
          else if (out.fired) totals.swallowed.push(`${describeConfig(c)}: ${kind} #${n}`);
          else problems.push(`${kind} #${n}: the fault never fired (the workload made ${out.calls[kind]} ${kind} calls, ${clean.calls[kind]} without faults)`);
          for (const p of out.problems) problems.push(`${kind} #${n}: ${p}`);
        }
      }
      totals.runs += 1;
      console.log(`io-error, ${describeConfig(c)}: calls ${JSON.stringify(clean.calls)}, failures tried ${JSON.stringify(tried)}, ${problems.length} problems`);
      expect(problems.slice(0, 12)).toEqual([]);
      expect(unhandled.map(String)).toEqual([]);
    });
  }

  // Snapshot create/apply/delete among the writes: every call each snapshot operation makes fails
  // in turn (up to SNAPSHOT_PER_KIND per kind), and a sparse sample of the rest.
  for (const c of SNAPSHOT_RUNS) {
    it(`${describeConfig(c)}: every read, write and flush of each snapshot create/apply/delete failing in turn`, async () => {
      const fresh = await freshWorkloadImage(c);
      const clean = await runWithFault(c, fresh, 'read', 0);
      expect(clean.problems, 'the workload without a fault').toEqual([]);
      const actions = new Set(workloadOps(c).flatMap((op) => (op.kind === 'snapshot' ? [op.action] : [])));
      expect([...actions].sort(), 'the workload creates, applies and deletes').toEqual(['apply', 'create', 'delete']);
      const problems: string[] = [];
      const tried: Record<string, number> = {};
      for (const kind of KINDS) {
        const inside = clean.snapshotCalls[kind].flatMap(([a, b]) => Array.from({ length: Math.max(0, b - a + 1) }, (_, i) => a + i));
        const ns = [...new Set([...sample(inside.length, SNAPSHOT_PER_KIND).map((i) => inside[i - 1]!), ...sample(clean.calls[kind], 8)])].sort((a, b) => a - b);
        if (kind !== 'truncate' && kind !== 'discard') expect(inside.length, `${kind} calls inside snapshot operations`).toBeGreaterThan(0);
        tried[kind] = ns.length;
        for (const n of ns) {
          const out = await runWithFault(c, fresh, kind, n);
          totals.injected += 1;
          totals.snapshotInjected += 1;
          if (out.surfaced) totals.surfaced += 1;
          else if (out.fired) totals.swallowed.push(`${describeConfig(c)}: ${kind} #${n}`);
          else problems.push(`${kind} #${n}: the fault never fired`);
          for (const p of out.problems) problems.push(`${kind} #${n}: ${p}`);
        }
      }
      totals.runs += 1;
      console.log(`io-error, ${describeConfig(c)}: calls ${JSON.stringify(clean.calls)}, failures tried ${JSON.stringify(tried)}, ${problems.length} problems`);
      expect(problems.slice(0, 12)).toEqual([]);
      expect(unhandled.map(String)).toEqual([]);
    });
  }

  it('regression: a flush failing right after the header switch of a create, or after the applied active L1 write, leaves no reference above its refcount', async () => {
    const c: WorkloadConfig = { ...base, seed: 1, clusterBits: 12, refcountOrder: 4, lazy: false, backing: 'none', clusters: 16 };
    for (const action of ['create', 'apply'] as const) {
      const fresh = await freshWorkloadImage(c);
      const data = new Uint8Array(3 * 4096).fill(0x5a);
      /** Runs the steps; the flush after the write that `target` picks fails when `failFlush` is set. */
      const run = async (failFlush: number): Promise<{ file: Uint8Array; flushAfter: number; error: unknown }> => {
        const inner = createMemoryStorage({ initial: fresh.image });
        const faulty = createFaultyStorage(inner, injectedError);
        const l1 = Number(new DataView(fresh.image.buffer, fresh.image.byteOffset).getBigUint64(40));
        let watching = false;
        let flushAfter = 0;
        // The flush call (1-based, as the faulty storage counts) after the header write of the
        // new snapshot table (create) or the write of the whole active L1 table (apply).
        const top: Storage = {
          readOnly: false,
          canDiscard: faulty.canDiscard,
          read: (dst, offset) => faulty.read(dst, offset),
          write: (src, offset) => {
            if (watching && flushAfter === 0 && (action === 'create' ? offset === 60 : offset === l1 && src.length >= 8)) flushAfter = faulty.calls.flush + 1;
            return faulty.write(src, offset);
          },
          size: () => faulty.size(),
          truncate: (size) => faulty.truncate(size),
          flush: () => faulty.flush(),
          close: () => faulty.close(),
          discard: (offset, length) => faulty.discard!(offset, length),
        };
        const image = await openImage(top, openOptions(c, fresh.backing));
        await image.write(data, 0);
        if (action === 'apply') {
          await image.createSnapshot('s', { dateSec: 1, dateNsec: 0 });
          await image.write(new Uint8Array(4096).fill(0x77), 4096);
          await image.flush();
        }
        if (failFlush > 0) faulty.arm({ kind: 'flush', n: failFlush });
        watching = true;
        let error: unknown;
        try {
          if (action === 'create') await image.createSnapshot('s', { dateSec: 1, dateNsec: 0 });
          else await image.applySnapshot('s');
        } catch (e) {
          error = e;
        }
        faulty.arm(undefined);
        await image.close().catch(() => undefined);
        return { file: inner.snapshot(), flushAfter, error };
      };
      const dry = await run(0);
      expect(dry.error).toBeUndefined();
      const hurt = await run(dry.flushAfter);
      expect(isQcow2Error(hurt.error) && hurt.error.code === 'IO' && fromInjected(hurt.error, undefined), `${action}: ${String(hurt.error)}`).toBe(true);
      expect(String(hurt.error)).toContain(action === 'create' ? 'header nb_snapshots and snapshots_offset: flush' : 'active L1 table: flush');
      const r = await checkImage(createMemoryStorage({ initial: hurt.file, readOnly: true }));
      expect({ action, corruptions: r.corruptions, checkErrors: r.checkErrors }).toEqual({ action, corruptions: 0, checkErrors: 0 });
      // The guest data and the snapshot read back.
      const image = await openImage(createMemoryStorage({ initial: hurt.file, readOnly: true }), openOptions(c, fresh.backing, true));
      expect(image.snapshots.map((x) => x.name)).toEqual(['s']);
      const snap = await image.openSnapshot('s');
      expect(equalBytes(await snap.readBytes(0, data.length), data)).toBe(true);
      await snap.close();
      await image.close();
    }
  });

  /**
   * A file to repair and the guest content it holds: a lazy-refcounts workload left open
   * (flushed, so everything is durable but the refcounts, and the dirty bit set), or a
   * workload cut before a storage flush (leaked clusters, clean bit).
   */
  async function damaged(c: WorkloadConfig, how: 'dirty' | 'leaks'): Promise<{ file: Uint8Array; content: Uint8Array; backing: Uint8Array | undefined }> {
    const fresh = await freshWorkloadImage(c);
    const log: StorageOp[] = [];
    const inner = createMemoryStorage({ initial: fresh.image });
    const image = await openImage(createRecordingStorage(inner, log), openOptions(c, fresh.backing));
    const model = new Model(c, fresh.base);
    for (const op of workloadOps(c)) await runOp(image, op, model);
    await image.flush();
    let file = inner.snapshot();
    if (how === 'leaks') {
      // A cut before a storage flush late in the log, keeping all writes before it, that leaks.
      const flushes = log.flatMap((e, i) => (e.kind === 'flush' ? [i] : [])).reverse();
      for (const at of flushes) {
        const cut = replayStorageLog(fresh.image, log, at);
        const r = await checkImage(createMemoryStorage({ initial: cut, readOnly: true }));
        if (r.leaks > 0 && r.corruptions === 0) {
          file = cut;
          break;
        }
      }
    }
    const content = await contentOf(file, c, fresh.backing).catch(async () => {
      // A dirty file opens read-only as it is.
      return contentOf(file, c, fresh.backing);
    });
    return { file, content, backing: fresh.backing };
  }

  const lazyConfig: WorkloadConfig = { ...base, seed: 211, clusterBits: 12, refcountOrder: 4, lazy: true, backing: 'none', clusters: 32, ops: 60 };
  const leakyConfig: WorkloadConfig = { ...base, seed: 212, clusterBits: 12, refcountOrder: 4, lazy: false, backing: 'none', clusters: 32, ops: 60 };

  it(`the open's repair of a dirty lazy-refcounts image (${describeConfig(lazyConfig)}), every call failing in turn, then check -r leaks and -r all of a leaky one (${describeConfig(leakyConfig)})`, async () => {
    const problems: string[] = [];
    const cases: { what: string; c: WorkloadConfig; how: 'dirty' | 'leaks'; run: (s: ReturnType<typeof createFaultyStorage>, backing: Uint8Array | undefined) => Promise<void> }[] = [
      {
        what: 'open repairing a dirty image, then close',
        c: lazyConfig,
        how: 'dirty',
        run: async (s, backing) => {
          const image = await openImage(s, openOptions(lazyConfig, backing));
          await image.close();
        },
      },
      ...(['leaks', 'all'] as const).map((repair) => ({
        what: `check -r ${repair}`,
        c: leakyConfig,
        how: 'leaks' as const,
        run: async (s: ReturnType<typeof createFaultyStorage>) => {
          const r = await checkImage(s, { repair });
          // A check that could not complete says so (qemu-img: "Check failed"); the fault is the reason.
          if (r.failure !== undefined) throw new Qcow2Error('IO', `${MARK}: check failed: ${r.failure}`);
        },
      })),
    ];
    for (const k of cases) {
      const d = await damaged(k.c, k.how);
      expect(isDirty(d.file), `${k.what}: the file to repair is dirty`).toBe(k.how === 'dirty');
      if (k.how === 'leaks') expect((await checkImage(createMemoryStorage({ initial: d.file, readOnly: true }))).leaks, `${k.what}: leaks to repair`).toBeGreaterThan(0);
      const dry = createFaultyStorage(createMemoryStorage({ initial: d.file }), injectedError);
      await k.run(dry, d.backing);
      for (const kind of KINDS) {
        for (const n of sample(dry.calls[kind], MAX_PER_KIND)) {
          const log: StorageOp[] = [];
          const inner = createMemoryStorage({ initial: d.file });
          const faulty = createFaultyStorage(createRecordingStorage(inner, log), injectedError);
          faulty.arm({ kind, n });
          totals.repairInjected += 1;
          let at = -1;
          try {
            await timed(k.what, k.run(faulty, d.backing));
          } catch (error) {
            at = log.length;
            if (!isQcow2Error(error) || error.code !== 'IO' || !fromInjected(error, faulty.fired)) {
              problems.push(`${k.what}, ${kind} #${n}: expected the injected fault as Qcow2Error IO, got ${String(error)}`);
            }
          }
          if (faulty.fired === undefined) problems.push(`${k.what}, ${kind} #${n}: the fault never fired`);
          const states = at < 0 ? [inner.snapshot()] : [replayStorageLog(d.file, log, at), replayStorageLog(d.file, log, at, () => false)];
          for (const file of states) {
            // A repair never loses guest data, whenever it stops.
            const after = await checkCrashedFile(file, k.c, d.backing, { model: d.content, since: [] });
            totals.crashStates += 1;
            totals.corruptions += after.corruptions;
            totals.lost += after.lost;
            for (const p of after.problems) problems.push(`${k.what}, ${kind} #${n}${at < 0 ? ' (not surfaced)' : ''}: ${p}`);
          }
        }
      }
    }
    expect(problems.slice(0, 12)).toEqual([]);
  });

  it('createImage with every call failing in turn rejects only with the injected Qcow2Error IO', async () => {
    const problems: string[] = [];
    const options = [
      { size: 1 << 20, clusterSize: 4096 },
      { size: 1 << 22, clusterSize: 512, refcountBits: 64, preallocation: 'metadata' as const },
      { size: 1 << 20, clusterSize: 65536, lazyRefcounts: true, extendedL2: true, preallocation: 'full' as const },
    ];
    for (const o of options) {
      const dry = createFaultyStorage(createMemoryStorage(), injectedError);
      await createImage(dry, o);
      for (const kind of KINDS) {
        for (const n of sample(dry.calls[kind], 40)) {
          const faulty = createFaultyStorage(createMemoryStorage(), injectedError);
          faulty.arm({ kind, n });
          totals.createInjected += 1;
          try {
            await timed('createImage', createImage(faulty, o));
            problems.push(`${JSON.stringify(o)}, ${kind} #${n}: created despite the fault`);
          } catch (error) {
            if (!isQcow2Error(error) || error.code !== 'IO' || !fromInjected(error, faulty.fired)) {
              problems.push(`${JSON.stringify(o)}, ${kind} #${n}: expected the injected fault as Qcow2Error IO, got ${String(error)}`);
            }
          }
        }
      }
    }
    expect(problems.slice(0, 12)).toEqual([]);
    expect(totals.createInjected).toBeGreaterThan(20);
  });
});
