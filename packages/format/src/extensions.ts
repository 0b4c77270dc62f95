import { decodeString, encodeString, readU64, viewOf, writeU64 } from './binary.js';
import { corrupt, hex, invalidArgument } from './errors.js';
import { AUTOCLEAR_BITMAPS, type FeatureNameEntry } from './features.js';
import { CRYPT_LUKS, type Qcow2Header } from './header.js';
import {
  FEATURE_NAME_ENTRY_SIZE,
  FEATURE_NAME_LENGTH,
  MAX_BITMAP_DIRECTORY_SIZE,
  MAX_BITMAPS,
} from './limits.js';

/** Header extension types (docs/interop/qcow2.txt, "Header extensions"). */
export const HEADER_EXT_END = 0x00000000;
export const HEADER_EXT_BACKING_FORMAT = 0xe2792aca;
export const HEADER_EXT_FEATURE_TABLE = 0x6803f857;
export const HEADER_EXT_BITMAPS = 0x23852875;
export const HEADER_EXT_ENCRYPTION = 0x0537be77;
export const HEADER_EXT_DATA_FILE = 0x44415441;

/** qemu keeps the backing format in a 16-byte C string: names of 16 bytes or more are refused. */
export const MAX_BACKING_FORMAT_LENGTH = 15;
/** Data sizes of the fixed-size extensions. */
export const BITMAPS_EXT_SIZE = 24;
export const ENCRYPTION_EXT_SIZE = 16;

/** Backing file format name (0xe2792aca), e.g. `qcow2` or `raw`. */
export interface BackingFormatExtension {
  kind: 'backing-format';
  /** The name decoded as UTF-8. */
  name: string;
  /** The raw bytes, present only when they are not the UTF-8 encoding of `name`. */
  nameBytes?: Uint8Array;
}

/** External data file name (0x44415441). */
export interface DataFileExtension {
  kind: 'data-file';
  name: string;
  /** The raw bytes, present only when they are not the UTF-8 encoding of `name`. */
  nameBytes?: Uint8Array;
}

/** Feature name table (0x6803f857): 48-byte entries. */
export interface FeatureNameTableExtension {
  kind: 'feature-names';
  entries: FeatureNameEntry[];
}

/** Bitmaps extension (0x23852875). */
export interface BitmapsExtension {
  kind: 'bitmaps';
  nbBitmaps: number;
  /** Must be zero; kept as read because qemu ignores the extension (reserved included) when the autoclear bit is clear. */
  reserved: number;
  bitmapDirectorySize: number;
  bitmapDirectoryOffset: number;
}

/** Full disk encryption header pointer (0x0537be77): where the LUKS header lives. */
export interface EncryptionExtension {
  kind: 'encryption';
  offset: number;
  length: number;
}

/** Any other extension, kept byte for byte so that rewriting the header preserves it. */
export interface UnknownExtension {
  kind: 'unknown';
  magic: number;
  data: Uint8Array;
}

export type HeaderExtension =
  | BackingFormatExtension
  | DataFileExtension
  | FeatureNameTableExtension
  | BitmapsExtension
  | EncryptionExtension
  | UnknownExtension;

export type HeaderExtensionKind = HeaderExtension['kind'];

const MAGIC_OF: Record<Exclude<HeaderExtensionKind, 'unknown'>, number> = {
  'backing-format': HEADER_EXT_BACKING_FORMAT,
  'data-file': HEADER_EXT_DATA_FILE,
  'feature-names': HEADER_EXT_FEATURE_TABLE,
  bitmaps: HEADER_EXT_BITMAPS,
  encryption: HEADER_EXT_ENCRYPTION,
};

const KNOWN_MAGICS: ReadonlySet<number> = new Set([HEADER_EXT_END, ...Object.values(MAGIC_OF)]);

/** The extension type number of an extension. */
export function headerExtensionMagic(ext: HeaderExtension): number {
  return ext.kind === 'unknown' ? ext.magic : MAGIC_OF[ext.kind];
}

function extName(magic: number): string {
  return `header extension 0x${magic.toString(16).padStart(8, '0')}`;
}

function extLabel(magic: number, offset: number): string {
  return `${extName(magic)} at ${hex(offset)}`;
}

// ---------------------------------------------------------------------------------------------
// Byte strings

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A name stored as bytes in the image: the UTF-8 decoding, plus the raw bytes when the decoding
 * does not re-encode to them (so nothing is lost).
 */
export function decodeByteString(bytes: Uint8Array): { name: string; nameBytes?: Uint8Array } {
  const name = decodeString(bytes);
  return sameBytes(encodeString(name), bytes) ? { name } : { name, nameBytes: bytes.slice() };
}

/** The bytes of a name from {@link decodeByteString}: `nameBytes` when present, else UTF-8. */
export function encodeByteString(value: { name: string; nameBytes?: Uint8Array }): Uint8Array {
  return value.nameBytes ?? encodeString(value.name);
}

function decodeFeatureName(field: Uint8Array): { name: string; nameBytes?: Uint8Array } {
  let end = field.indexOf(0);
  if (end < 0) end = field.byteLength;
  const name = decodeString(field.subarray(0, end));
  const encoded = encodeString(name);
  let canonical = encoded.byteLength === end && sameBytes(encoded, field.subarray(0, end));
  for (let i = end; canonical && i < field.byteLength; i++) if (field[i] !== 0) canonical = false;
  return canonical ? { name } : { name, nameBytes: field.slice() };
}

function encodeFeatureName(entry: FeatureNameEntry, index: number): Uint8Array {
  if (entry.nameBytes !== undefined) {
    if (entry.nameBytes.byteLength !== FEATURE_NAME_LENGTH) {
      throw invalidArgument(`feature name table entry ${index}: nameBytes must be ${FEATURE_NAME_LENGTH} bytes, got ${entry.nameBytes.byteLength}`);
    }
    return entry.nameBytes;
  }
  const encoded = encodeString(entry.name);
  if (encoded.byteLength > FEATURE_NAME_LENGTH || encoded.includes(0)) {
    throw invalidArgument(
      `feature name table entry ${index}: name ${JSON.stringify(entry.name)} must be at most ${FEATURE_NAME_LENGTH} UTF-8 bytes without NUL`,
    );
  }
  const field = new Uint8Array(FEATURE_NAME_LENGTH);
  field.set(encoded);
  return field;
}

// ---------------------------------------------------------------------------------------------
// Decode

/** Decodes the data of one extension whose type is `magic`. `at` is its offset, for messages. */
function decodeExtension(magic: number, data: Uint8Array, at: number): HeaderExtension {
  const view = viewOf(data);
  switch (magic) {
    case HEADER_EXT_BACKING_FORMAT:
      return { kind: 'backing-format', ...decodeByteString(data) };
    case HEADER_EXT_DATA_FILE:
      return { kind: 'data-file', ...decodeByteString(data) };
    case HEADER_EXT_FEATURE_TABLE: {
      if (data.byteLength % FEATURE_NAME_ENTRY_SIZE !== 0) {
        throw corrupt(
          `${extLabel(magic, at)} (feature name table): length ${data.byteLength} is not a multiple of ${FEATURE_NAME_ENTRY_SIZE}`,
        );
      }
      const entries: FeatureNameEntry[] = [];
      for (let p = 0; p < data.byteLength; p += FEATURE_NAME_ENTRY_SIZE) {
        entries.push({
          type: data[p]!,
          bit: data[p + 1]!,
          ...decodeFeatureName(data.subarray(p + 2, p + FEATURE_NAME_ENTRY_SIZE)),
        });
      }
      return { kind: 'feature-names', entries };
    }
    case HEADER_EXT_BITMAPS:
      if (data.byteLength !== BITMAPS_EXT_SIZE) {
        throw corrupt(`${extLabel(magic, at)} (bitmaps): length ${data.byteLength}, expected ${BITMAPS_EXT_SIZE}`);
      }
      return {
        kind: 'bitmaps',
        nbBitmaps: view.getUint32(0),
        reserved: view.getUint32(4),
        bitmapDirectorySize: readU64(view, 8, `${extLabel(magic, at)} bitmap_directory_size`),
        bitmapDirectoryOffset: readU64(view, 16, `${extLabel(magic, at)} bitmap_directory_offset`),
      };
    case HEADER_EXT_ENCRYPTION:
      if (data.byteLength !== ENCRYPTION_EXT_SIZE) {
        throw corrupt(
          `${extLabel(magic, at)} (full disk encryption header pointer): length ${data.byteLength}, expected ${ENCRYPTION_EXT_SIZE}`,
        );
      }
      return {
        kind: 'encryption',
        offset: readU64(view, 0, `${extLabel(magic, at)} offset`),
        length: readU64(view, 8, `${extLabel(magic, at)} length`),
      };
    default:
      return { kind: 'unknown', magic, data: data.slice() };
  }
}

export interface DecodedHeaderExtensions {
  extensions: HeaderExtension[];
  /** True when the area ended with an end marker (qemu always writes one). */
  endMarker: boolean;
  /** Offset just past the last byte read (after the end marker, or `end`). */
  endOffset: number;
}

function scan(
  bytes: Uint8Array,
  start: number,
  end: number,
  partial: HeaderExtension[] | undefined,
): DecodedHeaderExtensions {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end > bytes.byteLength) {
    throw corrupt(`header extensions: area ${hex(start)}..${hex(end)} is outside the ${bytes.byteLength} bytes given`);
  }
  const view = viewOf(bytes);
  const extensions: HeaderExtension[] = partial ?? [];
  let offset = start;
  // qemu's loop (qcow2_read_extensions): stop at the end marker, or when the area is used up.
  while (offset < end) {
    if (offset + 8 > end) {
      throw corrupt(`header extension at ${hex(offset)}: its 8-byte type and length run past the end of the area at ${hex(end)} (header extension too large)`);
    }
    const magic = view.getUint32(offset);
    const length = view.getUint32(offset + 4);
    const dataAt = offset + 8;
    if (length > end - dataAt) {
      throw corrupt(`${extLabel(magic, offset)}: length ${length} runs past the end of the area at ${hex(end)} (header extension too large)`);
    }
    if (magic === HEADER_EXT_END) {
      return { extensions, endMarker: true, endOffset: dataAt };
    }
    extensions.push(decodeExtension(magic, bytes.subarray(dataAt, dataAt + length), offset));
    offset = dataAt + Math.ceil(length / 8) * 8;
  }
  return { extensions, endMarker: false, endOffset: Math.min(offset, end) };
}

/**
 * Decodes the header extension area of `bytes` (normally the first cluster) from `start`
 * (header_length) up to `end` (backing_file_offset, or the cluster size when there is no backing
 * file). Stops at the end marker, or, as qemu does, when the area is used up. Each extension's
 * length must fit in the area; padding to 8 bytes is skipped (and not kept: qemu writes zeros).
 * Fixed-size extensions must have their size; a feature name table a multiple of 48 bytes.
 * Semantic checks against the header are {@link validateHeaderExtensions}'s.
 */
export function decodeHeaderExtensions(bytes: Uint8Array, start: number, end: number): DecodedHeaderExtensions {
  return scan(bytes, start, end, undefined);
}

/**
 * The extensions that decode before the first error, as qemu's feature reporting reads them:
 * never throws for a malformed area, only stops. Used to name unknown incompatible features.
 */
export function decodeHeaderExtensionsLeniently(bytes: Uint8Array, start: number, end: number): HeaderExtension[] {
  const partial: HeaderExtension[] = [];
  try {
    scan(bytes, start, end, partial);
  } catch {
    // Keep what was read before the error.
  }
  return partial;
}

// ---------------------------------------------------------------------------------------------
// Encode

function extensionData(ext: HeaderExtension, index: number): Uint8Array {
  switch (ext.kind) {
    case 'backing-format':
    case 'data-file':
      return encodeByteString(ext);
    case 'feature-names': {
      const out = new Uint8Array(ext.entries.length * FEATURE_NAME_ENTRY_SIZE);
      ext.entries.forEach((entry, i) => {
        for (const [field, value] of [['type', entry.type], ['bit', entry.bit]] as const) {
          if (!Number.isInteger(value) || value < 0 || value > 0xff) {
            throw invalidArgument(`feature name table entry ${i}: ${field} ${value} is not a byte`);
          }
        }
        const p = i * FEATURE_NAME_ENTRY_SIZE;
        out[p] = entry.type;
        out[p + 1] = entry.bit;
        out.set(encodeFeatureName(entry, i), p + 2);
      });
      return out;
    }
    case 'bitmaps': {
      const out = new Uint8Array(BITMAPS_EXT_SIZE);
      const view = viewOf(out);
      for (const [field, value] of [['nbBitmaps', ext.nbBitmaps], ['reserved', ext.reserved]] as const) {
        if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
          throw invalidArgument(`header extension ${index} (bitmaps): ${field} ${value} is not an unsigned 32-bit integer`);
        }
      }
      view.setUint32(0, ext.nbBitmaps);
      view.setUint32(4, ext.reserved);
      writeU64(view, 8, ext.bitmapDirectorySize, 'bitmaps extension bitmap_directory_size');
      writeU64(view, 16, ext.bitmapDirectoryOffset, 'bitmaps extension bitmap_directory_offset');
      return out;
    }
    case 'encryption': {
      const out = new Uint8Array(ENCRYPTION_EXT_SIZE);
      const view = viewOf(out);
      writeU64(view, 0, ext.offset, 'encryption extension offset');
      writeU64(view, 8, ext.length, 'encryption extension length');
      return out;
    }
    case 'unknown':
      if (!Number.isInteger(ext.magic) || ext.magic < 0 || ext.magic > 0xffff_ffff || KNOWN_MAGICS.has(ext.magic)) {
        throw invalidArgument(
          `header extension ${index}: ${hex(ext.magic)} cannot be an unknown extension (it is not a 32-bit type, or it is the end marker or a known type)`,
        );
      }
      return ext.data;
    default:
      throw invalidArgument(`header extension ${index}: unknown kind ${String((ext as { kind: unknown }).kind)}`);
  }
}

/** Bytes an extension occupies in the area: 8 + its data padded to a multiple of 8. */
export function headerExtensionSize(ext: HeaderExtension): number {
  return 8 + Math.ceil(extensionData(ext, 0).byteLength / 8) * 8;
}

/**
 * Encodes the extension area: each extension (type, length, data, zero padding to 8 bytes) in
 * the given order, then the 8-byte end marker. This is how qemu's qcow2_update_header writes it.
 */
export function encodeHeaderExtensions(extensions: readonly HeaderExtension[]): Uint8Array {
  const datas = extensions.map((ext, i) => extensionData(ext, i));
  let total = 8;
  for (const d of datas) total += 8 + Math.ceil(d.byteLength / 8) * 8;
  const out = new Uint8Array(total);
  const view = viewOf(out);
  let offset = 0;
  extensions.forEach((ext, i) => {
    const data = datas[i]!;
    view.setUint32(offset, headerExtensionMagic(ext));
    view.setUint32(offset + 4, data.byteLength);
    out.set(data, offset + 8);
    offset += 8 + Math.ceil(data.byteLength / 8) * 8;
  });
  // The end marker: eight zero bytes, already there.
  return out;
}

// ---------------------------------------------------------------------------------------------
// Semantic checks

/** The first extension of a kind, typed. */
export function findHeaderExtension<K extends HeaderExtensionKind>(
  extensions: readonly HeaderExtension[],
  kind: K,
): Extract<HeaderExtension, { kind: K }> | undefined {
  return extensions.find((e): e is Extract<HeaderExtension, { kind: K }> => e.kind === kind);
}

/** The entries of the feature name table extension, if the image has one. */
export function featureNameTableOf(extensions: readonly HeaderExtension[]): FeatureNameEntry[] | undefined {
  return findHeaderExtension(extensions, 'feature-names')?.entries;
}

/**
 * qemu's checks on the extensions (qcow2_read_extensions, qcow2_do_open), plus the spec's
 * at-most-once rule for known types: a backing format name under 16 bytes; an encryption pointer
 * only with LUKS, cluster-aligned, and present whenever crypt_method is LUKS; when the bitmaps
 * autoclear bit is set, a bitmaps extension with 1..65535 bitmaps, reserved zero, an aligned
 * directory offset and a directory of at most 1024 × 65535 bytes. (With the bit clear, qemu ignores
 * the bitmaps extension, and so does this.)
 */
export function validateHeaderExtensions(
  header: Pick<Qcow2Header, 'clusterBits' | 'cryptMethod' | 'autoclearFeatures' | 'headerLength'>,
  extensions: readonly HeaderExtension[],
): void {
  const clusterSize = 2 ** header.clusterBits;
  const seen = new Set<HeaderExtensionKind>();
  let offset = header.headerLength;
  let encryption = false;
  for (const ext of extensions) {
    const magic = headerExtensionMagic(ext);
    const label = extLabel(magic, offset);
    if (ext.kind !== 'unknown') {
      if (seen.has(ext.kind)) {
        throw corrupt(`${label} (${ext.kind}): appears more than once`);
      }
      seen.add(ext.kind);
    }
    switch (ext.kind) {
      case 'backing-format': {
        const length = encodeByteString(ext).byteLength;
        if (length > MAX_BACKING_FORMAT_LENGTH) {
          throw corrupt(`${label} (backing format): length ${length} is too large (>= ${MAX_BACKING_FORMAT_LENGTH + 1})`);
        }
        break;
      }
      case 'encryption':
        encryption = true;
        if (header.cryptMethod !== CRYPT_LUKS) {
          throw corrupt(`${label} (full disk encryption header pointer): only expected with LUKS encryption, crypt_method is ${header.cryptMethod}`);
        }
        if (ext.offset % clusterSize !== 0) {
          throw corrupt(`${label} (full disk encryption header pointer): offset ${hex(ext.offset)} is not cluster-aligned`);
        }
        break;
      case 'bitmaps':
        if ((header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) break;
        if (ext.reserved !== 0) {
          throw corrupt(`${label} (bitmaps): reserved field is ${hex(ext.reserved)}, not zero`);
        }
        if (ext.nbBitmaps > MAX_BITMAPS) {
          throw corrupt(`${label} (bitmaps): nb_bitmaps ${ext.nbBitmaps} exceeds the maximum of ${MAX_BITMAPS}`);
        }
        if (ext.nbBitmaps === 0) {
          throw corrupt(`${label} (bitmaps): nb_bitmaps is 0`);
        }
        if (ext.bitmapDirectoryOffset % clusterSize !== 0) {
          throw corrupt(`${label} (bitmaps): bitmap_directory_offset ${hex(ext.bitmapDirectoryOffset)} is not cluster-aligned`);
        }
        if (ext.bitmapDirectorySize > MAX_BITMAP_DIRECTORY_SIZE) {
          throw corrupt(
            `${label} (bitmaps): bitmap_directory_size ${ext.bitmapDirectorySize} exceeds the maximum of ${MAX_BITMAP_DIRECTORY_SIZE}`,
          );
        }
        break;
      default:
        break;
    }
    offset += headerExtensionSize(ext);
  }
  if (header.cryptMethod === CRYPT_LUKS && !encryption) {
    throw corrupt(`header crypt_method at 0x20: LUKS (2) without a full disk encryption header pointer extension`);
  }
}
