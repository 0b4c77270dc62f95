import { deflateRawSync, inflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import { inflateRawInto, jsZlibCodec } from '../src/index.js';
import { nodeZlibCodec } from '../src/node.js';
import type { ClusterCodec } from '../src/index.js';
import { BitWriter } from './bits.js';
import { clusterCaseArb, describeCase, equalBytes, makeCluster, withSectorJunk } from './data.js';

const codecs: ClusterCodec[] = [jsZlibCodec, nodeZlibCodec];

function corruptMessage(run: () => void): string {
  try {
    run();
  } catch (error) {
    if (isQcow2Error(error) && error.code === 'CORRUPT') return error.message;
    throw error;
  }
  throw new Error('expected a CORRUPT Qcow2Error, nothing was thrown');
}

/** A 4 KiB-window inflater that keeps only its window between 4 KiB output chunks. */
function inflateWindow12(stream: Uint8Array): Uint8Array {
  return inflateRawSync(stream, { windowBits: 12, chunkSize: 4096 });
}

describe('zlib codecs: round trips', () => {
  test('every encoder × every decoder, clusters 512 B .. 2 MiB, junk after the stream', async () => {
    await fc.assert(
      fc.asyncProperty(clusterCaseArb, async (c) => {
        const data = makeCluster(c.size, c.pattern, c.seed);
        for (const encoder of codecs) {
          const compressed = await encoder.compress(data);
          if (c.pattern === 'zeros' || c.pattern === 'runs' || c.pattern === 'text') {
            expect(compressed, `${encoder.implementation} ${describeCase(c)}`).not.toBeNull();
          }
          if (c.pattern === 'random') expect(compressed).toBeNull();
          if (compressed === null) continue;
          expect(compressed.length).toBeLessThan(c.size);
          // What qemu can read: a 4 KiB-window inflater accepts the stream.
          expect(equalBytes(inflateWindow12(compressed), data)).toBe(true);
          const src = withSectorJunk(compressed, c.seed);
          for (const decoder of codecs) {
            const dst = new Uint8Array(c.size).fill(0xee);
            decoder.decompress(src, dst);
            expect(equalBytes(dst, data), `${encoder.implementation} → ${decoder.implementation} ${describeCase(c)}`).toBe(true);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  test('the 4 KiB-window check can fail: a 32 KiB-window stream with far matches is refused by it', () => {
    const data = makeCluster(1 << 16, 'mixed', 12345);
    const wide = deflateRawSync(data, { windowBits: 15 });
    expect(() => inflateWindow12(wide)).toThrow(/distance too far back/);
    // …while our decoders, like qemu's one-call inflate into the whole cluster, read it.
    for (const decoder of codecs) {
      const dst = new Uint8Array(data.length);
      decoder.decompress(withSectorJunk(wide, 1), dst);
      expect(equalBytes(dst, data)).toBe(true);
    }
  });

  test('streams from every zlib level and strategy decode identically in both decoders', () => {
    const data = makeCluster(1 << 16, 'mixed', 99);
    for (const level of [0, 1, 4, 6, 9]) {
      for (const strategy of [0, 1, 2, 3, 4]) {
        const stream = deflateRawSync(data, { level, strategy, windowBits: 12 });
        for (const decoder of codecs) {
          const dst = new Uint8Array(data.length);
          decoder.decompress(stream, dst);
          expect(equalBytes(dst, data), `level ${level} strategy ${strategy} ${decoder.implementation}`).toBe(true);
        }
      }
    }
  });

  test('incompressible clusters compress to null', async () => {
    for (const size of [512, 4096, 65536]) {
      const data = makeCluster(size, 'random', size);
      for (const codec of codecs) expect(await codec.compress(data)).toBeNull();
    }
  });

  test('inflateRawInto reports the stream length, ignoring the junk after it', () => {
    const data = makeCluster(4096, 'text', 5);
    const stream = deflateRawSync(data, { windowBits: 12 });
    expect(inflateRawInto(withSectorJunk(stream, 3), new Uint8Array(4096))).toBe(stream.length);
  });
});

describe('zlib codecs: hostile input ends in Qcow2Error CORRUPT', () => {
  const text = makeCluster(4096, 'text', 77);
  const stream = deflateRawSync(text, { windowBits: 12 });

  test.each(codecs)('$implementation: every truncation of a stream', (codec) => {
    for (let cut = 0; cut < stream.length; cut++) {
      corruptMessage(() => codec.decompress(stream.subarray(0, cut), new Uint8Array(4096)));
    }
  });

  test.each(codecs)('$implementation: a stream shorter than the cluster', (codec) => {
    expect(corruptMessage(() => codec.decompress(stream, new Uint8Array(8192)))).toMatch(/ends after 0x1000 bytes/);
  });

  test.each(codecs)('$implementation: a stream longer than the cluster', (codec) => {
    expect(corruptMessage(() => codec.decompress(stream, new Uint8Array(2048)))).toMatch(/more than|larger|too large|exceed/i);
  });

  test.each(codecs)('$implementation: a deflate bomb (64 MiB of zeros) stops at the cluster, quickly', (codec) => {
    // ~64 KiB of stream that would inflate to 1000 times the 64 KiB cluster.
    const bomb = deflateRawSync(new Uint8Array(64 << 20));
    const started = performance.now();
    corruptMessage(() => codec.decompress(bomb, new Uint8Array(65536)));
    expect(performance.now() - started).toBeLessThan(1000);
  });

  test('the JS decoder names what failed', () => {
    const dst = new Uint8Array(4096);
    // BFINAL=1, BTYPE=3 (reserved)
    expect(corruptMessage(() => jsZlibCodec.decompress(Uint8Array.of(0x07, 0, 0), dst))).toMatch(/reserved block type 3/);
    // Stored block whose NLEN is not the complement of LEN.
    expect(corruptMessage(() => jsZlibCodec.decompress(Uint8Array.of(0x01, 0x04, 0x00, 0x00, 0x00), dst))).toMatch(
      /LEN 0x4 and NLEN 0x0/,
    );
    // Fixed block: a match of length 3 at distance 1 before any output.
    const far = new BitWriter().bits(1, 1).bits(1, 2).code(0b0000001, 7).code(0, 5).code(0, 7).finish();
    expect(corruptMessage(() => jsZlibCodec.decompress(far, dst))).toMatch(/distance 1 reaches before the start/);
    // Fixed block: literal/length symbol 286 (code 11000110).
    const bad = new BitWriter().bits(1, 1).bits(1, 2).code(0b11000110, 8).finish();
    expect(corruptMessage(() => jsZlibCodec.decompress(bad, dst))).toMatch(/invalid length symbol 286/);
    // Dynamic block: 257 literal/length codes where only symbol 256 has a length (2 bits):
    // an incomplete code, which zlib refuses.
    const w = new BitWriter().bits(1, 1).bits(2, 2).bits(0, 5).bits(0, 5).bits(15, 4);
    // Code length code: lengths for symbols 16,17,18,0,8,7,9,6,10,5,11,4,12,3,13,2,14,1,15:
    // give 18 and 2 and 0 each a 2-bit code (an incomplete 3-of-4 code is refused too), so use
    // symbols 18, 0, 2, 1 → complete 2-bit code.
    const clens = [0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0];
    for (const l of clens) w.bits(l, 3);
    // Canonical 2-bit codes in symbol order 0,1,2,18 → 00,01,10,11.
    w.code(0b11, 2).bits(127, 7); // 18: 138 zeros (symbols 0..137)
    w.code(0b11, 2).bits(107, 7); // 18: 118 zeros (138..255)
    w.code(0b10, 2); // 256: length 2
    w.code(0b00, 2); // distance 0: length 0
    expect(corruptMessage(() => jsZlibCodec.decompress(w.finish(), dst))).toMatch(/incomplete literal\/length code/);
  });

  test('mutated streams: only Qcow2Error, and the JS decoder agrees with node:zlib', () => {
    const valid = fc
      .record({ bits: fc.integer({ min: 9, max: 14 }), seed: fc.integer({ min: 1, max: 1 << 30 }), pattern: fc.constantFrom('text', 'mixed', 'runs', 'sparse') as fc.Arbitrary<'text' | 'mixed' | 'runs' | 'sparse'> })
      .map(({ bits, seed, pattern }) => {
        const data = makeCluster(1 << bits, pattern, seed);
        const stream = deflateRawSync(data, { windowBits: 12, level: 1 + (seed % 9) });
        // The cluster size travels in the first two bytes (a prefix the run strips off).
        return Uint8Array.of(bits, 0, ...stream);
      });
    const run = (codec: ClusterCodec, input: Uint8Array): Uint8Array | string => {
      const bits = Math.min(14, Math.max(9, input[0] ?? 9));
      const dst = new Uint8Array(1 << bits);
      try {
        codec.decompress(input.subarray(2), dst);
        return dst;
      } catch (error) {
        if (!isQcow2Error(error)) throw error;
        return error.code;
      }
    };
    assertThrowsOnlyQcow2Error(mutatedBytes(valid), (input) => run(jsZlibCodec, input), { numRuns: 400 });
    fc.assert(
      fc.property(mutatedBytes(valid), (input) => {
        const ours = run(jsZlibCodec, input);
        const zlib = run(nodeZlibCodec, input);
        if (typeof ours === 'string' || typeof zlib === 'string') expect(ours).toEqual(zlib);
        else expect(equalBytes(ours, zlib)).toBe(true);
      }),
      { numRuns: 400 },
    );
  });
});
