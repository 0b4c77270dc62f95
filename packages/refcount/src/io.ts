import { isQcow2Error, Qcow2Error, viewOf } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';

/** A storage failure as a Qcow2Error (storages reject with one already; anything else is IO). */
export function ioError(error: unknown, message: string): Qcow2Error {
  if (isQcow2Error(error)) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new Qcow2Error('IO', `${message}: ${detail}`, { cause: error });
}

/** Reads `dst.length` bytes at `offset`; bytes past the end of the storage read as zeros. */
export async function readZeroPadded(storage: Storage, dst: Uint8Array, offset: number, what: string): Promise<void> {
  let count: number;
  try {
    count = await storage.read(dst, offset);
  } catch (error) {
    throw ioError(error, `${what}: read failed`);
  }
  if (!(count >= dst.length)) dst.fill(0, count > 0 ? count : 0);
}

export async function writeAt(storage: Storage, src: Uint8Array, offset: number, what: string): Promise<void> {
  try {
    await storage.write(src, offset);
  } catch (error) {
    throw ioError(error, `${what}: write failed`);
  }
}

export async function flushStorage(storage: Storage, what: string): Promise<void> {
  try {
    await storage.flush();
  } catch (error) {
    throw ioError(error, `${what}: flush failed`);
  }
}

/** Byte offset of refcount_table_offset in the qcow2 header (refcount_table_clusters follows). */
export const HEADER_REFCOUNT_TABLE_OFFSET = 48;

/**
 * Writes refcount_table_offset and refcount_table_clusters into the header at the start of
 * `storage` (12 bytes at offset 48, as qemu's table switch does) and flushes: the default
 * `onTableMoved` when the caller does not keep its own header.
 */
export async function writeRefcountTableHeaderFields(storage: Storage, tableOffset: number, tableClusters: number): Promise<void> {
  const bytes = new Uint8Array(12);
  const view = viewOf(bytes);
  view.setUint32(0, Math.floor(tableOffset / 0x1_0000_0000));
  view.setUint32(4, tableOffset >>> 0);
  view.setUint32(8, tableClusters >>> 0);
  await writeAt(storage, bytes, HEADER_REFCOUNT_TABLE_OFFSET, 'header refcount table fields at 0x30');
  await flushStorage(storage, 'header refcount table fields at 0x30');
}
