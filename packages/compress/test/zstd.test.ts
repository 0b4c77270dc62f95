import { Zstd } from '@hpcc-js/wasm-zstd';
import fc from 'fast-check';
import { decompress as fzstdDecompress } from 'fzstd';
import { beforeAll, describe, expect, test } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import {
  decodeZstdFrameHeader,
  jsZstdCodec,
  zstdDecompressInto,
  zstdFrameLength,
  ZSTD_MAX_WINDOW_SIZE,
} from '../src/index.js';
import { clusterCaseArb, describeCase, equalBytes, makeCluster, withSectorJunk } from './data.js';

let zstd: Zstd;
beforeAll(async () => {
  zstd = await Zstd.load();
});

function corruptMessage(run: () => void): string {
  try {
    run();
  } catch (error) {
    if (isQcow2Error(error) && error.code === 'CORRUPT') return error.message;
    throw error;
  }
  throw new Error('expected a CORRUPT Qcow2Error, nothing was thrown');
}

/** A frame written by libzstd's streaming API: no content size, blocks of at most 128 KiB. */
function streamingFrame(data: Uint8Array, level: number): Uint8Array {
  zstd.reset();
  zstd.setCompressionLevel(level);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += 100_000) parts.push(zstd.compressChunk(data.subarray(i, i + 100_000)).slice());
  parts.push(zstd.compressEnd().slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
}
/** A block header: last bit, type, size. */
function blockHeader(last: boolean, type: number, size: number): number[] {
  const h = (last ? 1 : 0) | (type << 1) | (size << 3);
  return [h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff];
}

describe('zstd codec: round trips', () => {
  test('compress → every decoder, clusters 512 B .. 2 MiB, junk after the frame', async () => {
    await fc.assert(
      fc.asyncProperty(clusterCaseArb, async (c) => {
        const data = makeCluster(c.size, c.pattern, c.seed);
        const frame = await jsZstdCodec.compress(data);
        if (c.pattern === 'random') expect(frame).toBeNull();
        if (c.pattern === 'zeros' || c.pattern === 'text' || c.pattern === 'runs') expect(frame).not.toBeNull();
        if (frame === null) return;
        expect(frame.length).toBeLessThan(c.size);
        // What qemu writes: one frame that records its content size.
        expect(decodeZstdFrameHeader(frame).contentSize).toBe(c.size);
        expect(zstdFrameLength(withSectorJunk(frame, c.seed))).toBe(frame.length);
        const dst = new Uint8Array(c.size).fill(0xee);
        jsZstdCodec.decompress(withSectorJunk(frame, c.seed), dst);
        expect(equalBytes(dst, data), describeCase(c)).toBe(true);
        // Independent decoders agree on the same (exact-length) frame.
        expect(equalBytes(fzstdDecompress(frame), data)).toBe(true);
        expect(equalBytes(zstd.decompress(frame), data)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  test('frames of every libzstd level, with and without content size, one or many blocks', () => {
    fc.assert(
      fc.property(
        clusterCaseArb,
        fc.constantFrom(-5, -1, 1, 3, 6, 9, 15, 19, 22),
        fc.boolean(),
        (c, level, streaming) => {
          const data = makeCluster(c.size, c.pattern, c.seed);
          const frame = streaming ? streamingFrame(data, level) : zstd.compress(data, level).slice();
          const header = decodeZstdFrameHeader(frame);
          if (!streaming) expect(header.contentSize).toBe(c.size);
          expect(zstdFrameLength(withSectorJunk(frame, 9))).toBe(frame.length);
          const dst = new Uint8Array(c.size);
          expect(zstdDecompressInto(withSectorJunk(frame, c.seed), dst)).toBe(frame.length);
          expect(equalBytes(dst, data), `${describeCase(c)} level ${level} streaming ${streaming}`).toBe(true);
        },
      ),
      { numRuns: 80 },
    );
  });

  test('a frame with a content checksum (written by the zstd CLI) decodes, and a wrong one is refused', () => {
    // `printf '\1\2\3\4\5\6\7\10' | zstd --check -c`: one raw block of 8 bytes, XXH64 low 32 bits.
    const frame = Uint8Array.from(Buffer.from('28b52ffd04584100000102030405060708146e6429', 'hex'));
    const dst = new Uint8Array(8);
    expect(zstdDecompressInto(frame, dst)).toBe(frame.length);
    expect(Array.from(dst)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const flipped = frame.slice();
    flipped[12] = flipped[12]! ^ 1; // a data byte
    expect(corruptMessage(() => zstdDecompressInto(flipped, new Uint8Array(8)))).toMatch(
      /content checksum 0x29646e14 at offset 0x11 does not match/,
    );
  });
});

describe('zstd codec: hostile input ends in Qcow2Error CORRUPT', () => {
  const data = makeCluster(65536, 'mixed', 4242);
  let frame: Uint8Array;
  beforeAll(async () => {
    frame = (await jsZstdCodec.compress(data))!;
  });

  test('every truncation of a frame', () => {
    for (let cut = 0; cut < frame.length; cut++) {
      corruptMessage(() => jsZstdCodec.decompress(frame.subarray(0, cut), new Uint8Array(65536)));
    }
  });

  test('a content size that is not the cluster size', () => {
    expect(corruptMessage(() => jsZstdCodec.decompress(frame, new Uint8Array(32768)))).toMatch(
      /Frame_Content_Size is 0x10000, the cluster is 0x8000 bytes/,
    );
  });

  test('a huge window, a huge content size, a dictionary, reserved bits', () => {
    const dst = new Uint8Array(4096);
    // Window descriptor exponent 31: 2 TiB.
    const hugeWindow = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0xf8, ...blockHeader(true, 1, 4096), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(hugeWindow, dst))).toMatch(/window size 0x20000000000 exceeds/);
    // 8-byte content size 2^60.
    const hugeContent = Uint8Array.of(...le32(0xfd2fb528), 0xe0, 0, 0, 0, 0, 0, 0, 0, 0x10, ...blockHeader(true, 1, 4096), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(hugeContent, dst))).toMatch(/Frame_Content_Size .* exceeds 2\^53/);
    // Window 4 KiB, 4-byte content size 0xfffffff0, on a 4 KiB cluster.
    const bigContent = Uint8Array.of(...le32(0xfd2fb528), 0x80, 0x10, ...le32(0xfffffff0), ...blockHeader(true, 1, 4096), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(bigContent, dst))).toMatch(/Frame_Content_Size is 0xfffffff0/);
    const dictionary = Uint8Array.of(...le32(0xfd2fb528), 0x21, 7, 0x10, ...blockHeader(true, 1, 4096), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(dictionary, dst))).toMatch(/dictionary 7/);
    const reserved = Uint8Array.of(...le32(0xfd2fb528), 0x28, 0x10, ...blockHeader(true, 1, 4096), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(reserved, dst))).toMatch(/reserved bit 3/);
    const badType = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0x10, ...blockHeader(true, 3, 16), 0);
    expect(corruptMessage(() => jsZstdCodec.decompress(badType, dst))).toMatch(/reserved block type 3/);
    expect(corruptMessage(() => jsZstdCodec.decompress(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), dst))).toMatch(/magic number/);
    expect(ZSTD_MAX_WINDOW_SIZE).toBe(1 << 27);
  });

  test('frames that produce more or less than the cluster', () => {
    const dst = new Uint8Array(4096);
    // No content size, window 1 MiB: an RLE block of 128 KiB into a 4 KiB cluster.
    const tooLong = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0x50, ...blockHeader(true, 1, 131072), 0x41);
    expect(corruptMessage(() => jsZstdCodec.decompress(tooLong, dst))).toMatch(/more than the 0x1000-byte cluster/);
    // Two RLE blocks of 4 KiB.
    const twice = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0x50, ...blockHeader(false, 1, 4096), 1, ...blockHeader(true, 1, 4096), 2);
    expect(corruptMessage(() => jsZstdCodec.decompress(twice, dst))).toMatch(/more than the 0x1000-byte cluster/);
    const short = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0x50, ...blockHeader(true, 1, 100), 1);
    expect(corruptMessage(() => jsZstdCodec.decompress(short, dst))).toMatch(/frame ends after 0x64 bytes/);
    // A block larger than Block_Maximum_Size (128 KiB).
    const huge = Uint8Array.of(...le32(0xfd2fb528), 0x00, 0x50, ...blockHeader(true, 1, 131073), 1);
    expect(corruptMessage(() => jsZstdCodec.decompress(huge, new Uint8Array(1 << 21)))).toMatch(/above Block_Maximum_Size/);
    // A compressed frame of a 64 KiB cluster decoded into a 64 KiB cluster of a frame whose
    // content size was stripped: still fine; into 60 KiB: too long.
    const streamed = streamingFrame(data, 3);
    expect(decodeZstdFrameHeader(streamed).contentSize).toBeNull();
    expect(corruptMessage(() => jsZstdCodec.decompress(streamed, new Uint8Array(61440)))).toMatch(/more than the 0xf000-byte cluster/);
  });

  test('mutated frames: only Qcow2Error, and we accept exactly what libzstd accepts, with the same bytes', () => {
    const valid = fc
      .record({
        bits: fc.integer({ min: 9, max: 15 }),
        seed: fc.integer({ min: 1, max: 1 << 30 }),
        level: fc.constantFrom(-3, 1, 3, 19),
        pattern: fc.constantFrom('text', 'mixed', 'runs', 'sparse') as fc.Arbitrary<'text' | 'mixed' | 'runs' | 'sparse'>,
      })
      .map(({ bits, seed, level, pattern }) => {
        const data = makeCluster(1 << bits, pattern, seed);
        return Uint8Array.of(bits, ...zstd.compress(data, level));
      });
    const decode = (input: Uint8Array): Uint8Array | string => {
      const bits = Math.min(15, Math.max(9, input[0] ?? 9));
      const dst = new Uint8Array(1 << bits);
      try {
        jsZstdCodec.decompress(input.subarray(1), dst);
        return dst;
      } catch (error) {
        if (!isQcow2Error(error)) throw error;
        return error.code;
      }
    };
    assertThrowsOnlyQcow2Error(mutatedBytes(valid), decode, { numRuns: 600 });
    let bothDecoded = 0;
    fc.assert(
      fc.property(mutatedBytes(valid), (input) => {
        const ours = decode(input);
        // libzstd on the exact frame (it refuses trailing bytes): accepted iff it yields the cluster.
        let theirs: Uint8Array | undefined;
        try {
          const body = input.subarray(1);
          theirs = zstd.decompress(body.subarray(0, zstdFrameLength(body))).slice();
        } catch {
          theirs = undefined;
        }
        const clusterSize = typeof ours === 'string' ? -1 : ours.length;
        if (theirs === undefined || (typeof ours !== 'string' && theirs.length !== clusterSize)) {
          expect(ours, 'we decoded a frame libzstd refuses').toBe('CORRUPT');
          return;
        }
        if (typeof ours === 'string') {
          const bits = Math.min(15, Math.max(9, input[0] ?? 9));
          // We refuse it: so must libzstd, or it must yield something other than the cluster.
          expect(theirs.length, 'libzstd decoded a cluster we refused').not.toBe(1 << bits);
          return;
        }
        expect(equalBytes(ours, theirs)).toBe(true);
        bothDecoded++;
      }),
      { numRuns: 500 },
    );
    expect(bothDecoded).toBeGreaterThan(0);
  });
});
