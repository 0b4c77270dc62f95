import { hex, unsupported } from '@qcow2/format';
import type { ClusterCodec, CompressionType, CompressionTypeName } from './codec.js';

/** Resolves a header `compression_type` (or its name) to a codec among `codecs`. */
export function selectCodec(
  codecs: { readonly zlib: ClusterCodec; readonly zstd: ClusterCodec },
  type: CompressionType | CompressionTypeName | number,
): ClusterCodec {
  if (type === 0 || type === 'zlib') return codecs.zlib;
  if (type === 1 || type === 'zstd') return codecs.zstd;
  throw unsupported(
    `compression_type ${typeof type === 'number' ? hex(type) : JSON.stringify(type)} is not supported (0 = zlib, 1 = zstd)`,
  );
}
