import { alignUp, need, readU64, viewOf, writeU64 } from './binary.js';
import { corrupt, hex, invalidArgument, unsupported } from './errors.js';
import { decodeByteString, encodeByteString } from './extensions.js';
import { MAX_L1_ENTRIES, type TableContext } from './l1.js';
import { MAX_L1_SIZE_BYTES, MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOTS, MAX_SNAPSHOTS_SIZE_BYTES } from './limits.js';

/**
 * The snapshot table (docs/interop/qcow2.txt, "Snapshots"; qemu's QCowSnapshotHeader and
 * QCowSnapshotExtraData). Each entry, starting at an 8-byte boundary:
 *
 *    0..7   l1_table_offset        24..31  vm_clock_nsec
 *    8..11  l1_size                32..35  vm_state_size (32-bit)
 *   12..13  id_str_size            36..39  extra_data_size
 *   14..15  name_size              40..    extra data, then the id, then the name, then
 *   16..19  date_sec                       padding to a multiple of 8
 *   20..23  date_nsec
 *
 * Extra data: bytes 0..7 vm_state_size (64-bit), 8..15 the virtual disk size, 16..23 icount
 * (qemu's record/replay instruction counter, 2^64 − 1 when there is none), each present only
 * when extra_data_size covers all 8 of its bytes; the rest is kept byte for byte.
 */

/** Bytes of an entry's fixed part (QCowSnapshotHeader). */
export const SNAPSHOT_HEADER_SIZE = 40;
/** Bytes of the extra data fields this codec knows (QCowSnapshotExtraData). */
export const SNAPSHOT_KNOWN_EXTRA_DATA_SIZE = 24;
/** The icount qemu stores when the snapshot has none (-1ULL). */
export const SNAPSHOT_NO_ICOUNT = 0xffff_ffff_ffff_ffffn;

const U64_LIMIT = 1n << 64n;

export interface SnapshotEntry {
  /** Offset of the snapshot's L1 table (cluster-aligned). */
  l1TableOffset: number;
  /** Entries in the snapshot's L1 table. */
  l1Size: number;
  /** Unique ID string (qemu uses decimal numbers: "1", "2", ...), decoded as UTF-8. */
  id: string;
  /** The raw id, present only when its bytes are not the UTF-8 encoding of `id`. */
  idBytes?: Uint8Array;
  /** The name, decoded as UTF-8. */
  name: string;
  /** The raw name, present only when its bytes are not the UTF-8 encoding of `name`. */
  nameBytes?: Uint8Array;
  /** Wall-clock time of the snapshot: seconds since the Epoch, and nanoseconds. */
  dateSec: number;
  dateNsec: number;
  /**
   * Guest run time at the snapshot, in nanoseconds. A bigint: 2^53 ns is only 104 days, which a
   * guest may well have run, and such an image must still open.
   */
  vmClockNsec: bigint;
  /** The 32-bit vm_state_size field (qemu writes 0 there when the size needs 64 bits). */
  vmStateSize: number;
  /** Extra data bytes 0..7: the 64-bit VM state size; overrides `vmStateSize` when present. */
  vmStateSizeLarge?: number;
  /** Extra data bytes 8..15: the virtual disk size when the snapshot was taken. */
  diskSize?: number;
  /** Extra data bytes 16..23: icount (SNAPSHOT_NO_ICOUNT for none). */
  icount?: bigint;
  /**
   * Extra data after the last known field present, byte for byte (after byte 24 for qemu's own
   * entries; a partial known field, e.g. 4 bytes after vmStateSizeLarge, lands here too).
   */
  unknownExtraData: Uint8Array;
}

/** The VM state size qemu reports: the 64-bit field when present, else the 32-bit one. */
export function snapshotVmStateSize(entry: SnapshotEntry): number {
  return entry.vmStateSizeLarge ?? entry.vmStateSize;
}

/** extra_data_size of an entry: the known fields present plus the unknown bytes. */
export function snapshotExtraDataSize(entry: SnapshotEntry): number {
  const known = entry.icount !== undefined ? 24 : entry.diskSize !== undefined ? 16 : entry.vmStateSizeLarge !== undefined ? 8 : 0;
  return known + entry.unknownExtraData.byteLength;
}

/** Encoded size of an entry, padding to 8 included. */
export function snapshotEntrySize(entry: SnapshotEntry): number {
  return alignUp(
    SNAPSHOT_HEADER_SIZE + snapshotExtraDataSize(entry) + idBytesOf(entry).byteLength + nameBytesOf(entry).byteLength,
    8,
  );
}

function idBytesOf(entry: SnapshotEntry): Uint8Array {
  return entry.idBytes === undefined ? encodeByteString({ name: entry.id }) : entry.idBytes;
}

function nameBytesOf(entry: SnapshotEntry): Uint8Array {
  return entry.nameBytes === undefined ? encodeByteString({ name: entry.name }) : entry.nameBytes;
}

function whereAt(ctx: TableContext | undefined, offset: number): string {
  return ctx?.tableOffset === undefined
    ? `snapshot table entry at table byte ${hex(offset)}`
    : `snapshot table entry at ${hex(ctx.tableOffset + offset)}`;
}

function readU64Big(view: DataView, at: number): bigint {
  return (BigInt(view.getUint32(at)) << 32n) | BigInt(view.getUint32(at + 4));
}

function writeU64Big(view: DataView, at: number, value: bigint): void {
  view.setUint32(at, Number(value >> 32n));
  view.setUint32(at + 4, Number(value & 0xffff_ffffn));
}

/**
 * Decodes the entry starting at `offset` of `bytes` (the snapshot table, from its start).
 * Returns the entry and `end`, the offset just past its name; the next entry starts at `end`
 * rounded up to 8. Checks, before allocating: the 40 fixed bytes, extra_data_size ≤ 1024
 * (qemu's limit; UNSUPPORTED), the extra data, id and name within `bytes`, l1_size within
 * qemu's 32 MiB L1 limit, and the L1 offset aligned to the cluster (`ctx.clusterBits`, else 512).
 */
export function decodeSnapshotEntry(
  bytes: Uint8Array,
  offset: number,
  ctx?: TableContext,
): { entry: SnapshotEntry; end: number } {
  const where = whereAt(ctx, offset);
  need(bytes, offset, SNAPSHOT_HEADER_SIZE, where);
  const view = viewOf(bytes);
  const extraDataSize = view.getUint32(offset + 36);
  if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
    throw unsupported(`${where}: extra_data_size ${extraDataSize} exceeds qemu's limit of ${MAX_SNAPSHOT_EXTRA_DATA} bytes`);
  }
  const idSize = view.getUint16(offset + 12);
  const nameSize = view.getUint16(offset + 14);
  const extraAt = offset + SNAPSHOT_HEADER_SIZE;
  const idAt = extraAt + extraDataSize;
  const nameAt = idAt + idSize;
  const end = nameAt + nameSize;
  need(bytes, offset, end - offset, `${where} (extra data ${extraDataSize}, id ${idSize}, name ${nameSize} bytes)`);

  const l1TableOffset = readU64(view, offset, `${where}: l1_table_offset`);
  const alignment = 2 ** (ctx?.clusterBits ?? 9);
  if (l1TableOffset % alignment !== 0) {
    throw corrupt(`${where}: l1_table_offset ${hex(l1TableOffset)} is not aligned to ${alignment}`);
  }
  const l1Size = view.getUint32(offset + 8);
  if (l1Size > MAX_L1_ENTRIES) {
    throw corrupt(`${where}: l1_size ${l1Size} exceeds qemu's ${MAX_L1_SIZE_BYTES}-byte L1 table limit`);
  }

  const id = decodeByteString(bytes.subarray(idAt, nameAt));
  const name = decodeByteString(bytes.subarray(nameAt, end));
  const entry: SnapshotEntry = {
    l1TableOffset,
    l1Size,
    id: id.name,
    name: name.name,
    dateSec: view.getUint32(offset + 16),
    dateNsec: view.getUint32(offset + 20),
    vmClockNsec: readU64Big(view, offset + 24),
    vmStateSize: view.getUint32(offset + 32),
    unknownExtraData: new Uint8Array(0),
  };
  if (id.nameBytes !== undefined) entry.idBytes = id.nameBytes;
  if (name.nameBytes !== undefined) entry.nameBytes = name.nameBytes;
  let known = 0;
  if (extraDataSize >= 8) {
    entry.vmStateSizeLarge = readU64(view, extraAt, `${where}: extra data vm_state_size_large`);
    known = 8;
  }
  if (extraDataSize >= 16) {
    entry.diskSize = readU64(view, extraAt + 8, `${where}: extra data disk_size`);
    known = 16;
  }
  if (extraDataSize >= 24) {
    entry.icount = readU64Big(view, extraAt + 16);
    known = 24;
  }
  entry.unknownExtraData = bytes.slice(extraAt + known, idAt);
  return { entry, end };
}

function checkU32(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw invalidArgument(`snapshot ${field}: ${value} is not an unsigned 32-bit integer`);
  }
}

function checkU64Big(value: bigint, field: string): void {
  if (typeof value !== 'bigint' || value < 0n || value >= U64_LIMIT) {
    throw invalidArgument(`snapshot ${field}: ${String(value)} is not an unsigned 64-bit bigint`);
  }
}

/**
 * Encodes one entry, padded to a multiple of 8 bytes. Refuses (INVALID_ARGUMENT) what would not
 * decode back to `entry`: values outside their fields, id or name over 65535 UTF-8 bytes,
 * extra data over 1024 bytes, a known extra field present after an absent one, or unknown
 * extra data of 8 bytes or more after an absent known field (it would decode as that field).
 */
export function encodeSnapshotEntry(entry: SnapshotEntry): Uint8Array {
  const { l1TableOffset } = entry;
  if (!Number.isSafeInteger(l1TableOffset) || l1TableOffset < 0 || l1TableOffset % 512 !== 0) {
    throw invalidArgument(`snapshot l1_table_offset: ${l1TableOffset} is not a multiple of 512 in 0..2^53`);
  }
  checkU32(entry.l1Size, 'l1_size');
  if (entry.l1Size > MAX_L1_ENTRIES) {
    throw invalidArgument(`snapshot l1_size: ${entry.l1Size} exceeds qemu's ${MAX_L1_SIZE_BYTES}-byte L1 table limit`);
  }
  checkU32(entry.dateSec, 'date_sec');
  checkU32(entry.dateNsec, 'date_nsec');
  checkU32(entry.vmStateSize, 'vm_state_size');
  checkU64Big(entry.vmClockNsec, 'vm_clock_nsec');
  const id = idBytesOf(entry);
  const name = nameBytesOf(entry);
  if (id.byteLength > 0xffff) throw invalidArgument(`snapshot id: ${id.byteLength} bytes exceed 65535`);
  if (name.byteLength > 0xffff) throw invalidArgument(`snapshot name: ${name.byteLength} bytes exceed 65535`);

  const { vmStateSizeLarge, diskSize, icount, unknownExtraData } = entry;
  const chain: [string, unknown][] = [
    ['vmStateSizeLarge', vmStateSizeLarge],
    ['diskSize', diskSize],
    ['icount', icount],
  ];
  for (let i = 0; i < chain.length; i++) {
    if (chain[i]![1] !== undefined) continue;
    const later = chain.slice(i + 1).find(([, v]) => v !== undefined);
    if (later !== undefined) {
      throw invalidArgument(`snapshot extra data: ${later[0]} is present but ${chain[i]![0]} is not`);
    }
    if (unknownExtraData.byteLength >= 8) {
      throw invalidArgument(
        `snapshot extra data: ${unknownExtraData.byteLength} unknown bytes after an absent ${chain[i]![0]} would decode as ${chain[i]![0]}`,
      );
    }
    break;
  }
  const extraDataSize = snapshotExtraDataSize(entry);
  if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
    throw invalidArgument(`snapshot extra data: ${extraDataSize} bytes exceed qemu's limit of ${MAX_SNAPSHOT_EXTRA_DATA}`);
  }

  const bytes = new Uint8Array(alignUp(SNAPSHOT_HEADER_SIZE + extraDataSize + id.byteLength + name.byteLength, 8));
  const view = viewOf(bytes);
  writeU64(view, 0, l1TableOffset, 'snapshot l1_table_offset');
  view.setUint32(8, entry.l1Size);
  view.setUint16(12, id.byteLength);
  view.setUint16(14, name.byteLength);
  view.setUint32(16, entry.dateSec);
  view.setUint32(20, entry.dateNsec);
  writeU64Big(view, 24, entry.vmClockNsec);
  view.setUint32(32, entry.vmStateSize);
  view.setUint32(36, extraDataSize);
  let at = SNAPSHOT_HEADER_SIZE;
  if (vmStateSizeLarge !== undefined) {
    writeU64(view, at, vmStateSizeLarge, 'snapshot vmStateSizeLarge');
    at += 8;
  }
  if (diskSize !== undefined) {
    writeU64(view, at, diskSize, 'snapshot diskSize');
    at += 8;
  }
  if (icount !== undefined) {
    checkU64Big(icount, 'icount');
    writeU64Big(view, at, icount);
    at += 8;
  }
  bytes.set(unknownExtraData, at);
  at += unknownExtraData.byteLength;
  bytes.set(id, at);
  bytes.set(name, at + id.byteLength);
  return bytes;
}

/**
 * The `count` (nb_snapshots) entries of a snapshot table, `bytes` starting at snapshots_offset.
 * The last entry's padding need not be present (qemu's snapshots_size does not count it).
 * `count` is checked against qemu's 65536 before anything is allocated, the table length
 * against its 64 MiB limit, and each entry as {@link decodeSnapshotEntry} does.
 */
export function decodeSnapshotTable(bytes: Uint8Array, count: number, ctx?: TableContext): SnapshotEntry[] {
  const where = ctx?.tableOffset === undefined ? 'snapshot table' : `snapshot table at ${hex(ctx.tableOffset)}`;
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument(`${where}: count ${count} is not a non-negative integer`);
  }
  if (count > MAX_SNAPSHOTS) {
    throw corrupt(`${where}: ${count} snapshots exceed qemu's limit of ${MAX_SNAPSHOTS}`);
  }
  need(bytes, 0, count * SNAPSHOT_HEADER_SIZE, `${where} of ${count} entries`);
  const entries = new Array<SnapshotEntry>(count);
  let offset = 0;
  let tableLength = 0;
  for (let i = 0; i < count; i++) {
    offset = alignUp(offset, 8);
    const { entry, end } = decodeSnapshotEntry(bytes, offset, ctx);
    tableLength += end - offset;
    if (tableLength > MAX_SNAPSHOTS_SIZE_BYTES) {
      throw corrupt(`${where}: entries up to ${i} exceed qemu's ${MAX_SNAPSHOTS_SIZE_BYTES}-byte limit`);
    }
    entries[i] = entry;
    offset = end;
  }
  return entries;
}

/** Encodes a snapshot table: each entry as {@link encodeSnapshotEntry}, padded to 8. */
export function encodeSnapshotTable(entries: readonly SnapshotEntry[]): Uint8Array {
  if (entries.length > MAX_SNAPSHOTS) {
    throw invalidArgument(`snapshot table: ${entries.length} snapshots exceed qemu's limit of ${MAX_SNAPSHOTS}`);
  }
  const parts = entries.map(encodeSnapshotEntry);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
