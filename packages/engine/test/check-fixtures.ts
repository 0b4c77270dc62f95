import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuImg, qemuIo } from '@qcow2/test-utils';
import { checkImage, type CheckResult } from '../src/index.js';
import { decodeHeader } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';

/** `qemu-img check ARGS FILE` as qemu prints it. */
export function qemuImgCheck(file: string, args: readonly string[] = []): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-img', ['check', ...args, file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** What qemu-img check prints on stderr for a result of ours (before its own "Check failed" line). */
export function stderrOf(result: CheckResult): string {
  return result.messages.map((m) => `${m.report ? 'qemu-img: ' : ''}${m.text}\n`).join('');
}

/** The counters of qemu-img check --output=json, absent ones as 0. */
export function countsOf(json: Record<string, unknown>): Record<string, number> {
  const n = (key: string): number => (typeof json[key] === 'number' ? (json[key] as number) : 0);
  return {
    checkErrors: n('check-errors'),
    corruptions: n('corruptions'),
    leaks: n('leaks'),
    corruptionsFixed: n('corruptions-fixed'),
    leaksFixed: n('leaks-fixed'),
    imageEndOffset: n('image-end-offset'),
    totalClusters: n('total-clusters'),
    allocatedClusters: n('allocated-clusters'),
    fragmentedClusters: n('fragmented-clusters'),
    compressedClusters: n('compressed-clusters'),
  };
}

export function ourCounts(r: CheckResult): Record<string, number> {
  const { checkErrors, corruptions, leaks, corruptionsFixed, leaksFixed, imageEndOffset, totalClusters, allocatedClusters, fragmentedClusters, compressedClusters } = r;
  return { checkErrors, corruptions, leaks, corruptionsFixed, leaksFixed, imageEndOffset, totalClusters, allocatedClusters, fragmentedClusters, compressedClusters };
}

/** qemu-img check's exit status for a result of ours. */
export function exitOf(r: CheckResult): number {
  if (r.failure !== undefined || r.checkErrors > 0) return 1;
  if (r.corruptions > 0) return 2;
  return r.leaks > 0 ? 3 : 0;
}

/** Checks `bytes` with our checkImage on a memory storage. */
export async function checkBytes(bytes: Uint8Array, repair: 'none' | 'leaks' | 'all' = 'none'): Promise<{ result: CheckResult; after: Uint8Array }> {
  const storage = createMemoryStorage({ initial: bytes, readOnly: repair === 'none', maxSize: bytes.length * 4 + (64 << 20) });
  const result = await checkImage(storage, { repair });
  return { result, after: storage.snapshot() };
}

/** A small image with two snapshots, a compressed cluster and zero clusters. */
export function makeSnapshotImage(dir: string, options: string[] = [], name = 'fuzz.qcow2'): Uint8Array {
  const file = join(dir, name);
  qemuImg(['create', '-q', '-f', 'qcow2', ...(options.length > 0 ? ['-o', options.join(',')] : []), file, '8M']);
  qemuIo(['-c', 'write -P 1 0 192k', '-c', 'write -c -P 2 1M 64k', '-c', 'write -z 2M 64k', file]);
  qemuImg(['snapshot', '-c', 's1', file]);
  qemuIo(['-c', 'write -P 3 64k 64k', '-c', 'write -P 4 4M 4k', file]);
  qemuImg(['snapshot', '-c', 's2', file]);
  return new Uint8Array(readFileSync(file));
}

export function writeBytes(file: string, bytes: Uint8Array): string {
  writeFileSync(file, bytes);
  return file;
}

/**
 * The clusters of `bytes` that hold metadata: the header, active and snapshot L1 tables and the
 * L2 tables they point to, the snapshot table, the refcount table and blocks.
 */
export function metadataClusters(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = decodeHeader(bytes.subarray(0, 512));
  const cs = 2 ** h.clusterBits;
  const found = new Set<number>([0]);
  const add = (offset: number, length: number): void => {
    for (let c = Math.floor(offset / cs); c * cs < offset + length && c * cs < bytes.length; c++) found.add(c);
  };
  const l1s: [number, number][] = [[h.l1TableOffset, h.l1Size]];
  let at = h.snapshotsOffset;
  for (let i = 0; i < h.nbSnapshots; i++) {
    at = Math.ceil(at / 8) * 8;
    l1s.push([Number(view.getBigUint64(at)), view.getUint32(at + 8)]);
    at += 40 + view.getUint32(at + 36) + view.getUint16(at + 12) + view.getUint16(at + 14);
  }
  if (h.nbSnapshots > 0) add(h.snapshotsOffset, at - h.snapshotsOffset);
  for (const [offset, size] of l1s) {
    add(offset, size * 8);
    for (let i = 0; i < size; i++) {
      const l2 = Number(view.getBigUint64(offset + i * 8) & 0x00ff_ffff_ffff_fe00n);
      if (l2 !== 0) add(l2, cs);
    }
  }
  add(h.refcountTableOffset, h.refcountTableClusters * cs);
  for (let i = 0; i < (h.refcountTableClusters * cs) / 8; i++) {
    const block = Number(view.getBigUint64(h.refcountTableOffset + i * 8) & ~0x1ffn);
    if (block !== 0) add(block, cs);
  }
  return [...found].sort((a, b) => a - b);
}

/** A byte change: set `value` at `at`, or flip bit `value % 8`. */
export interface Mutation {
  readonly cluster: number;
  readonly at: number;
  readonly value: number;
  readonly flip: boolean;
}

/** `bytes` with the mutations applied (offsets inside cluster `cluster`; half land in its first 256 bytes, where headers and first entries are). */
export function mutate(bytes: Uint8Array, clusterSize: number, mutations: readonly Mutation[]): Uint8Array {
  const out = bytes.slice();
  for (const m of mutations) {
    const within = m.at % 512 < 256 ? m.at % 256 : m.at % clusterSize;
    const offset = m.cluster * clusterSize + within;
    if (offset >= out.length) continue;
    out[offset] = m.flip ? out[offset]! ^ (1 << (m.value % 8)) : m.value & 0xff;
  }
  return out;
}
