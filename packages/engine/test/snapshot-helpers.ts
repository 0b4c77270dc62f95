/** Shared by the snapshot differential tests against qemu-img. */
import { readFileSync } from 'node:fs';
import { createNodeStorage } from '@qcow2/storage-node';
import { decodeHeader, decodeSnapshotTable } from '@qcow2/format';
import { qemuCheck, qemuInfo } from '@qcow2/test-utils';
import { expect } from 'vitest';
import { openImage, type Image } from '../src/index.js';
import { firstDifference } from './helpers.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export async function openRw(path: string): Promise<Image> {
  const storage = await createNodeStorage(path, { readOnly: false });
  const image = await openImage(storage, { readOnly: false, name: path });
  const close = image.close.bind(image);
  Object.defineProperty(image, 'close', {
    value: async () => {
      try {
        await close();
      } finally {
        await storage.close();
      }
    },
  });
  return image;
}

/** qemu-img check finds nothing wrong (no corruption, no leak). */
export function expectClean(path: string): void {
  const { exitCode, json } = qemuCheck(path);
  expect(json['corruptions'] ?? 0, JSON.stringify(json)).toBe(0);
  expect(json['leaks'] ?? 0, JSON.stringify(json)).toBe(0);
  expect(exitCode, JSON.stringify(json)).toBe(0);
}

/** The snapshots as qemu-img info reports them, in our SnapshotInfo terms. */
export function qemuSnapshots(path: string): { id: string; name: string; vmStateSize: number; dateSec: number; dateNsec: number; vmClockNsec: number; icount?: number }[] {
  const info = qemuInfo(path);
  const list = (info['snapshots'] ?? []) as Record<string, number | string>[];
  return list.map((s) => ({
    id: String(s['id']),
    name: String(s['name']),
    vmStateSize: Number(s['vm-state-size']),
    dateSec: Number(s['date-sec']),
    dateNsec: Number(s['date-nsec']),
    vmClockNsec: Number(s['vm-clock-sec']) * 1e9 + Number(s['vm-clock-nsec']),
    ...(s['icount'] === undefined ? {} : { icount: Number(s['icount']) }),
  }));
}

/** The disk sizes stored in the file's snapshot table (qemu-img shows them nowhere). */
export function storedDiskSizes(path: string): (number | undefined)[] {
  const bytes = new Uint8Array(readFileSync(path));
  const header = decodeHeader(bytes);
  const table = decodeSnapshotTable(bytes.subarray(header.snapshotsOffset), header.nbSnapshots);
  return table.map((e) => e.diskSize);
}

/** Equal bytes (a mismatch names its first offset: a diff of megabytes would take ages to print). */
export function expectBytes(actual: Uint8Array, expected: Uint8Array | undefined): void {
  expect(actual.length).toBe(expected!.length);
  expect(firstDifference(actual, expected!)).toBe(-1);
}

export function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}


export interface Layout {
  name: string;
  options: string;
  size: number;
}

