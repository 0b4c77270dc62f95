import type { Image } from '../src/index.js';

/** One qemu-io command, applied by qemu-io and (the same way) by the engine. */
export type IoOp =
  /** pattern -1: the bytes of the source file (qemu-io write -s), which do not compress. */
  | { kind: 'write'; offset: number; length: number; pattern: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; offset: number; length: number; pattern: number }
  | { kind: 'flush' };

/** A scripts' source file: random bytes (written with qemu-io write -s), enough for any request. */
export function sourceBytes(length: number, seed = 99): Uint8Array {
  const rand = prng(seed);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ScriptOptions {
  size: number;
  clusterSize: number;
  /** Subcluster size (cluster size without extended L2). */
  subclusterSize?: number;
  count: number;
  seed: number;
  /** Include compressed writes (whole clusters). */
  compressed?: boolean;
  /** Largest request, in clusters (default 3). */
  maxClusters?: number;
}

/**
 * A random qemu-io script over an image: writes with patterns, zero writes (some with -u),
 * discards and compressed writes, at offsets aligned to nothing, to sectors, to subclusters and
 * to clusters, some ending at the end of the image.
 */
export function randomScript(options: ScriptOptions): IoOp[] {
  const { size, clusterSize: cs, count } = options;
  const scs = options.subclusterSize ?? cs;
  const rand = prng(options.seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const maxLength = (options.maxClusters ?? 3) * cs;
  const range = (): { offset: number; length: number } => {
    const unit = [1, 512, scs, cs][int(4)]!;
    let offset = Math.floor(int(size) / unit) * unit;
    let length = Math.max(unit, Math.floor((1 + int(maxLength)) / unit) * unit);
    if (rand() < 0.1) {
      // To the end of the image.
      offset = Math.max(0, size - length);
      offset -= offset % unit;
      length = size - offset;
    }
    length = Math.min(length, size - offset);
    return { offset, length };
  };
  const ops: IoOp[] = [];
  for (let i = 0; i < count; i++) {
    const r = rand();
    const pattern = rand() < 0.3 ? -1 : 1 + int(250);
    if (r < 0.45) ops.push({ kind: 'write', ...range(), pattern });
    else if (r < 0.6) ops.push({ kind: 'zero', ...range(), unmap: rand() < 0.5 });
    else if (r < 0.72) ops.push({ kind: 'discard', ...range() });
    else if (r < 0.9 && options.compressed === true) {
      const offset = int(Math.ceil(size / cs)) * cs;
      ops.push({ kind: 'compressed', offset, length: Math.min(cs, size - offset), pattern });
    } else if (r < 0.95) ops.push({ kind: 'flush' });
    else ops.push({ kind: 'write', ...range(), pattern: 1 + int(250) });
  }
  return ops;
}

/** The qemu-io `-c` arguments for a script (`source`: the file holding `sourceBytes`). */
export function qemuIoArgs(ops: readonly IoOp[], source = ''): string[] {
  const fill = (pattern: number): string => (pattern < 0 ? `-s ${source}` : `-P ${pattern}`);
  const out: string[] = [];
  for (const op of ops) {
    let command: string;
    switch (op.kind) {
      case 'write':
        command = `write ${fill(op.pattern)} ${op.offset} ${op.length}`;
        break;
      case 'zero':
        command = `write -z${op.unmap ? ' -u' : ''} ${op.offset} ${op.length}`;
        break;
      case 'discard':
        command = `discard ${op.offset} ${op.length}`;
        break;
      case 'compressed':
        command = `write -c ${fill(op.pattern)} ${op.offset} ${op.length}`;
        break;
      case 'flush':
        command = 'flush';
        break;
    }
    out.push('-c', command);
  }
  return out;
}

/**
 * Applies a script to an image opened for writing (with discard 'unmap', as qemu-io opens
 * images). A compressed write over an allocated cluster fails in qemu-io too; its failure is
 * ignored here as qemu-io goes on to the next command. Returns how many commands failed.
 */
export async function applyScript(image: Image, ops: readonly IoOp[], source: Uint8Array = new Uint8Array(0)): Promise<number> {
  let failed = 0;
  const bytes = (pattern: number, length: number): Uint8Array =>
    pattern < 0 ? source.slice(0, length) : new Uint8Array(length).fill(pattern);
  for (const op of ops) {
    switch (op.kind) {
      case 'write':
        await image.write(bytes(op.pattern, op.length), op.offset);
        break;
      case 'zero':
        await image.writeZeroes(op.offset, op.length, { mayUnmap: op.unmap });
        break;
      case 'discard':
        await image.discard(op.offset, op.length);
        break;
      case 'compressed':
        try {
          await image.writeCompressed(bytes(op.pattern, op.length), op.offset);
        } catch (error) {
          if ((error as { code?: string }).code !== 'IO') throw error;
          failed++;
        }
        break;
      case 'flush':
        await image.flush();
        break;
    }
  }
  return failed;
}
