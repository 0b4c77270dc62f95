import type { Storage } from '../storage.js';
import { check, checkBytesEqual, checkEqual, checkFilled, checkRejects } from './assert.js';
import type { ConformanceCase, ConformanceContext } from './context.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic bytes, different for each seed, no zero runs that could hide a missing write. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x & 0xff) | 1;
  }
  return out;
}

function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** A small seeded PRNG (xorshift32) for the model run: same sequence in every runtime. */
function prng(seed: number): (bound: number) => number {
  let x = seed >>> 0 || 1;
  return (bound) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % bound;
  };
}

async function create(ctx: ConformanceContext): Promise<Storage> {
  check(ctx.create !== undefined, 'this case needs ctx.create');
  return ctx.create();
}

/** A storage holding `bytes`: written into a fresh writable one, or a read-only one when that is all there is. */
async function withContent(ctx: ConformanceContext, bytes: Uint8Array): Promise<Storage> {
  if (ctx.create !== undefined) {
    const storage = await ctx.create();
    await storage.write(bytes, 0);
    return storage;
  }
  check(ctx.createReadOnly !== undefined, 'this case needs ctx.create or ctx.createReadOnly');
  return ctx.createReadOnly(bytes);
}

/** Runs `body` and closes the storage; a close failure is reported unless `body` already failed. */
async function using<T>(storage: Storage, body: (storage: Storage) => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await body(storage);
  } catch (error) {
    await storage.close().catch(() => undefined);
    throw error;
  }
  await storage.close();
  return result;
}

/** Reads `length` bytes at `offset` in one call and checks the count. */
async function readExactly(storage: Storage, offset: number, length: number, what: string): Promise<Uint8Array> {
  const dst = new Uint8Array(length);
  const count = await storage.read(dst, offset);
  checkEqual(count, length, `${what}: bytes read at offset ${offset}`);
  return dst;
}

async function checkContents(storage: Storage, expected: Uint8Array, what: string): Promise<void> {
  checkEqual(await storage.size(), expected.length, `${what}: size`);
  checkBytesEqual(await readExactly(storage, 0, expected.length, what), expected, `${what}: contents`);
}

const hasCreate = (ctx: ConformanceContext): boolean => ctx.create !== undefined;
const hasContent = (ctx: ConformanceContext): boolean =>
  ctx.create !== undefined || ctx.createReadOnly !== undefined;
const hasReadOnly = (ctx: ConformanceContext): boolean => ctx.createReadOnly !== undefined;

/** A flat, growable byte array: the model the random run compares against. */
class FlatModel {
  bytes = new Uint8Array(0);
  write(src: Uint8Array, offset: number): void {
    if (src.length === 0) return;
    this.resize(Math.max(this.bytes.length, offset + src.length));
    this.bytes.set(src, offset);
  }
  resize(size: number): void {
    if (size === this.bytes.length) return;
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
  discard(offset: number, length: number): void {
    if (offset < this.bytes.length) this.bytes.fill(0, offset, Math.min(offset + length, this.bytes.length));
  }
}

/**
 * The Storage contract as named, framework-free cases. Each case makes its own storages through
 * the context and closes them. Run them with `runConformance`, or wrap each in your runner's
 * test function: `for (const c of storageConformanceCases) it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx))`.
 */
export const storageConformanceCases: readonly ConformanceCase[] = [
  {
    name: 'capabilities are explicit: readOnly is a boolean, canDiscard agrees with discard',
    applies: hasContent,
    async run(ctx) {
      const storages: [Storage, boolean][] = [];
      if (ctx.create) storages.push([await ctx.create(), false]);
      if (ctx.createReadOnly) storages.push([await ctx.createReadOnly(pattern(10, 1)), true]);
      for (const [storage, readOnly] of storages) {
        await using(storage, async (s) => {
          const kind = readOnly ? 'createReadOnly()' : 'create()';
          checkEqual(s.readOnly, readOnly, `${kind}: readOnly`);
          checkEqual(typeof s.canDiscard, 'boolean', `${kind}: typeof canDiscard`);
          checkEqual(typeof s.discard === 'function', s.canDiscard, `${kind}: discard is a function`);
        });
      }
    },
  },
  {
    name: 'a new storage is empty: size 0, reads return 0 and leave dst untouched',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        checkEqual(await s.size(), 0, 'size');
        const dst = filled(16, 0xaa);
        checkEqual(await s.read(dst, 0), 0, 'bytes read at 0');
        checkFilled(dst, 0xaa, 'dst after reading an empty storage');
      });
    },
  },
  {
    name: 'write then read back, whole and at unaligned offsets',
    applies: hasContent,
    async run(ctx) {
      const data = pattern(10_000, 2);
      await using(await withContent(ctx, data), async (s) => {
        await checkContents(s, data, 'after writing 10000 bytes at 0');
        for (const [offset, length] of [[1, 1], [511, 2], [4095, 4098], [9_999, 1], [3, 9_990]] as const) {
          const got = await readExactly(s, offset, length, `read ${length} at ${offset}`);
          checkBytesEqual(got, data.subarray(offset, offset + length), `read ${length} at ${offset}`);
        }
      });
    },
  },
  {
    name: 'short read at end of file returns the count and leaves the rest of dst untouched',
    applies: hasContent,
    async run(ctx) {
      const data = pattern(1000, 3);
      await using(await withContent(ctx, data), async (s) => {
        const dst = filled(100, 0xee);
        checkEqual(await s.read(dst, 950), 50, 'bytes read with 50 left before the end');
        checkBytesEqual(dst.subarray(0, 50), data.subarray(950), 'the 50 bytes read');
        checkFilled(dst.subarray(50), 0xee, 'dst past the bytes read');
        const whole = filled(3000, 0xee);
        checkEqual(await s.read(whole, 0), 1000, 'bytes read into a dst larger than the file');
        checkBytesEqual(whole.subarray(0, 1000), data, 'the file read into a larger dst');
        checkFilled(whole.subarray(1000), 0xee, 'the larger dst past the end of file');
      });
    },
  },
  {
    name: 'read at or past end of file returns 0 and leaves dst untouched',
    applies: hasContent,
    async run(ctx) {
      await using(await withContent(ctx, pattern(1000, 4)), async (s) => {
        for (const offset of [1000, 1001, 4096, 2 ** 32, 2 ** 40, 2 ** 52]) {
          const dst = filled(64, 0x5a);
          checkEqual(await s.read(dst, offset), 0, `bytes read at ${offset}`);
          checkFilled(dst, 0x5a, `dst after reading at ${offset}`);
        }
      });
    },
  },
  {
    name: 'writes past end of file extend it with zeros in the gap',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const head = pattern(10, 5);
        const tail = pattern(10, 6);
        await s.write(head, 0);
        await s.write(tail, 5000);
        const expected = new Uint8Array(5010);
        expected.set(head, 0);
        expected.set(tail, 5000);
        await checkContents(s, expected, 'after writes at 0 and 5000');
      });
      // Bytes once written and then cut off must not reappear in a later gap.
      await using(await create(ctx), async (s) => {
        await s.write(filled(64 * KiB, 0xff), 0);
        await s.truncate(10);
        const tail = pattern(100, 7);
        await s.write(tail, 40_000);
        const expected = new Uint8Array(40_100);
        expected.fill(0xff, 0, 10);
        expected.set(tail, 40_000);
        await checkContents(s, expected, 'after truncating to 10 and writing at 40000');
      });
    },
  },
  {
    name: 'size follows every write and truncate',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const steps: [string, () => Promise<void>, number][] = [
          ['write 100 at 0', () => s.write(pattern(100, 8), 0), 100],
          ['write 10 at 50 (inside)', () => s.write(pattern(10, 9), 50), 100],
          ['write 10 at 95 (across the end)', () => s.write(pattern(10, 10), 95), 105],
          ['truncate to 1 MiB', () => s.truncate(MiB), MiB],
          ['truncate to 3', () => s.truncate(3), 3],
          ['truncate to 3 again', () => s.truncate(3), 3],
          ['truncate to 0', () => s.truncate(0), 0],
          ['write 1 at 7', () => s.write(pattern(1, 11), 7), 8],
          ['truncate to 4097', () => s.truncate(4097), 4097],
        ];
        for (const [what, step, size] of steps) {
          await step();
          checkEqual(await s.size(), size, `size after ${what}`);
        }
      });
    },
  },
  {
    name: 'truncate down then up reads zeros past the cut',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const data = pattern(64 * KiB, 12);
        await s.write(data, 0);
        await s.truncate(1000);
        await s.truncate(64 * KiB + 1);
        const expected = new Uint8Array(64 * KiB + 1);
        expected.set(data.subarray(0, 1000));
        await checkContents(s, expected, 'after truncate to 1000 then to 64 KiB + 1');
        await s.truncate(0);
        await s.truncate(4096);
        await checkContents(s, new Uint8Array(4096), 'after truncate to 0 then to 4096');
      });
    },
  },
  {
    name: 'flush resolves, on empty, written and read-only storages',
    applies: hasContent,
    async run(ctx) {
      if (ctx.create) {
        await using(await ctx.create(), async (s) => {
          await s.flush();
          const data = pattern(3000, 13);
          await s.write(data, 100);
          await s.truncate(2000);
          await s.flush();
          const expected = new Uint8Array(2000);
          expected.set(data.subarray(0, 1900), 100);
          await checkContents(s, expected, 'after flush');
        });
      }
      if (ctx.createReadOnly) {
        await using(await ctx.createReadOnly(pattern(100, 14)), async (s) => {
          await s.flush();
        });
      }
    },
  },
  {
    name: "close: every later call rejects 'CLOSED', closing twice resolves",
    applies: hasContent,
    async run(ctx) {
      const s = await withContent(ctx, pattern(100, 15));
      await s.close();
      await s.close();
      await checkRejects(() => s.read(new Uint8Array(10), 0), 'CLOSED', 'read after close');
      await checkRejects(() => s.read(new Uint8Array(0), 0), 'CLOSED', 'zero-length read after close');
      await checkRejects(() => s.write(new Uint8Array(10), 0), 'CLOSED', 'write after close');
      await checkRejects(() => s.size(), 'CLOSED', 'size after close');
      await checkRejects(() => s.truncate(10), 'CLOSED', 'truncate after close');
      await checkRejects(() => s.flush(), 'CLOSED', 'flush after close');
      if (s.discard) {
        const discard = s.discard.bind(s);
        await checkRejects(() => discard(0, 10), 'CLOSED', 'discard after close');
      }
      await s.close();
    },
  },
  {
    name: "read-only: write, truncate and discard reject 'READ_ONLY' and change nothing",
    applies: hasReadOnly,
    async run(ctx) {
      check(ctx.createReadOnly !== undefined, 'needs ctx.createReadOnly');
      const data = pattern(3000, 16);
      await using(await ctx.createReadOnly(data), async (s) => {
        checkEqual(s.readOnly, true, 'readOnly');
        await checkRejects(() => s.write(pattern(10, 17), 0), 'READ_ONLY', 'write inside the file');
        await checkRejects(() => s.write(pattern(10, 17), 5000), 'READ_ONLY', 'write past the end');
        await checkRejects(() => s.write(new Uint8Array(0), 0), 'READ_ONLY', 'zero-length write');
        await checkRejects(() => s.truncate(10), 'READ_ONLY', 'truncate down');
        await checkRejects(() => s.truncate(3000), 'READ_ONLY', 'truncate to the same size');
        await checkRejects(() => s.truncate(10_000), 'READ_ONLY', 'truncate up');
        if (s.discard) {
          const discard = s.discard.bind(s);
          await checkRejects(() => discard(0, 100), 'READ_ONLY', 'discard');
        }
        await checkContents(s, data, 'after the refused calls');
      });
    },
  },
  {
    name: 'discard (when canDiscard) reads back zeros and keeps the size',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        if (!s.canDiscard) {
          checkEqual(s.discard, undefined, 'discard when canDiscard is false');
          return;
        }
        const discard = s.discard;
        check(discard !== undefined, 'canDiscard is true but discard is missing');
        const size = MiB + 100;
        const expected = pattern(size, 18);
        await s.write(expected, 0);
        const ranges: [number, number][] = [
          [4096, 64 * KiB],
          [100, 50],
          [200 * KiB + 1, 3 * 4096 + 7],
          [size - 10, 1000],
          [2 * MiB, 4096],
          [7, 0],
        ];
        for (const [offset, length] of ranges) {
          await discard.call(s, offset, length);
          if (offset < size) expected.fill(0, offset, Math.min(size, offset + length));
          checkEqual(await s.size(), size, `size after discard(${offset}, ${length})`);
        }
        await checkContents(s, expected, 'after the discards');
      });
    },
  },
  {
    name: 'concurrent reads and writes to disjoint ranges give the same result as serial ones',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const count = 64;
        const stride = 5000;
        const chunks = Array.from({ length: count }, (_, i) => pattern(1000 + ((i * 397) % 3000), 100 + i));
        const expected = new Uint8Array(count * stride);
        chunks.forEach((chunk, i) => expected.set(chunk, i * stride));
        const end = (count - 1) * stride + chunks[count - 1]!.length;
        // Highest offsets first, all in flight at once: each extends the file beyond the others.
        await Promise.all(chunks.map((_, j) => count - 1 - j).map((i) => s.write(chunks[i]!, i * stride)));
        checkEqual(await s.size(), end, 'size after the concurrent writes');
        const reads = await Promise.all(
          chunks.map(async (chunk, i) => {
            const dst = new Uint8Array(stride);
            const n = await s.read(dst, i * stride);
            return { n, dst, i, chunk };
          }),
        );
        for (const { n, dst, i } of reads) {
          const length = Math.min(stride, end - i * stride);
          checkEqual(n, length, `concurrent read ${i}: bytes read`);
          checkBytesEqual(dst.subarray(0, n), expected.subarray(i * stride, i * stride + n), `concurrent read ${i}`);
        }
        // Reads of the first half in flight together with writes to the second half.
        const half = count / 2;
        const updates = chunks.slice(half).map((chunk, k) => pattern(chunk.length, 500 + k));
        const mixed = await Promise.all([
          ...chunks.slice(0, half).map(async (chunk, i) => {
            const dst = new Uint8Array(chunk.length);
            await s.read(dst, i * stride);
            return dst;
          }),
          ...updates.map(async (update, k) => {
            await s.write(update, (half + k) * stride);
            return undefined;
          }),
        ]);
        mixed.slice(0, half).forEach((dst, i) => {
          check(dst !== undefined, 'read result');
          checkBytesEqual(dst, chunks[i]!, `read ${i} during the concurrent writes`);
        });
        updates.forEach((update, k) => expected.set(update, (half + k) * stride));
        checkBytesEqual(await readExactly(s, 0, end, 'final read'), expected.subarray(0, end), 'after the mixed batch');
      });
    },
  },
  {
    name: 'multi-MiB transfers in one call',
    applies: hasContent,
    async run(ctx) {
      const length = 6 * MiB + 123;
      const data = pattern(length, 19);
      if (ctx.create) {
        await using(await ctx.create(), async (s) => {
          await s.write(data, 12_345);
          checkEqual(await s.size(), 12_345 + length, 'size after a multi-MiB write at 12345');
          const back = await readExactly(s, 12_345, length, 'multi-MiB read');
          checkBytesEqual(back, data, 'multi-MiB read');
          const tail = new Uint8Array(8 * MiB);
          checkEqual(await s.read(tail, 12_345 + MiB), length - MiB, 'short multi-MiB read at the end');
          checkBytesEqual(tail.subarray(0, length - MiB), data.subarray(MiB), 'short multi-MiB read');
        });
      } else {
        await using(await withContent(ctx, data), async (s) => {
          checkBytesEqual(await readExactly(s, 0, length, 'multi-MiB read'), data, 'multi-MiB read');
        });
      }
    },
  },
  {
    name: 'zero-length reads and writes resolve and change nothing',
    applies: hasContent,
    async run(ctx) {
      const data = pattern(100, 20);
      await using(await withContent(ctx, data), async (s) => {
        checkEqual(await s.read(new Uint8Array(0), 0), 0, 'zero-length read at 0');
        checkEqual(await s.read(new Uint8Array(0), 50), 0, 'zero-length read inside');
        checkEqual(await s.read(new Uint8Array(0), 5000), 0, 'zero-length read past the end');
        if (!s.readOnly) {
          await s.write(new Uint8Array(0), 0);
          await s.write(new Uint8Array(0), 100);
          await s.write(new Uint8Array(0), 5000);
          if (s.discard) await s.discard(10, 0);
        }
        await checkContents(s, data, 'after the zero-length calls');
      });
    },
  },
  {
    name: 'subarray views with a non-zero byteOffset as src and dst',
    applies: hasContent,
    async run(ctx) {
      const backing = filled(4096, 0x55);
      const data = pattern(1000, 21);
      backing.set(data, 7);
      const src = backing.subarray(7, 1007);
      check(src.byteOffset === 7, 'src view byteOffset');
      let s: Storage;
      if (ctx.create) {
        s = await ctx.create();
        await s.write(src, 3);
      } else {
        const expected = new Uint8Array(1003);
        expected.set(data, 3);
        s = await withContent(ctx, expected);
      }
      await using(s, async () => {
        const expected = new Uint8Array(1003);
        expected.set(data, 3);
        await checkContents(s, expected, 'after writing a view at byteOffset 7');
        const outer = filled(2048, 0xcc);
        const dst = outer.subarray(13, 513);
        checkEqual(await s.read(dst, 100), 500, 'bytes read into a view at byteOffset 13');
        checkFilled(outer.subarray(0, 13), 0xcc, 'bytes of the underlying buffer before the dst view');
        checkBytesEqual(outer.subarray(13, 513), expected.subarray(100, 600), 'the dst view');
        checkFilled(outer.subarray(513), 0xcc, 'bytes of the underlying buffer after the dst view');
        const short = outer.subarray(1024, 1524);
        checkEqual(await s.read(short, 800), 203, 'short read into a view');
        checkBytesEqual(outer.subarray(1024, 1227), expected.subarray(800), 'the short-read view');
        checkFilled(outer.subarray(1227), 0xcc, 'bytes after the short read');
      });
    },
  },
  {
    name: 'write copies src: changing it after the write resolves changes nothing',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const data = pattern(4096, 22);
        const src = data.slice();
        await s.write(src, 0);
        src.fill(0);
        await checkContents(s, data, 'after clearing src');
        const dst = await readExactly(s, 0, 4096, 'read');
        dst.fill(1);
        await checkContents(s, data, 'after changing a dst that was read into');
      });
    },
  },
  {
    name: "invalid offsets, lengths, sizes and buffers reject 'INVALID_ARGUMENT'",
    applies: hasContent,
    async run(ctx) {
      const data = pattern(100, 23);
      await using(await withContent(ctx, data), async (s) => {
        const badOffsets: unknown[] = [-1, 0.5, Number.NaN, Infinity, -Infinity, 2 ** 53, 2 ** 53 + 2, 2 ** 64, '0', undefined, null, 1n];
        for (const offset of badOffsets) {
          await checkRejects(() => s.read(new Uint8Array(4), offset as number), 'INVALID_ARGUMENT', `read at offset ${String(offset)}`);
          if (!s.readOnly) {
            await checkRejects(() => s.write(new Uint8Array(4), offset as number), 'INVALID_ARGUMENT', `write at offset ${String(offset)}`);
            await checkRejects(() => s.truncate(offset as number), 'INVALID_ARGUMENT', `truncate to ${String(offset)}`);
            if (s.discard) {
              const discard = s.discard.bind(s);
              await checkRejects(() => discard(offset as number, 1), 'INVALID_ARGUMENT', `discard at offset ${String(offset)}`);
              await checkRejects(() => discard(0, offset as number), 'INVALID_ARGUMENT', `discard of length ${String(offset)}`);
            }
          }
        }
        const nearTop = Number.MAX_SAFE_INTEGER - 8;
        await checkRejects(() => s.read(new Uint8Array(16), nearTop), 'INVALID_ARGUMENT', 'read ending beyond 2^53 - 1');
        for (const dst of [null, undefined, 'abcd', [1, 2, 3], new Uint16Array(4), new DataView(new ArrayBuffer(4))]) {
          await checkRejects(() => s.read(dst as unknown as Uint8Array, 0), 'INVALID_ARGUMENT', `read into ${Object.prototype.toString.call(dst)}`);
        }
        if (!s.readOnly) {
          await checkRejects(() => s.write(new Uint8Array(16), nearTop), 'INVALID_ARGUMENT', 'write ending beyond 2^53 - 1');
          for (const src of [null, 'abcd', [1, 2, 3], new Int8Array(4)]) {
            await checkRejects(() => s.write(src as unknown as Uint8Array, 0), 'INVALID_ARGUMENT', `write of ${Object.prototype.toString.call(src)}`);
          }
          if (s.discard) {
            const discard = s.discard.bind(s);
            await checkRejects(() => discard(nearTop, 16), 'INVALID_ARGUMENT', 'discard ending beyond 2^53 - 1');
          }
        }
        await checkContents(s, data, 'after the refused calls');
      });
    },
  },
  {
    name: 'data survives flush, close and reopen',
    applies: (ctx) => ctx.create !== undefined && ctx.reopen !== undefined,
    async run(ctx) {
      check(ctx.reopen !== undefined, 'needs ctx.reopen');
      const reopen = ctx.reopen;
      const first = pattern(5000, 24);
      const second = pattern(300, 25);
      const expected = new Uint8Array(100_300);
      expected.set(first, 0);
      expected.set(second, 100_000);
      let s = await create(ctx);
      try {
        await s.write(first, 0);
        await s.write(second, 100_000);
        await s.flush();
        s = await reopen(s);
        checkEqual(s.readOnly, false, 'readOnly after reopen');
        await checkContents(s, expected, 'after flush and reopen');
        // Without a flush: close alone must leave the data for the next open.
        await s.truncate(50_000);
        const third = pattern(1000, 26);
        await s.write(third, 2000);
        s = await reopen(s);
        const after = expected.slice(0, 50_000);
        after.set(third, 2000);
        await checkContents(s, after, 'after close and reopen without flush');
      } finally {
        await s.close().catch(() => undefined);
      }
    },
  },
  {
    name: 'offsets beyond 4 GiB (sparse backends)',
    applies: (ctx) => ctx.create !== undefined && ctx.sparse === true,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const offset = 2 ** 32 + 4093;
        const data = pattern(10_000, 27);
        await s.write(data, offset);
        checkEqual(await s.size(), offset + data.length, 'size after a write beyond 4 GiB');
        checkBytesEqual(await readExactly(s, offset, data.length, 'read beyond 4 GiB'), data, 'read beyond 4 GiB');
        const low = filled(4096, 0xab);
        checkEqual(await s.read(low, offset - 4096 - 4093), 4096, 'read in the hole below');
        checkFilled(low, 0, 'the hole below the data');
        const wrapped = filled(10, 0xab);
        checkEqual(await s.read(wrapped, 4093), 10, 'read at the offset modulo 2^32');
        checkFilled(wrapped, 0, 'the bytes at the offset modulo 2^32');
        await s.truncate(2 ** 33);
        checkEqual(await s.size(), 2 ** 33, 'size after truncate to 8 GiB');
        await s.truncate(0);
      });
    },
  },
  {
    name: 'random writes, reads, truncates and discards agree with a flat byte-array model',
    applies: hasCreate,
    async run(ctx) {
      await using(await create(ctx), async (s) => {
        const model = new FlatModel();
        const random = prng(0x51c0ffee);
        const limit = 256 * KiB;
        for (let step = 0; step < 300; step++) {
          const size = model.bytes.length;
          const op = random(10);
          const where = `step ${step}`;
          if (op < 4) {
            const offset = random(Math.min(limit, size + 8 * KiB) + 1);
            const data = pattern(random(8 * KiB + 1), step);
            await s.write(data, offset);
            model.write(data, offset);
          } else if (op < 7) {
            const offset = random(size + 4 * KiB + 1);
            const dst = filled(random(16 * KiB + 1), 0x77);
            const n = await s.read(dst, offset);
            const expected = offset >= size ? 0 : Math.min(dst.length, size - offset);
            checkEqual(n, expected, `${where}: bytes read at ${offset} of ${dst.length}`);
            checkBytesEqual(dst.subarray(0, n), model.bytes.subarray(offset, offset + n), `${where}: read at ${offset}`);
            checkFilled(dst.subarray(n), 0x77, `${where}: dst past the bytes read`);
          } else if (op === 7) {
            const next = random(limit + 1);
            await s.truncate(next);
            model.resize(next);
          } else if (op === 8 && s.discard) {
            const offset = random(size + 1);
            const length = random(32 * KiB + 1);
            await s.discard(offset, length);
            model.discard(offset, length);
          } else {
            await s.flush();
          }
          checkEqual(await s.size(), model.bytes.length, `${where}: size`);
        }
        await checkContents(s, model.bytes, 'after the random run');
      });
    },
  },
];
