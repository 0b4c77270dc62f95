import { describe, expect, it } from 'vitest';
import { cvtstr, dumpBuffer, printReport, timestr } from '../src/io-format.js';
import { qdictHash, qdictOrder, toJsonPretty, dumpQObject } from '../src/qobject.js';
import { sizeToStr } from '../src/size-to-str.js';
import { pathCombine } from '../src/path-combine.js';
import { benchOffsets } from '../src/bench-plan.js';

describe('size_to_str', () => {
  it('formats like qemu-img info', () => {
    expect(sizeToStr(0)).toBe('0 B');
    expect(sizeToStr(1)).toBe('1 B');
    expect(sizeToStr(999)).toBe('999 B');
    expect(sizeToStr(1000)).toBe('0.977 KiB');
    expect(sizeToStr(196 * 1024)).toBe('196 KiB');
    expect(sizeToStr(1572864)).toBe('1.5 MiB');
    expect(sizeToStr(1073741824)).toBe('1 GiB');
    expect(sizeToStr(1912832)).toBe('1.82 MiB');
    expect(sizeToStr(999.5 * 1024)).toBe('1e+03 KiB');
  });
  it('refuses what is not a byte count', () => {
    expect(() => sizeToStr(-1)).toThrow(RangeError);
    expect(() => sizeToStr(1.5)).toThrow(RangeError);
  });
});

describe('qemu-io report formatting', () => {
  it('cvtstr', () => {
    expect(cvtstr(65536)).toBe('64 KiB');
    expect(cvtstr(1572864)).toBe('1.500 MiB');
    expect(cvtstr(512)).toBe('512 bytes');
    expect(cvtstr(0)).toBe('0 bytes');
    expect(cvtstr(1070071808)).toBe('1020.500 MiB');
    expect(cvtstr(1088)).toBe('1.062 KiB');
    expect(cvtstr(2 ** 60)).toBe('1 EiB');
  });
  it('timestr', () => {
    expect(timestr({ sec: 0, nsec: 1_234_567 }, false)).toBe('00.00 sec');
    expect(timestr({ sec: 0, nsec: 456_000_000 }, false)).toBe('00.46 sec');
    expect(timestr({ sec: 3725, nsec: 990_000_000 }, false)).toBe('1:02:05.99');
    expect(timestr({ sec: 0, nsec: 0 }, true)).toBe('0:00:00.00');
  });
  it('print_report', () => {
    expect(printReport('read', { sec: 1, nsec: 0 }, 0, 65536, 65536, 1, false)).toBe(
      'read 65536/65536 bytes at offset 0\n64 KiB, 1 ops; 0:00:01.00 (64 KiB/sec and 1.0000 ops/sec)\n',
    );
    expect(printReport('read', { sec: 2, nsec: 0 }, 0, 1024, 1024, 1, true)).toBe('1024,1,0:00:02.00,512.000,0.500\n');
  });
  it('dump_buffer', () => {
    const bytes = new Uint8Array(20).fill(0xab);
    bytes.set([0x41, 0x7a, 0x30, 0x20], 16);
    expect(dumpBuffer(bytes, 0x10)).toBe(
      '00000010:  ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab  ................\n' +
        '00000020:  41 7a 30 20  Az0.\n',
    );
  });
});

describe('QDict order and QObject output', () => {
  it('puts ImageInfo keys in the order qemu-img info --output=json prints them', () => {
    const dict = {
      filename: 'a',
      format: 'qcow2',
      'dirty-flag': false,
      'actual-size': 1,
      'virtual-size': 2,
      'cluster-size': 3,
      snapshots: [],
      'format-specific': 1,
    };
    expect(qdictOrder(dict)).toEqual([
      'snapshots',
      'virtual-size',
      'filename',
      'cluster-size',
      'format',
      'actual-size',
      'format-specific',
      'dirty-flag',
    ]);
    expect(qdictHash('')).toBe(12345);
  });
  it('pretty JSON: empty lists still break the line', () => {
    expect(toJsonPretty({ flags: [], name: 'b' })).toBe('{\n    "flags": [\n    ],\n    "name": "b"\n}');
    expect(toJsonPretty('é\n"\u0001😀')).toBe('"\\u00E9\\n\\"\\u0001\\uD83D\\uDE00"');
  });
  it('human dump: dashes become spaces, lists are numbered', () => {
    expect(dumpQObject({ 'refcount-bits': 16, bitmaps: [{ flags: ['auto'], name: 'b' }] }, 1)).toBe(
      '    bitmaps:\n        [0]:\n            flags:\n                [0]: auto\n            name: b\n    refcount bits: 16\n',
    );
  });
});

describe('path_combine', () => {
  it('keeps the directory of the image as spelled', () => {
    expect(pathCombine('top.qcow2', 'mid.qcow2')).toBe('mid.qcow2');
    expect(pathCombine('sub/top.qcow2', 'mid.qcow2')).toBe('sub/mid.qcow2');
    expect(pathCombine('/a/b/top.qcow2', '../mid.qcow2')).toBe('/a/b/../mid.qcow2');
    expect(pathCombine('sub/top.qcow2', '/abs/base')).toBe('/abs/base');
    expect(pathCombine('sub/top.qcow2', 'nbd:host:1')).toBe('nbd:host:1');
  });
});

describe('bench offsets', () => {
  it('advance by step and wrap modulo the image size (qemu 7.2)', () => {
    expect(benchOffsets(5, 0, 512 * 1024, 1024 * 1024, 65536)).toEqual([0, 524288, 0, 524288, 0]);
    expect(benchOffsets(4, 0, 768 * 1024, 1024 * 1024, 65536)).toEqual([0, 786432, 524288, 262144]);
    expect(benchOffsets(3, 5000, 4096, 4096, 4096)).toEqual([5000, 904, 904]);
    expect(benchOffsets(2, 0, 4096, 0, 4096)).toEqual([0, 0]);
  });
});
