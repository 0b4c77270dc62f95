import type { ClusterCodec } from './codec.js';
import { zstdCompressCluster } from './zstd-compress.js';
import { zstdDecompressInto } from './zstd-decompress.js';

/**
 * compression_type 1 for every runtime: this package's own bounded zstd decoder to read, libzstd
 * in WebAssembly (loaded on the first compress) to write.
 */
export const jsZstdCodec: ClusterCodec = {
  type: 'zstd',
  compressionType: 1,
  implementation: 'js',
  decompress(src: Uint8Array, dst: Uint8Array): void {
    zstdDecompressInto(src, dst, 'zstd compressed cluster');
  },
  compress(src: Uint8Array): Promise<Uint8Array | null> {
    return zstdCompressCluster(src);
  },
};
