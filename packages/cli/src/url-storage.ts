import { Qcow2Error, type Storage, type StorageResolver } from '@qcow2/storage';

/**
 * Image operands and backing files given as http:// or https:// URLs: opened read-only with
 * HTTP Range requests (@qcow2/storage-http), the way qemu-img opens them through its curl driver.
 */

/** True for a name the CLI opens over HTTP: it starts with `http://` or `https://`. */
export function isHttpUrl(name: string): boolean {
  return /^https?:\/\//i.test(name);
}

/**
 * Opens `url` as a read-only Storage over HTTP Range requests. @qcow2/storage-http is loaded
 * here, on the first URL: commands on local files do not parse it.
 */
export async function openUrlStorage(url: string): Promise<Storage> {
  const { createHttpStorage } = await import('@qcow2/storage-http');
  return createHttpStorage(url);
}

/**
 * A resolver that opens URLs over HTTP and hands every other name to `local`: a backing name that
 * is an http(s) URL, and any name relative to an image opened from a URL (resolved against that
 * URL, as a browser resolves a link). From an image opened over HTTP only http(s) URLs are
 * followed: a name such as `file:///etc/passwd` or `nbd:…` is refused with INVALID_ARGUMENT, so
 * an image from the network cannot make the CLI open local files.
 */
export function withUrlResolver(local: StorageResolver): StorageResolver {
  return async (name, from) => {
    if (isHttpUrl(name)) return openUrlStorage(name);
    if (from === undefined || !isHttpUrl(from)) return local(name, from);
    let url: URL;
    try {
      url = new URL(name, from);
    } catch (error) {
      throw new Qcow2Error('INVALID_ARGUMENT', `'${name}' named by ${from} is not a URL`, { cause: error });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Qcow2Error('INVALID_ARGUMENT', `'${name}' named by ${from}: only http and https URLs are opened from an image read over HTTP`);
    }
    return openUrlStorage(url.href);
  };
}
