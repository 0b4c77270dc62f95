import { corrupt, hex, L1_ENTRY_SIZE, L1E_COPIED_HI, MAX_L1_ENTRIES, MAX_L1_SIZE_BYTES } from '@qcow2/format';
import type { L1Table } from './l1-table.js';

const TWO_POW_32 = 0x1_0000_0000;
const OFFSET_MASK_HI = 0x00ff_ffff;
const OFFSET_MASK_LO = 0xffff_fe00;
const ABOVE_2_53_HI = 0x00e0_0000;
/** qemu writes L1 entries one 512-byte sector (64 entries) at a time. */
const ENTRIES_PER_SECTOR = 64;

/**
 * The active L1 table of a writable image: an {@link L1Table} whose entries, offset and size
 * change (new L2 tables, L1 growth). Readers (ClusterMap) see every change at once: entries are
 * updated synchronously and a grown table replaces the old one in one step.
 */
export class ActiveL1Table implements L1Table {
  #offset: number;
  #size: number;
  #bytes: Uint8Array;
  #view: DataView;
  #version = 0;

  constructor(offset: number, size: number, bytes: Uint8Array) {
    if (!Number.isInteger(size) || size < 0 || size > MAX_L1_ENTRIES) {
      throw corrupt(`L1 table at ${hex(offset)}: ${size} entries exceed qemu's ${MAX_L1_SIZE_BYTES}-byte limit`);
    }
    if (bytes.byteLength < size * L1_ENTRY_SIZE) {
      throw corrupt(`L1 table at ${hex(offset)}: needs ${size * L1_ENTRY_SIZE} bytes, got ${bytes.byteLength}`);
    }
    this.#offset = offset;
    this.#size = size;
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, size * L1_ENTRY_SIZE);
  }

  /** A writable copy of a table as loaded. */
  static from(table: L1Table): ActiveL1Table {
    const bytes = new Uint8Array(table.size * L1_ENTRY_SIZE);
    bytes.set(new Uint8Array(table.view.buffer, table.view.byteOffset, bytes.length));
    return new ActiveL1Table(table.offset, table.size, bytes);
  }

  get offset(): number {
    return this.#offset;
  }

  get size(): number {
    return this.#size;
  }

  get view(): DataView {
    return this.#view;
  }

  /** Changes whenever an entry, the offset or the size changes (for callers that index the entries). */
  get version(): number {
    return this.#version;
  }

  /** The entries, big-endian (`size * 8` bytes). */
  get bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#size * L1_ENTRY_SIZE);
  }

  /**
   * The L2 table offset of entry `index` (0 when none, or past the table). CORRUPT when it is
   * not cluster-aligned or lies above 2^53.
   */
  l2Offset(index: number, clusterSize: number): number {
    if (index >= this.#size) return 0;
    const hi = this.#view.getUint32(index * 8);
    const lo = this.#view.getUint32(index * 8 + 4);
    if ((hi & ABOVE_2_53_HI) !== 0) {
      throw corrupt(`L1 entry at ${hex(this.#offset)} index ${index}: L2 table offset exceeds 2^53`);
    }
    const offset = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
    if (offset % clusterSize !== 0) {
      throw corrupt(`L1 entry at ${hex(this.#offset)} index ${index}: L2 table offset ${hex(offset)} is not cluster-aligned`);
    }
    return offset;
  }

  /** True when entry `index` has the COPIED flag (its L2 table has refcount 1). */
  copied(index: number): boolean {
    return index < this.#size && (this.#view.getUint32(index * 8) & L1E_COPIED_HI) !== 0;
  }

  /** Sets entry `index` in memory (reserved bits cleared, as qemu writes entries). */
  set(index: number, l2Offset: number, copied: boolean): void {
    this.#view.setUint32(index * 8, (Math.floor(l2Offset / TWO_POW_32) | (copied ? L1E_COPIED_HI : 0)) >>> 0);
    this.#view.setUint32(index * 8 + 4, l2Offset >>> 0);
    this.#version++;
  }

  /**
   * The 512-byte block of entries holding entry `index`, as qemu's qcow2_write_l1_entry writes
   * it: entries past the end of the table are zeros. Returns the file offset to write it at.
   */
  sectorOf(index: number): { offset: number; bytes: Uint8Array } {
    const start = index - (index % ENTRIES_PER_SECTOR);
    const bytes = new Uint8Array(ENTRIES_PER_SECTOR * L1_ENTRY_SIZE);
    const end = Math.min(this.#size, start + ENTRIES_PER_SECTOR);
    bytes.set(this.#bytes.subarray(start * L1_ENTRY_SIZE, end * L1_ENTRY_SIZE));
    return { offset: this.#offset + start * L1_ENTRY_SIZE, bytes };
  }

  /** Switches to a grown table (its entries already written to the file at `offset`). */
  replace(offset: number, size: number, bytes: Uint8Array): void {
    if (bytes.byteLength < size * L1_ENTRY_SIZE) {
      throw corrupt(`L1 table at ${hex(offset)}: needs ${size * L1_ENTRY_SIZE} bytes, got ${bytes.byteLength}`);
    }
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, size * L1_ENTRY_SIZE);
    this.#bytes = bytes;
    this.#size = size;
    this.#offset = offset;
    this.#version++;
  }
}
