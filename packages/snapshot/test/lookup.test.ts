import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { findSnapshotByIdAndName, findSnapshotByIdOrName, findSnapshotByName, nextSnapshotId, strtoul } from '../src/index.js';

const list = [
  { id: '1', name: 'x' },
  { id: '2', name: '1' },
  { id: '3', name: 'y' },
  { id: '4', name: 'y' },
];

describe('snapshot lookups as qemu', () => {
  it('find_snapshot_by_id_or_name: id first, then name (apply, convert -l)', () => {
    expect(findSnapshotByIdOrName(list, '1')).toBe(0);
    expect(findSnapshotByIdOrName(list, 'y')).toBe(2);
    expect(findSnapshotByIdOrName(list, '4')).toBe(3);
    expect(findSnapshotByIdOrName(list, 'z')).toBe(-1);
  });

  it("qemu 7.2's bdrv_snapshot_find: by name only (qemu-img snapshot -d)", () => {
    expect(findSnapshotByName(list, '1')).toBe(1);
    expect(findSnapshotByName(list, '3')).toBe(-1);
    expect(findSnapshotByName(list, 'y')).toBe(2);
  });

  it('find_snapshot_by_id_and_name: both must match', () => {
    expect(findSnapshotByIdAndName(list, '4', 'y')).toBe(3);
    expect(findSnapshotByIdAndName(list, '1', 'y')).toBe(-1);
    expect(findSnapshotByIdAndName(list, undefined, undefined)).toBe(-1);
  });
});

describe('snapshot ids as qemu allocates them (strtoul of each id, highest + 1)', () => {
  it('strtoul', () => {
    expect(strtoul('12abc')).toBe(12n);
    expect(strtoul(' \t7')).toBe(7n);
    expect(strtoul('+5')).toBe(5n);
    expect(strtoul('abc')).toBe(0n);
    expect(strtoul('')).toBe(0n);
    expect(strtoul('-1')).toBe(2n ** 64n - 1n);
    expect(strtoul('99999999999999999999999')).toBe(2n ** 64n - 1n);
  });

  it('nextSnapshotId', () => {
    expect(nextSnapshotId([])).toBe('1');
    expect(nextSnapshotId([{ id: '1', name: 'a' }, { id: '7', name: 'b' }, { id: '3', name: 'c' }])).toBe('8');
    expect(nextSnapshotId([{ id: 'vm-1', name: 'a' }])).toBe('1');
    // 2^64 - 1 + 1 wraps to 0 as C's unsigned long does.
    expect(nextSnapshotId([{ id: '-1', name: 'a' }])).toBe('0');
  });

  it('decimal ids: one above the highest, never one in use', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat({ max: 10_000 }), { maxLength: 20 }), (ids) => {
        const snapshots = ids.map((n) => ({ id: String(n), name: `s${n}` }));
        const next = nextSnapshotId(snapshots);
        expect(Number(next)).toBe(Math.max(0, ...ids) + 1);
        expect(findSnapshotByIdAndName(snapshots, next, undefined)).toBe(-1);
      }),
    );
  });
});
