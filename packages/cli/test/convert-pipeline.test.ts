/**
 * convert -O qcow2's pipeline without qemu and without the engine: a target whose writes take
 * their bytes only when they complete, after a varying delay (as thread-pool writes do). Chunks
 * are read ahead while one is written; the output must still hold the source's bytes (a buffer
 * is reused only once the write from it has completed), and writes go out one at a time, in guest
 * order, as qemu-img convert (without -W) issues them: that keeps its cluster layout.
 */
import type { CreateOptions } from '@qcow2/engine';
import { Qcow2Error } from '@qcow2/format';
import { describe, expect, it } from 'vitest';
import type { CliHost, ImageExtent, ImageLike } from '../src/host.js';
import { FakeImage, MemoryOutput, run } from './helpers.js';

const M = 1024 * 1024;

/** Data without zero bytes, but for the zero MiBs (every third one), from a xorshift seed. */
function source(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = 12345;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = (x & 0xff) | 1;
    bytes[i + 1] = ((x >>> 8) & 0xff) | 1;
    bytes[i + 2] = ((x >>> 16) & 0xff) | 1;
    bytes[i + 3] = ((x >>> 24) & 0xff) | 1;
  }
  for (let m = 1; m * M < size; m += 3) bytes.fill(0, m * M, Math.min(size, (m + 1) * M));
  return bytes;
}

/** A writable target in memory whose writes copy `src` when they complete, after `delay(k)` event-loop turns. */
class SlowTarget implements ImageLike {
  readonly readOnly = false;
  readonly format = 'qcow2' as const;
  readonly clusterSize = 65536;
  readonly snapshots = [];
  readonly dirty = false;
  readonly bytes: Uint8Array;
  readonly virtualSize: number;
  inFlight = 0;
  maxInFlight = 0;
  #issued = 0;
  readonly #delay: (k: number) => number;

  constructor(size: number, delay: (k: number) => number) {
    this.virtualSize = size;
    this.bytes = new Uint8Array(size);
    this.#delay = delay;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    const k = this.#issued++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    for (let turns = this.#delay(k); turns > 0; turns--) await new Promise((resolve) => setImmediate(resolve));
    this.bytes.set(src, offset);
    this.inFlight--;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.bytes.fill(0, offset, offset + length);
  }

  async writeCompressed(src: Uint8Array, offset: number): Promise<void> {
    return this.write(src, offset);
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}

  async read(dst: Uint8Array, offset: number): Promise<void> {
    dst.set(this.bytes.subarray(offset, offset + dst.length));
  }

  async extents(offset: number, length: number): Promise<ImageExtent[]> {
    return [{ offset, length, kind: 'data', depth: 0 }];
  }

  async openSnapshot(): Promise<ImageLike> {
    throw new Qcow2Error('NOT_FOUND', 'no snapshots');
  }
}

function hostWith(src: Uint8Array, delay: (k: number) => number): { host: CliHost; target: () => SlowTarget | undefined } {
  let target: SlowTarget | undefined;
  const host: CliHost = {
    async openImage(filename, options) {
      if (filename === 'src.raw') return new FakeImage(src, { format: 'raw' });
      if (filename === 'out.qcow2' && options.writable === true && target !== undefined) return target;
      throw new Qcow2Error('NOT_FOUND', `Could not open '${filename}'`);
    },
    async allocatedSize() {
      return undefined;
    },
    async openOutput() {
      return new MemoryOutput();
    },
    async createImage(_filename: string, _format, options: CreateOptions) {
      target = new SlowTarget(options.size ?? 0, delay);
    },
  };
  return { host, target: () => target };
}

describe('convert -O qcow2 pipeline', () => {
  it('keeps every chunk intact when writes complete late', async () => {
    const src = source(40 * M + 12345);
    // Every third write is slow: the reads ahead of it complete meanwhile.
    const { host, target } = hostWith(src, (k) => (k % 3 === 0 ? 6 : 0));
    const result = await run(['convert', '-t', 'unsafe', '-f', 'raw', '-O', 'qcow2', 'src.raw', 'out.qcow2'], host);
    expect(result).toEqual({ code: 0, stdout: '', stderr: '' });
    const out = target()!;
    expect(out.maxInFlight).toBe(1);
    expect(Buffer.compare(out.bytes.subarray(0, src.length), src)).toBe(0);
  });

  it('keeps every chunk intact with -c when compressed writes are slow', async () => {
    const src = source(12 * M + 4096);
    const { host, target } = hostWith(src, (k) => (k % 2 === 0 ? 4 : 1));
    const result = await run(['convert', '-c', '-t', 'unsafe', '-f', 'raw', '-O', 'qcow2', 'src.raw', 'out.qcow2'], host);
    expect(result).toEqual({ code: 0, stdout: '', stderr: '' });
    const out = target()!;
    expect(out.maxInFlight).toBe(1); // compressed clusters are written one at a time, in guest order
    expect(Buffer.compare(out.bytes.subarray(0, src.length), src)).toBe(0);
  });
});
