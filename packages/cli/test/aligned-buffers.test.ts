import { afterEach, describe, expect, it, vi } from 'vitest';
import { ioBuffer, pageAlignedBuffers } from '../src/aligned-buffers.js';
import { isZero, zeroRuns } from '../src/zero-scan.js';

describe('pageAlignedBuffers', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('hands out zeroed, disjoint buffers at 64 KiB boundaries of one memory', () => {
    const buffers = pageAlignedBuffers(3, 2 * 1024 * 1024 + 100);
    expect(buffers).toHaveLength(3);
    const memory = buffers[0]!.buffer;
    for (const [i, b] of buffers.entries()) {
      expect(b.length).toBe(2 * 1024 * 1024 + 100);
      expect(b.buffer).toBe(memory);
      expect(b.byteOffset % 65536).toBe(0);
      expect(b.byteOffset).toBe(i * 33 * 65536);
      expect(isZero(b)).toBe(true);
    }
    buffers[1]!.fill(0xff);
    expect(isZero(buffers[0]!)).toBe(true);
    expect(isZero(buffers[2]!)).toBe(true);
    // The sector scans work on views of WebAssembly memory.
    buffers[2]!.fill(1, 512, 1024);
    expect(zeroRuns(buffers[2]!.subarray(0, 2048), 512)).toEqual([0, 512, 1024, 2048]);
  });

  it('falls back to ordinary buffers without WebAssembly memory', () => {
    vi.stubGlobal('WebAssembly', undefined);
    const buffers = pageAlignedBuffers(2, 1000);
    expect(buffers.map((b) => b.length)).toEqual([1000, 1000]);
    expect(buffers[0]!.buffer).not.toBe(buffers[1]!.buffer);
  });

  it('falls back when the memory cannot be made', () => {
    vi.stubGlobal('WebAssembly', {
      Memory: class {
        constructor() {
          throw new RangeError('WebAssembly.Memory(): could not allocate memory');
        }
      },
    });
    const buffers = pageAlignedBuffers(2, 4096);
    expect(buffers.map((b) => b.length)).toEqual([4096, 4096]);
  });
});

describe('ioBuffer', () => {
  it('is page-aligned WebAssembly memory from 128 KiB on, an ordinary buffer below', () => {
    const large = ioBuffer(128 * 1024);
    expect(large.length).toBe(128 * 1024);
    expect(large.byteOffset).toBe(0);
    expect(large.buffer.byteLength % 65536).toBe(0);
    expect(isZero(large)).toBe(true);
    const odd = ioBuffer(200 * 1024 + 3);
    expect(odd.length).toBe(200 * 1024 + 3);
    expect(odd.buffer.byteLength).toBe(4 * 65536); // whole WebAssembly pages
    const small = ioBuffer(128 * 1024 - 1);
    expect(small.length).toBe(128 * 1024 - 1);
    expect(small.buffer.byteLength).toBe(128 * 1024 - 1); // its own ArrayBuffer, no page rounding
    expect(isZero(small)).toBe(true);
  });
});
