import { QCOW_MAGIC } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import type { ImageFormat } from './types.js';

/**
 * The format of an image from its first bytes: 'qcow2' when it starts with the qcow2 magic
 * `QFI\xfb`, else 'raw'. (qemu's probe also wants a version ≥ 2; a file with the magic and a
 * bad version is reported as a qcow2 image with an unsupported version instead of read as raw.)
 */
export async function probeFormat(storage: Storage): Promise<ImageFormat> {
  const head = new Uint8Array(4);
  const count = await storage.read(head, 0);
  if (count < 4) return 'raw';
  const magic = ((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0;
  return magic === QCOW_MAGIC ? 'qcow2' : 'raw';
}
