import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUTOCLEAR_BITMAPS,
  CRYPT_LUKS,
  decodeHeaderExtensions,
  decodeHeaderExtensionsLeniently,
  encodeHeaderExtensions,
  encodeString,
  headerExtensionSize,
  isQcow2Error,
  validateHeaderExtensions,
  type HeaderExtension,
  type Qcow2Error,
} from '@qcow2/format';
import {
  assertDecodeEncode,
  assertEncodeDecode,
  assertThrowsOnlyQcow2Error,
  hexOf,
  mutatedBytes,
} from '@qcow2/test-utils';
import { anyExtension, rawExtensionArea } from './header-arbitraries.js';

const decodeAll = (bytes: Uint8Array): HeaderExtension[] => decodeHeaderExtensions(bytes, 0, bytes.byteLength).extensions;

function thrown(run: () => unknown): Qcow2Error {
  try {
    run();
  } catch (e) {
    if (isQcow2Error(e)) return e;
    throw new Error(`not a Qcow2Error: ${String(e)}`);
  }
  throw new Error('did not throw');
}

function ext(magic: number, data: number[] | Uint8Array): Uint8Array {
  const d = Uint8Array.from(data);
  const out = new Uint8Array(8 + Math.ceil(d.length / 8) * 8);
  new DataView(out.buffer).setUint32(0, magic);
  new DataView(out.buffer).setUint32(4, d.length);
  out.set(d, 8);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const END = new Uint8Array(8);

describe('header extension laws', () => {
  it('decode(encode(list)) equals the list', () => {
    assertDecodeEncode(fc.array(anyExtension(), { maxLength: 8 }), encodeHeaderExtensions, decodeAll, { numRuns: 500 });
  });

  it('encode(decode(bytes)) equals the bytes for every valid area (any data, zero padding, end marker)', () => {
    assertEncodeDecode(rawExtensionArea(), decodeAll, encodeHeaderExtensions, { numRuns: 500 });
  });

  it('headerExtensionSize is what each extension takes in the area', () => {
    fc.assert(
      fc.property(fc.array(anyExtension(), { maxLength: 6 }), (list) => {
        expect(encodeHeaderExtensions(list).byteLength).toBe(8 + list.reduce((n, e) => n + headerExtensionSize(e), 0));
      }),
    );
  });

  it('decoding arbitrary and mutated areas throws only Qcow2Error, and the lenient decoder never throws', () => {
    const header = { clusterBits: 16, cryptMethod: CRYPT_LUKS, autoclearFeatures: AUTOCLEAR_BITMAPS, headerLength: 112 };
    const run = (b: Uint8Array): void => validateHeaderExtensions(header, decodeAll(b));
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 300 }), run, { numRuns: 1000 });
    assertThrowsOnlyQcow2Error(mutatedBytes(rawExtensionArea()), run, { numRuns: 2000 });
    fc.assert(
      fc.property(mutatedBytes(rawExtensionArea()), (b) => {
        decodeHeaderExtensionsLeniently(b, 0, b.byteLength);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('decodeHeaderExtensions', () => {
  it('decodes each known type', () => {
    const feature = new Uint8Array(48);
    feature.set([0, 3]);
    feature.set(encodeString('compression type'), 2);
    const bitmaps = new Uint8Array(24);
    new DataView(bitmaps.buffer).setUint32(0, 2);
    new DataView(bitmaps.buffer).setUint32(12, 80);
    new DataView(bitmaps.buffer).setUint32(20, 0x30000);
    const crypto = new Uint8Array(16);
    new DataView(crypto.buffer).setUint32(4, 0x20000);
    new DataView(crypto.buffer).setUint32(12, 0x1f000);
    const bytes = concat(
      ext(0xe2792aca, encodeString('qcow2')),
      ext(0x44415441, encodeString('data.raw')),
      ext(0x6803f857, feature),
      ext(0x23852875, bitmaps),
      ext(0x0537be77, crypto),
      ext(0x12345678, [1, 2, 3]),
      END,
      new Uint8Array([0xaa, 0xbb]), // after the end marker: not read
    );
    const decoded = decodeHeaderExtensions(bytes, 0, bytes.length);
    expect(decoded.endMarker).toBe(true);
    expect(decoded.endOffset).toBe(bytes.length - 2);
    expect(decoded.extensions).toEqual([
      { kind: 'backing-format', name: 'qcow2' },
      { kind: 'data-file', name: 'data.raw' },
      { kind: 'feature-names', entries: [{ type: 0, bit: 3, name: 'compression type' }] },
      { kind: 'bitmaps', nbBitmaps: 2, reserved: 0, bitmapDirectorySize: 80, bitmapDirectoryOffset: 0x30000 },
      { kind: 'encryption', offset: 0x20000, length: 0x1f000 },
      { kind: 'unknown', magic: 0x12345678, data: new Uint8Array([1, 2, 3]) },
    ]);
    expect(hexOf(encodeHeaderExtensions(decoded.extensions))).toBe(hexOf(bytes.subarray(0, bytes.length - 2)));
  });

  it('keeps names that are not UTF-8, and feature names with bytes after the NUL, byte for byte', () => {
    const feature = new Uint8Array(48);
    feature.set([0, 9, 0x61, 0x62, 0, 0x63], 0);
    const bytes = concat(ext(0xe2792aca, [0xff, 0x71]), ext(0x6803f857, feature), END);
    const list = decodeAll(bytes);
    expect(list[0]).toEqual({ kind: 'backing-format', name: '\ufffdq', nameBytes: new Uint8Array([0xff, 0x71]) });
    expect(list[1]).toMatchObject({ kind: 'feature-names', entries: [{ type: 0, bit: 9, name: 'ab' }] });
    expect(hexOf(encodeHeaderExtensions(list))).toBe(hexOf(bytes));
  });

  it('stops where the area ends without an end marker, as qemu does', () => {
    const bytes = concat(ext(0x12345678, [1, 2, 3, 4, 5, 6, 7, 8]));
    expect(decodeHeaderExtensions(bytes, 0, bytes.length)).toEqual({
      extensions: [{ kind: 'unknown', magic: 0x12345678, data: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) }],
      endMarker: false,
      endOffset: 16,
    });
    // The last extension's padding may run past the end of the area.
    const short = ext(0x12345678, [1, 2, 3]).subarray(0, 11);
    expect(decodeHeaderExtensions(short, 0, 11).extensions).toHaveLength(1);
  });

  it('does not keep non-zero padding (qemu writes zeros)', () => {
    const bytes = concat(ext(0xe2792aca, encodeString('raw')), END);
    bytes[12] = 0x55;
    expect(hexOf(encodeHeaderExtensions(decodeAll(bytes)))).toBe(hexOf(concat(ext(0xe2792aca, encodeString('raw')), END)));
  });

  it.each([
    ['an extension header past the area', concat(ext(0x12345678, [1]), new Uint8Array(4)), /header extension at 0x10: its 8-byte type and length run past.*too large/],
    ['data past the area', ext(0x12345678, [1, 2, 3, 4, 5, 6, 7, 8, 9]).subarray(0, 12), /header extension 0x12345678 at 0x0: length 9 runs past the end of the area at 0xc/],
    ['a feature table of 47 bytes', concat(ext(0x6803f857, new Uint8Array(47)), END), /0x6803f857 at 0x0 \(feature name table\): length 47 is not a multiple of 48/],
    ['a bitmaps extension of 16 bytes', concat(ext(0x23852875, new Uint8Array(16)), END), /0x23852875 at 0x0 \(bitmaps\): length 16, expected 24/],
    ['an encryption pointer of 24 bytes', concat(ext(0x0537be77, new Uint8Array(24)), END), /0x0537be77 at 0x0 \(full disk encryption header pointer\): length 24, expected 16/],
    ['an encryption offset above 2^53', concat(ext(0x0537be77, [0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), END), /0x0537be77 at 0x0 offset: value 0xff00000000000000 exceeds 2\^53/],
  ])('refuses %s', (_name, bytes, re) => {
    const e = thrown(() => decodeAll(bytes));
    expect(e.code).toBe('CORRUPT');
    expect(e.message).toMatch(re);
  });

  it('refuses an area outside the bytes given', () => {
    expect(thrown(() => decodeHeaderExtensions(new Uint8Array(8), 0, 16)).code).toBe('CORRUPT');
  });
});

describe('encodeHeaderExtensions refuses what would not decode back', () => {
  it.each<[string, HeaderExtension]>([
    ['an unknown extension with a known type', { kind: 'unknown', magic: 0xe2792aca, data: new Uint8Array(0) }],
    ['an unknown extension with the end type', { kind: 'unknown', magic: 0, data: new Uint8Array(0) }],
    ['a feature name of 47 bytes', { kind: 'feature-names', entries: [{ type: 0, bit: 0, name: 'x'.repeat(47) }] }],
    ['a feature name with a NUL', { kind: 'feature-names', entries: [{ type: 0, bit: 0, name: 'a\0b' }] }],
    ['a feature bit of 256', { kind: 'feature-names', entries: [{ type: 0, bit: 256, name: 'a' }] }],
    ['a bitmap count of 2^32', { kind: 'bitmaps', nbBitmaps: 2 ** 32, reserved: 0, bitmapDirectorySize: 0, bitmapDirectoryOffset: 0 }],
    ['an encryption length above 2^53', { kind: 'encryption', offset: 0, length: 2 ** 54 }],
  ])('%s', (_name, e) => {
    expect(thrown(() => encodeHeaderExtensions([e])).code).toBe('INVALID_ARGUMENT');
  });
});

describe('validateHeaderExtensions', () => {
  const base = { clusterBits: 16, cryptMethod: 0, autoclearFeatures: 0n, headerLength: 112 };
  const bitmaps = (o: Partial<Extract<HeaderExtension, { kind: 'bitmaps' }>> = {}): HeaderExtension => ({
    kind: 'bitmaps',
    nbBitmaps: 1,
    reserved: 0,
    bitmapDirectorySize: 40,
    bitmapDirectoryOffset: 0x50000,
    ...o,
  });

  it('accepts what qemu writes', () => {
    expect(() =>
      validateHeaderExtensions({ ...base, cryptMethod: CRYPT_LUKS, autoclearFeatures: AUTOCLEAR_BITMAPS }, [
        { kind: 'backing-format', name: 'qcow2' },
        { kind: 'encryption', offset: 0x30000, length: 0x1f5000 },
        bitmaps(),
        { kind: 'unknown', magic: 1, data: new Uint8Array(0) },
        { kind: 'unknown', magic: 1, data: new Uint8Array(0) },
      ]),
    ).not.toThrow();
  });

  it('ignores the bitmaps extension when the autoclear bit is clear, as qemu does', () => {
    expect(() => validateHeaderExtensions(base, [bitmaps({ nbBitmaps: 0, reserved: 7, bitmapDirectoryOffset: 3 })])).not.toThrow();
  });

  const bm = { ...base, autoclearFeatures: AUTOCLEAR_BITMAPS };
  it.each<[string, typeof base, HeaderExtension[], RegExp]>([
    ['a duplicate backing format', base, [{ kind: 'backing-format', name: 'raw' }, { kind: 'backing-format', name: 'raw' }], /0xe2792aca at 0x80 \(backing-format\): appears more than once/],
    ['a backing format of 16 bytes', base, [{ kind: 'backing-format', name: 'x'.repeat(16) }], /0xe2792aca at 0x70 \(backing format\): length 16 is too large/],
    ['an encryption pointer without LUKS', base, [{ kind: 'encryption', offset: 0x10000, length: 1 }], /only expected with LUKS encryption, crypt_method is 0/],
    ['a misaligned encryption header', { ...base, cryptMethod: CRYPT_LUKS }, [{ kind: 'encryption', offset: 0x10200, length: 1 }], /offset 0x10200 is not cluster-aligned/],
    ['LUKS without an encryption pointer', { ...base, cryptMethod: CRYPT_LUKS }, [], /crypt_method at 0x20: LUKS \(2\) without a full disk encryption header pointer/],
    ['bitmaps: reserved not zero', bm, [bitmaps({ reserved: 1 })], /\(bitmaps\): reserved field is 0x1, not zero/],
    ['bitmaps: 65536 bitmaps', bm, [bitmaps({ nbBitmaps: 65536 })], /nb_bitmaps 65536 exceeds the maximum of 65535/],
    ['bitmaps: none', bm, [bitmaps({ nbBitmaps: 0 })], /nb_bitmaps is 0/],
    ['bitmaps: misaligned directory', bm, [bitmaps({ bitmapDirectoryOffset: 0x50008 })], /bitmap_directory_offset 0x50008 is not cluster-aligned/],
    ['bitmaps: directory too large', bm, [bitmaps({ bitmapDirectorySize: 1024 * 65535 + 1 })], /bitmap_directory_size 67107841 exceeds the maximum of 67107840/],
  ])('refuses %s', (_name, header, list, re) => {
    const e = thrown(() => validateHeaderExtensions(header, list));
    expect(e.code).toBe('CORRUPT');
    expect(e.message).toMatch(re);
  });
});
