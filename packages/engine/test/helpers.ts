import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { qemuImg } from '@qcow2/test-utils';
import { openImage, type Extent, type Image, type OpenOptions } from '../src/index.js';

/** Opens a file with the engine, backing files through the Node resolver (relative to the image). */
export async function openFile(path: string, options: OpenOptions = {}): Promise<Image> {
  const storage = await createNodeStorage(path, { readOnly: true });
  try {
    const image = await openImage(storage, {
      name: path,
      resolver: createNodeResolver({ allowAbsolute: true }),
      ...options,
    });
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
  } catch (error) {
    await storage.close();
    throw error;
  }
}

/** The whole guest content, read in `chunk`-byte requests (default 1 MiB; not aligned to anything in particular). */
export async function readAll(image: Image, chunk = 1 << 20): Promise<Uint8Array> {
  // Poisoned, so that a byte the read does not write shows.
  const out = new Uint8Array(image.virtualSize).fill(0xa5);
  for (let at = 0; at < out.length; at += chunk) {
    await image.read(out.subarray(at, Math.min(out.length, at + chunk)), at);
  }
  return out;
}

/** `qemu-img convert -O raw` of `path` (extra args before the file, e.g. ['-l', 'snap']), read back. */
export function qemuRaw(dir: string, path: string, extra: string[] = []): Uint8Array {
  const out = join(dir, `convert-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-O', 'raw', ...extra, path, out]);
  return new Uint8Array(readFileSync(out));
}

/** `image.read` into a poisoned buffer (a byte the read leaves alone shows as 0xa5). */
export async function readPoisoned(image: Image, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length).fill(0xa5);
  await image.read(out, offset);
  return out;
}

/** Every data extent has a host offset or is compressed, never both. */
export function checkExtentShape(extents: readonly Extent[]): void {
  for (const e of extents) {
    if (e.kind === 'data' && (e.hostOffset === undefined) !== (e.compressed === true)) {
      throw new Error(`data extent with ${e.compressed === true ? 'both a host offset and' : 'neither a host offset nor'} compression: ${JSON.stringify(e)}`);
    }
  }
}

/** The first differing offset of two arrays, or -1 when equal (-2 for a length mismatch). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return -2;
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) return -1;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return j;
  return -1;
}

export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** One canonical run for comparing maps: kind, depth and host offset (when any). */
export interface CanonicalRun {
  start: number;
  length: number;
  kind: 'data' | 'zero' | 'unallocated';
  depth: number;
  offset?: number;
}

function mergeCanonical(runs: CanonicalRun[]): CanonicalRun[] {
  const out: CanonicalRun[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.start + last.length === r.start &&
      last.kind === r.kind &&
      last.depth === r.depth &&
      (last.offset === undefined ? r.offset === undefined : r.offset !== undefined && last.offset + last.length === r.offset)
    ) {
      last.length += r.length;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/**
 * qemu-img map --output=json, canonical: data (whether or not qemu also says zero, as it does
 * for preallocated metadata over a hole), zero (present), unallocated (not present).
 */
export function qemuMap(path: string, extra: string[] = []): CanonicalRun[] {
  const entries = JSON.parse(qemuImg(['map', '--output=json', ...extra, path])) as QemuMapEntry[];
  return mergeCanonical(
    entries.map((e) => {
      const run: CanonicalRun = {
        start: e.start,
        length: e.length,
        kind: e.data ? 'data' : e.present ? 'zero' : 'unallocated',
        depth: e.depth,
      };
      if (e.offset !== undefined) run.offset = e.offset;
      return run;
    }),
  );
}

/** Our extents, canonical (compressed data has no offset, as in qemu's map). */
export function canonicalExtents(extents: readonly Extent[]): CanonicalRun[] {
  return mergeCanonical(
    extents.map((e) => {
      const run: CanonicalRun = { start: e.offset, length: e.length, kind: e.kind, depth: e.depth };
      if (e.hostOffset !== undefined && e.compressed !== true) run.offset = e.hostOffset;
      return run;
    }),
  );
}
