import type { ClusterCodec, CompressionType, CompressionTypeName } from './codec.js';
import { selectCodec } from './registry.js';
import { jsZstdCodec } from './zstd-codec.js';
import { nodeZlibCodec } from './node-zlib-codec.js';

/**
 * The Node entry: everything the universal entry has, plus node:zlib for zlib clusters.
 * (Node 20 has no zstd in node:zlib, so zstd stays on the pure-JavaScript decoder.)
 */
export * from './index.js';
export { nodeZlibCodec } from './node-zlib-codec.js';

/** Like the universal `getCodec`, with node:zlib for compression_type 0. */
export function getCodec(type: CompressionType | CompressionTypeName | number): ClusterCodec {
  return selectCodec({ zlib: nodeZlibCodec, zstd: jsZstdCodec }, type);
}
