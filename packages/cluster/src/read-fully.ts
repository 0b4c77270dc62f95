import type { Storage } from '@qcow2/storage';

/**
 * Fills `dst` from `storage` at `offset`; bytes past the end of the file read as zeros, as qemu's
 * block layer reads them. Resolves when `dst` is filled.
 */
export async function readFully(storage: Storage, dst: Uint8Array, offset: number): Promise<void> {
  const count = await storage.read(dst, offset);
  if (count < dst.length) dst.fill(0, count);
}
