/**
 * The one interface every compressed-cluster codec implements, whatever the algorithm or runtime.
 *
 * qcow2 stores a compressed cluster as one compressed stream whose length is known only to the
 * 512-byte sector (the L2 descriptor counts sectors), so `src` usually carries junk after the
 * end of the stream. `decompress` ignores it and fills `dst` — the caller's cluster buffer —
 * exactly; `compress` returns the stream alone.
 */

/** The algorithm's name, as qemu-img prints it (`compression_type` in the header). */
export type CompressionTypeName = 'zlib' | 'zstd';

/** The header's `compression_type` byte: 0 is zlib (raw deflate), 1 is zstd. */
export type CompressionType = 0 | 1;

export interface ClusterCodec {
  readonly type: CompressionTypeName;
  /** The header's `compression_type` value for this algorithm. */
  readonly compressionType: CompressionType;
  /**
   * Which implementation this is (`'js'`, `'node:zlib'`, …): for benchmarks and diagnostics.
   */
  readonly implementation: string;
  /**
   * Decompresses the stream at the start of `src` into `dst`, which it fills exactly. Bytes of
   * `src` after the end of the stream are ignored. Throws a Qcow2Error `CORRUPT` naming what
   * failed when the stream is truncated, malformed, or produces fewer or more than
   * `dst.length` bytes. Allocates nothing sized by the stream's own fields. After a throw,
   * `dst` holds whatever was decoded before the fault.
   */
  decompress(src: Uint8Array, dst: Uint8Array): void;
  /**
   * Compresses one cluster. Resolves to the compressed stream, or to `null` when it would not be
   * smaller than `src` (qemu then stores the cluster uncompressed). The stream is what qemu
   * writes and reads: raw deflate with a 4 KiB window, or one zstd frame with its content size.
   */
  compress(src: Uint8Array): Promise<Uint8Array | null>;
}
