import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  compressedAdditionalSectorsFor,
  compressedByteLength,
  compressedHostOffset,
  decodeHeader,
  encodeHeader,
  INCOMPAT_COMPRESSION,
  l1L2OffsetAt,
  L2_COMPRESSED,
  l2EntryType,
  viewOf,
} from '@qcow2/format';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { getCodec, jsZlibCodec, jsZstdCodec } from '../src/index.js';
import type { ClusterCodec } from '../src/index.js';
import { nodeZlibCodec } from '../src/node.js';
import { equalBytes, makeCluster, PATTERNS } from './data.js';

const decoders: Record<'zlib' | 'zstd', ClusterCodec[]> = {
  zlib: [jsZlibCodec, nodeZlibCodec],
  zstd: [jsZstdCodec],
};

/** Every compressed cluster of a qcow2 file: guest offset and the sector-rounded bytes qemu reads. */
function compressedClusters(file: Uint8Array): { clusterSize: number; type: number; clusters: { guest: number; bytes: Uint8Array }[] } {
  const header = decodeHeader(file.subarray(0, 4096));
  const bits = header.clusterBits;
  const clusterSize = 2 ** bits;
  const perL2 = clusterSize / 8;
  const l1 = viewOf(file.subarray(header.l1TableOffset, header.l1TableOffset + header.l1Size * 8));
  const clusters: { guest: number; bytes: Uint8Array }[] = [];
  for (let i = 0; i < header.l1Size; i++) {
    const l2Offset = l1L2OffsetAt(l1, i);
    if (l2Offset === 0) continue;
    const l2 = viewOf(file.subarray(l2Offset, l2Offset + clusterSize));
    for (let j = 0; j < perL2; j++) {
      const hi = l2.getUint32(j * 8);
      const lo = l2.getUint32(j * 8 + 4);
      if (l2EntryType(hi, lo, false) !== L2_COMPRESSED) continue;
      const offset = compressedHostOffset(hi, lo, bits);
      const length = compressedByteLength(hi, lo, bits);
      clusters.push({ guest: (i * perL2 + j) * clusterSize, bytes: file.subarray(offset, offset + length) });
    }
  }
  return { clusterSize, type: header.compressionType, clusters };
}

/** A guest disk whose 64 KiB regions cycle through the test patterns. */
function makeDisk(size: number): Uint8Array {
  const disk = new Uint8Array(size);
  for (let at = 0, k = 0; at < size; at += 65536, k++) {
    disk.set(makeCluster(Math.min(65536, size - at), PATTERNS[k % PATTERNS.length]!, 1000 + k), at);
  }
  return disk;
}

let tmp: { dir: string; cleanup: () => void };
beforeAll(() => {
  tmp = makeTempDir('qcow2-compress-');
});
afterAll(() => tmp.cleanup());

describeWithQemu('clusters compressed by qemu decode to the source data', () => {
  const disk = makeDisk(4 << 20);
  for (const type of ['zlib', 'zstd'] as const) {
    for (const clusterSize of [512, 4096, 65536, 2 << 20]) {
      test(`qemu-img convert -c, ${type}, ${clusterSize}-byte clusters`, () => {
        const raw = join(tmp.dir, `disk-${type}-${clusterSize}.raw`);
        const img = join(tmp.dir, `disk-${type}-${clusterSize}.qcow2`);
        writeFileSync(raw, disk);
        qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${clusterSize},compression_type=${type}`, raw, img]);
        const found = compressedClusters(readFileSync(img));
        expect(found.type).toBe(type === 'zlib' ? 0 : 1);
        expect(found.clusters.length).toBeGreaterThan(clusterSize === 2 << 20 ? 0 : 8);
        for (const decoder of decoders[type]) {
          for (const { guest, bytes } of found.clusters) {
            const dst = new Uint8Array(clusterSize);
            decoder.decompress(bytes, dst);
            expect(equalBytes(dst, disk.subarray(guest, guest + clusterSize)), `${decoder.implementation} guest ${guest}`).toBe(true);
          }
        }
      });
    }
    test(`qemu-io write -c, ${type}`, () => {
      const img = join(tmp.dir, `io-${type}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=65536,compression_type=${type}`, img, '1M']);
      qemuIo(['-c', 'write -c -P 0x5a 0 64k', '-c', 'write -c -P 0xa5 128k 64k', img]);
      const found = compressedClusters(readFileSync(img));
      expect(found.clusters.map((c) => c.guest)).toEqual([0, 131072]);
      for (const decoder of decoders[type]) {
        for (const { guest, bytes } of found.clusters) {
          const dst = new Uint8Array(65536);
          decoder.decompress(bytes, dst);
          expect(dst.every((b) => b === (guest === 0 ? 0x5a : 0xa5))).toBe(true);
        }
      }
    });
  }
});

/**
 * A minimal qcow2 v3 image whose data clusters are `compressed` (or stored plainly when null):
 * header, refcount table, one refcount block, L1, one L2, then the compressed streams packed
 * byte by byte as qemu packs them.
 */
function buildImage(clusterBits: number, type: 0 | 1, data: Uint8Array[], compressed: (Uint8Array | null)[]): Uint8Array {
  const C = 2 ** clusterBits;
  const refcounts = new Map<number, number>();
  const ref = (hostCluster: number): void => {
    refcounts.set(hostCluster, (refcounts.get(hostCluster) ?? 0) + 1);
  };
  for (let k = 0; k < 5; k++) ref(k);
  const l2 = new Uint8Array(C);
  const l2View = viewOf(l2);
  const chunks: { at: number; bytes: Uint8Array }[] = [];
  let cursor = 5 * C;
  compressed.forEach((stream, i) => {
    if (stream === null) {
      cursor = Math.ceil(cursor / C) * C;
      chunks.push({ at: cursor, bytes: data[i]! });
      ref(cursor / C);
      l2View.setUint32(i * 8, 0x8000_0000 + Math.floor(cursor / 2 ** 32)); // COPIED
      l2View.setUint32(i * 8 + 4, cursor >>> 0);
      cursor += C;
      return;
    }
    const sectors = compressedAdditionalSectorsFor(cursor, stream.length);
    const shift = 70 - clusterBits; // bit x of the sector count
    const hi = 0x4000_0000 + sectors * 2 ** (shift - 32) + Math.floor(cursor / 2 ** 32);
    l2View.setUint32(i * 8, hi);
    l2View.setUint32(i * 8 + 4, cursor >>> 0);
    chunks.push({ at: cursor, bytes: stream });
    const length = compressedByteLength(hi, cursor >>> 0, clusterBits);
    for (let h = Math.floor(cursor / C); h <= Math.floor((cursor + length - 1) / C); h++) ref(h);
    cursor += stream.length;
  });
  const hostClusters = Math.max(...refcounts.keys()) + 1;
  const file = new Uint8Array(hostClusters * C);
  const header = encodeHeader({
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits,
    size: data.length * C,
    cryptMethod: 0,
    l1Size: 1,
    l1TableOffset: 3 * C,
    refcountTableOffset: C,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: type === 1 ? INCOMPAT_COMPRESSION : 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 112,
    compressionType: type,
    trailingBytes: new Uint8Array(7),
  });
  file.set(header, 0);
  const view = viewOf(file);
  view.setUint32(C + 4, 2 * C); // refcount table entry 0 → refcount block
  for (const [h, n] of refcounts) view.setUint16(2 * C + h * 2, n);
  view.setUint32(3 * C, 0x8000_0000); // L1 entry 0 → L2, COPIED
  view.setUint32(3 * C + 4, 4 * C);
  file.set(l2, 4 * C);
  for (const { at, bytes } of chunks) file.set(bytes, at);
  return file;
}

describeWithQemu('clusters we compress are read back by qemu', () => {
  const encoders: { codec: ClusterCodec; type: 0 | 1 }[] = [
    { codec: jsZlibCodec, type: 0 },
    { codec: nodeZlibCodec, type: 0 },
    { codec: jsZstdCodec, type: 1 },
  ];
  for (const { codec, type } of encoders) {
    for (const clusterBits of [9, 12, 16, 21]) {
      test(`${codec.type} (${codec.implementation}), ${2 ** clusterBits}-byte clusters: qemu-img check and compare`, async () => {
        const C = 2 ** clusterBits;
        const count = clusterBits === 21 ? 3 : 12;
        const data = Array.from({ length: count }, (_, i) => makeCluster(C, PATTERNS[i % PATTERNS.length]!, 50 + i));
        const compressed = await Promise.all(data.map((d) => codec.compress(d)));
        expect(compressed.filter((c) => c !== null).length).toBeGreaterThan(count / 2);
        const img = join(tmp.dir, `ours-${codec.implementation.replace(':', '-')}-${codec.type}-${C}.qcow2`);
        const raw = join(tmp.dir, `ours-${codec.implementation.replace(':', '-')}-${codec.type}-${C}.raw`);
        const file = buildImage(clusterBits, type, data, compressed);
        writeFileSync(img, file);
        const guest = new Uint8Array(count * C);
        data.forEach((d, i) => guest.set(d, i * C));
        writeFileSync(raw, guest);
        const check = qemuCheck(img);
        expect(check.json, JSON.stringify(check.json)).toMatchObject({ 'check-errors': 0 });
        expect(check.json['corruptions'] ?? 0).toBe(0);
        expect(check.json['leaks'] ?? 0).toBe(0);
        expect(check.exitCode).toBe(0);
        expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', img, raw])).toMatch(/Images are identical/);
        // And our own reader agrees with what we wrote.
        const found = compressedClusters(file);
        for (const { guest: at, bytes } of found.clusters) {
          const dst = new Uint8Array(C);
          getCodec(type).decompress(bytes, dst);
          expect(equalBytes(dst, guest.subarray(at, at + C))).toBe(true);
        }
      });
    }
  }
});
