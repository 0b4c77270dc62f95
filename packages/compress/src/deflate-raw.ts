import { deflateRaw } from 'pako';
import { corrupt, invalidArgument } from '@qcow2/format';
import { DEFLATE_LEVEL, DEFLATE_MEM_LEVEL, DEFLATE_WINDOW_BITS } from './deflate-params.js';

/**
 * The raw deflate qemu writes for a compressed cluster: zlib's default level (6), a 4 KiB window
 * (windowBits -12) and memLevel 9, no zlib header. Any inflater, including one with a 4 KiB
 * window, reads it back.
 */
export { DEFLATE_LEVEL, DEFLATE_MEM_LEVEL, DEFLATE_WINDOW_BITS } from './deflate-params.js';

/**
 * Compresses `src` as qemu does; returns null when the stream would not be shorter than
 * `src` (qemu stores such a cluster uncompressed).
 */
export function deflateRawCluster(src: Uint8Array): Uint8Array | null {
  if (src.length === 0) throw invalidArgument('compress: the cluster is empty');
  let out: Uint8Array;
  try {
    out = deflateRaw(src, {
      level: DEFLATE_LEVEL,
      windowBits: DEFLATE_WINDOW_BITS,
      memLevel: DEFLATE_MEM_LEVEL,
    });
  } catch (error) {
    throw corrupt(`deflate: compressing a ${src.length}-byte cluster failed`, error);
  }
  return out.length < src.length ? out : null;
}
