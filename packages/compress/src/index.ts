import type { ClusterCodec, CompressionType, CompressionTypeName } from './codec.js';
import { selectCodec } from './registry.js';
import { jsZlibCodec } from './zlib-codec.js';
import { jsZstdCodec } from './zstd-codec.js';

export type { ClusterCodec, CompressionType, CompressionTypeName } from './codec.js';
export { jsZlibCodec } from './zlib-codec.js';
export { jsZstdCodec } from './zstd-codec.js';
export { inflateRawInto } from './inflate-raw.js';
export { deflateRawCluster, DEFLATE_LEVEL, DEFLATE_MEM_LEVEL, DEFLATE_WINDOW_BITS } from './deflate-raw.js';
export { zstdDecompressInto } from './zstd-decompress.js';
export { zstdCompressCluster, ZSTD_LEVEL } from './zstd-compress.js';
export {
  decodeZstdFrameHeader,
  decodeZstdBlockHeader,
  zstdFrameLength,
  zstdBlockMaximumSize,
  ZSTD_MAGIC,
  ZSTD_MAX_BLOCK_SIZE,
  ZSTD_MAX_WINDOW_SIZE,
} from './zstd-frame.js';
export type { ZstdFrameHeader, ZstdBlockHeader } from './zstd-frame.js';
export { selectCodec } from './registry.js';

/**
 * The codec for a header's `compression_type` (0 zlib, 1 zstd) or its name. This entry returns
 * the pure-JavaScript codecs; `@qcow2/compress/node` (also what Node resolves `@qcow2/compress`
 * to) returns node:zlib for zlib. Throws UNSUPPORTED for any other type.
 */
export function getCodec(type: CompressionType | CompressionTypeName | number): ClusterCodec {
  return selectCodec({ zlib: jsZlibCodec, zstd: jsZstdCodec }, type);
}
