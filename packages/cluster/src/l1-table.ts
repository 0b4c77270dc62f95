import { corrupt, hex, L1_ENTRY_SIZE, MAX_L1_ENTRIES, MAX_L1_SIZE_BYTES } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { readFully } from './read-fully.js';

/**
 * An L1 table held in memory as read: `size` big-endian 8-byte entries. Entries are checked
 * when they are used (as qemu checks them), not when the table is loaded, so that an image with
 * a damaged entry for a range nobody reads still opens.
 */
export interface L1Table {
  /** Offset of the table in the image file, named in messages. */
  readonly offset: number;
  /** Number of entries (l1_size for the active table, a snapshot's own l1_size for its view). */
  readonly size: number;
  /** The entries, big-endian, `size * 8` bytes. */
  readonly view: DataView;
}

/** An L1 table over entries already in memory (`bytes` must hold `size * 8` bytes). */
export function createL1Table(bytes: Uint8Array, offset: number, size: number): L1Table {
  if (!Number.isInteger(size) || size < 0 || size > MAX_L1_ENTRIES) {
    throw corrupt(`L1 table at ${hex(offset)}: ${size} entries exceed qemu's ${MAX_L1_SIZE_BYTES}-byte limit`);
  }
  if (bytes.byteLength < size * L1_ENTRY_SIZE) {
    throw corrupt(`L1 table at ${hex(offset)}: needs ${size * L1_ENTRY_SIZE} bytes, got ${bytes.byteLength}`);
  }
  return { offset, size, view: new DataView(bytes.buffer, bytes.byteOffset, size * L1_ENTRY_SIZE) };
}

/**
 * Reads an L1 table of `size` entries at `offset`. The size is checked against qemu's 32 MiB
 * limit before anything is allocated; entries past the end of the file read as zeros
 * (unallocated), as qemu reads them.
 */
export async function loadL1Table(storage: Storage, offset: number, size: number): Promise<L1Table> {
  if (!Number.isInteger(size) || size < 0 || size > MAX_L1_ENTRIES) {
    throw corrupt(`L1 table at ${hex(offset)}: ${size} entries exceed qemu's ${MAX_L1_SIZE_BYTES}-byte limit`);
  }
  const bytes = new Uint8Array(size * L1_ENTRY_SIZE);
  if (size > 0) await readFully(storage, bytes, offset);
  return createL1Table(bytes, offset, size);
}
