import { expect, test } from 'vitest';
import { xxh64Low32 } from '../src/xxh64.js';

// Low 32 bits of XXH64(seed 0), read from the checksums the zstd CLI (`zstd --check`) wrote
// for these inputs: every path (under 32 bytes, stripes, 8/4/1-byte tails).
const VECTORS: [number, number][] = [
  [0, 0x51d8e999], [1, 0xc88952d8], [3, 0x8302465e], [4, 0xbea12239], [7, 0xcb41b73e],
  [8, 0x94424214], [9, 0x7f332d17], [31, 0x71efc46c], [32, 0x901ad561], [33, 0xced773eb],
  [63, 0x6674ed87], [64, 0x330bcb69], [100, 0xa0caf5b9], [1000, 0x595d136d], [4096, 0x2e5df8c1],
  [65536, 0x945c9def],
];

function input(n: number): Uint8Array {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) d[i] = (Math.imul(i + 1, 2654435761) >>> 24) ^ (i & 0xff);
  return d;
}

test.each(VECTORS)('XXH64 of %i bytes matches libzstd', (n, expected) => {
  expect(xxh64Low32(input(n)).toString(16)).toBe(expected.toString(16));
});
