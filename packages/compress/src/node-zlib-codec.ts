import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { corrupt, hex, invalidArgument } from '@qcow2/format';
import type { ClusterCodec } from './codec.js';
import { DEFLATE_LEVEL, DEFLATE_MEM_LEVEL, DEFLATE_WINDOW_BITS } from './deflate-params.js';

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * compression_type 0 through node:zlib (the zlib qemu links against): inflateRawSync bounded by
 * `maxOutputLength`, deflateRawSync with qemu's parameters. Only for Node (and runtimes that
 * implement node:zlib the same way); browsers never import this file.
 */
export const nodeZlibCodec: ClusterCodec = {
  type: 'zlib',
  compressionType: 0,
  implementation: 'node:zlib',
  decompress(src: Uint8Array, dst: Uint8Array): void {
    let out: Uint8Array;
    try {
      // A 32 KiB window accepts every valid stream; output beyond the cluster is an error.
      out = inflateRawSync(src, { maxOutputLength: dst.length, chunkSize: Math.max(64, dst.length) });
    } catch (error) {
      throw corrupt(`zlib compressed cluster: ${message(error)}`, error);
    }
    if (out.length !== dst.length) {
      throw corrupt(`zlib compressed cluster: deflate stream ends after ${hex(out.length)} bytes, the cluster is ${hex(dst.length)} bytes`);
    }
    dst.set(out);
  },
  compress(src: Uint8Array): Promise<Uint8Array | null> {
    return new Promise((resolve) => {
      if (src.length === 0) throw invalidArgument('compress: the cluster is empty');
      let out: Uint8Array;
      try {
        out = deflateRawSync(src, {
          level: DEFLATE_LEVEL,
          windowBits: DEFLATE_WINDOW_BITS,
          memLevel: DEFLATE_MEM_LEVEL,
        });
      } catch (error) {
        throw corrupt(`deflate: compressing a ${src.length}-byte cluster failed: ${message(error)}`, error);
      }
      // A plain Uint8Array view, not a Buffer, so callers see the same type on every runtime.
      resolve(out.length < src.length ? new Uint8Array(out.buffer, out.byteOffset, out.length) : null);
    });
  },
};
