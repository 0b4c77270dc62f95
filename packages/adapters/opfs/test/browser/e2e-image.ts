// Browser-side helpers of the end-to-end test, shared by its worker and its page.
import type { Image } from '@qcow2/engine';
import type { E2eOp, ImageView } from './e2e-report.js';

/** Applies `ops` to a writable image; `payload` holds the bytes of `from` operations. */
export async function applyOps(image: Image, ops: readonly E2eOp[], payload: Uint8Array): Promise<void> {
  for (const op of ops) {
    if (op.kind === 'zero') {
      await image.writeZeroes(op.offset, op.length);
      continue;
    }
    const bytes = 'from' in op ? payload.slice(op.from, op.from + op.length) : new Uint8Array(op.length).fill(op.fill);
    if (op.kind === 'compressed') await image.writeCompressed(bytes, op.offset);
    else await image.write(bytes, op.offset);
  }
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The image's state and the SHA-256 of each `chunk` bytes of its guest disk, read through the engine. */
export async function viewOf(image: Image, chunk: number): Promise<ImageView> {
  const digests: string[] = [];
  const buffer = new Uint8Array(chunk);
  for (let at = 0; at < image.virtualSize; at += chunk) {
    const part = buffer.subarray(0, Math.min(chunk, image.virtualSize - at));
    await image.read(part, at);
    digests.push(hex(await crypto.subtle.digest('SHA-256', part)));
  }
  return {
    readOnly: image.readOnly,
    format: image.format,
    virtualSize: image.virtualSize,
    dirty: image.dirty,
    ...(image.backingFile === undefined ? {} : { backingFile: image.backingFile }),
    ...(image.backingFormat === undefined ? {} : { backingFormat: image.backingFormat }),
    hasBacking: image.backing !== undefined,
    digests,
  };
}

export function toBase64(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
