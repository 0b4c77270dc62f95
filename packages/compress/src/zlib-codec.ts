import type { ClusterCodec } from './codec.js';
import { deflateRawCluster } from './deflate-raw.js';
import { inflateRawInto } from './inflate-raw.js';

/**
 * compression_type 0 in pure JavaScript, for every runtime: this package's own bounded raw
 * inflater to read, pako (level 6, 4 KiB window, as qemu) to write.
 */
export const jsZlibCodec: ClusterCodec = {
  type: 'zlib',
  compressionType: 0,
  implementation: 'js',
  decompress(src: Uint8Array, dst: Uint8Array): void {
    inflateRawInto(src, dst, 'zlib compressed cluster');
  },
  compress(src: Uint8Array): Promise<Uint8Array | null> {
    return new Promise((resolve) => resolve(deflateRawCluster(src)));
  },
};
