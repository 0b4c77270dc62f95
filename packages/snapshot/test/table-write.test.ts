import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodeHeader,
  decodeSnapshotEntry,
  decodeSnapshotTable,
  isQcow2Error,
  MAX_SNAPSHOTS,
  SNAPSHOT_NO_ICOUNT,
  type SnapshotEntry,
} from '@qcow2/format';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeSnapshotTableForWrite, entryForWrite, storedSnapshot, type StoredSnapshot } from '../src/index.js';

function entry(partial: Partial<SnapshotEntry> = {}): SnapshotEntry {
  return {
    l1TableOffset: 0x30000,
    l1Size: 1,
    id: '1',
    name: 'snap',
    dateSec: 1,
    dateNsec: 2,
    vmClockNsec: 3n,
    vmStateSize: 0,
    unknownExtraData: new Uint8Array(0),
    ...partial,
  };
}

/** Reads the table of a file with the raw L1 fields kept, as the engine does. */
function readTable(bytes: Uint8Array): { snapshots: StoredSnapshot[]; offset: number; end: number } {
  const header = decodeHeader(bytes);
  const snapshots: StoredSnapshot[] = [];
  let at = header.snapshotsOffset;
  let end = at;
  for (let i = 0; i < header.nbSnapshots; i++) {
    at = Math.ceil(at / 8) * 8;
    const decoded = decodeSnapshotEntry(bytes, at);
    snapshots.push(storedSnapshot(decoded.entry));
    end = decoded.end;
    at = decoded.end;
  }
  return { snapshots, offset: header.snapshotsOffset, end };
}

describe('the snapshot table as qemu writes it back', () => {
  it('entryForWrite: 24 bytes of known extra data, disk size and icount filled in, 32-bit VM state size 0 when it does not fit', () => {
    const old = entryForWrite(entry({ vmStateSizeLarge: 2 ** 33 }), 4096);
    expect(old).toMatchObject({ vmStateSize: 0, vmStateSizeLarge: 2 ** 33, diskSize: 4096, icount: SNAPSHOT_NO_ICOUNT });
    const small = entryForWrite(entry({ vmStateSize: 77 }), 4096);
    expect(small).toMatchObject({ vmStateSize: 77, vmStateSizeLarge: 77, diskSize: 4096 });
    const unknown = new Uint8Array([1, 2, 3]);
    const withUnknown = entryForWrite(entry({ vmStateSizeLarge: 0, diskSize: 512, icount: 9n, unknownExtraData: unknown }), 4096);
    expect(withUnknown).toMatchObject({ diskSize: 512, icount: 9n, unknownExtraData: unknown });
    // A partial known field (extra_data_size 12) is dropped, as qemu drops it.
    expect(entryForWrite(entry({ vmStateSizeLarge: 0, unknownExtraData: new Uint8Array(4) }), 4096).unknownExtraData.length).toBe(0);
  });

  it('round trip: what is written decodes as the entries qemu would hold, L1 locations kept exactly', () => {
    const arb = fc.record({
      l1OffsetHi: fc.nat({ max: 0xffff_ffff }),
      l1OffsetLo: fc.nat({ max: 0xffff_ffff }),
      l1Size: fc.nat({ max: 0xffff_ffff }),
      id: fc.string({ maxLength: 20 }),
      name: fc.string({ maxLength: 40 }),
      vm: fc.option(fc.nat({ max: 2 ** 40 }), { nil: undefined }),
      disk: fc.option(fc.nat({ max: 2 ** 45 }), { nil: undefined }),
      icount: fc.option(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { nil: undefined }),
      unknown: fc.uint8Array({ maxLength: 100 }),
    });
    fc.assert(
      fc.property(fc.array(arb, { maxLength: 6 }), fc.nat({ max: 2 ** 40 }), (raw, current) => {
        const snapshots: StoredSnapshot[] = raw.map((r) => {
          const e = entry({ id: r.id, name: r.name });
          if (r.vm !== undefined) e.vmStateSizeLarge = r.vm;
          if (r.vm !== undefined && r.disk !== undefined) e.diskSize = r.disk;
          if (r.vm !== undefined && r.disk !== undefined && r.icount !== undefined) {
            e.icount = r.icount;
            e.unknownExtraData = r.unknown;
          }
          return { entry: e, l1OffsetHi: r.l1OffsetHi, l1OffsetLo: r.l1OffsetLo, l1Size: r.l1Size };
        });
        const { bytes, length } = encodeSnapshotTableForWrite(snapshots, current);
        expect(bytes.length).toBe(length);
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        let at = 0;
        for (const sn of snapshots) {
          at = Math.ceil(at / 8) * 8;
          expect([view.getUint32(at), view.getUint32(at + 4), view.getUint32(at + 8)]).toEqual([sn.l1OffsetHi, sn.l1OffsetLo, sn.l1Size]);
          const copy = bytes.slice(at, at + 40 + view.getUint32(at + 36) + view.getUint16(at + 12) + view.getUint16(at + 14));
          copy.fill(0, 0, 12);
          const { entry: back, end } = decodeSnapshotEntry(copy, 0);
          const expected = entryForWrite(sn.entry, current);
          expect(back).toEqual({ ...expected, l1TableOffset: 0, l1Size: 0 });
          expect(view.getUint32(at + 36)).toBeGreaterThanOrEqual(24);
          at += end;
        }
        expect(at).toBe(length);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses more than 65536 snapshots (qemu: EFBIG)', () => {
    const one = storedSnapshot(entry());
    const many = new Array<StoredSnapshot>(MAX_SNAPSHOTS + 1).fill(one);
    const error = (() => {
      try {
        encodeSnapshotTableForWrite(many, 0);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isQcow2Error(error) && error.code).toBe('UNSUPPORTED');
    expect(encodeSnapshotTableForWrite([one, one], 0).length).toBe(Math.ceil((40 + 24 + 1 + 4) / 8) * 8 + 40 + 24 + 1 + 4);
  });
});

describeWithQemu('a table qemu-img wrote, written back byte for byte', () => {
  const { dir, cleanup } = makeTempDir('qcow2-snapshot-table-');
  afterAll(cleanup);

  it('three snapshots (one deleted) with data between them', () => {
    const path = join(dir, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path, '1M']);
    qemuIo(['-c', 'write -P 1 0 8k', path]);
    qemuImg(['snapshot', '-c', 'first', path]);
    qemuImg(['snapshot', '-c', 'a much longer snapshot name', path]);
    qemuImg(['snapshot', '-c', 'third', path]);
    qemuImg(['snapshot', '-d', 'first', path]);
    const bytes = new Uint8Array(readFileSync(path));
    const { snapshots, offset, end } = readTable(bytes);
    expect(snapshots.map((s) => s.entry.id)).toEqual(['2', '3']);
    const { bytes: ours, length } = encodeSnapshotTableForWrite(snapshots, 1 << 20);
    expect(length).toBe(end - offset);
    expect([...ours]).toEqual([...bytes.subarray(offset, end)]);
    expect(decodeSnapshotTable(ours, 2).map((e) => e.name)).toEqual(['a much longer snapshot name', 'third']);
  });
});
