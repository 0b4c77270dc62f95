import { corrupt, invalidArgument } from '@qcow2/format';

/**
 * zstd encoding through libzstd compiled to WebAssembly (@hpcc-js/wasm-zstd, the wasm inlined in
 * its JavaScript, so it loads the same way in Node, Deno, browsers and bundlers). The module is
 * imported on first use only: a reader that never compresses never loads it.
 */

/** qemu's zstd level: libzstd's default. */
export const ZSTD_LEVEL = 3;

interface ZstdEncoder {
  compress(data: Uint8Array, level?: number): Uint8Array;
}

let encoder: Promise<ZstdEncoder> | undefined;

function loadEncoder(): Promise<ZstdEncoder> {
  encoder ??= import('@hpcc-js/wasm-zstd').then(
    (m) => m.Zstd.load(),
    (error: unknown) => {
      encoder = undefined;
      throw corrupt('zstd: the @hpcc-js/wasm-zstd encoder could not be loaded', error);
    },
  );
  return encoder;
}

/**
 * Compresses `src` into one zstd frame that records its content size; null when the frame would
 * not be shorter than `src`.
 */
export async function zstdCompressCluster(src: Uint8Array): Promise<Uint8Array | null> {
  if (src.length === 0) throw invalidArgument('compress: the cluster is empty');
  const zstd = await loadEncoder();
  let out: Uint8Array;
  try {
    out = zstd.compress(src, ZSTD_LEVEL);
  } catch (error) {
    throw corrupt(`zstd: compressing a ${src.length}-byte cluster failed`, error);
  }
  return out.length < src.length ? out : null;
}
