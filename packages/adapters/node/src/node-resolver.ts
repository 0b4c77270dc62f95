import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { Qcow2Error, type StorageResolver } from '@qcow2/storage';
import { createNodeStorage } from './node-storage.js';
import { nodeFsError } from './node-error.js';

export interface NodeResolverOptions {
  /**
   * Confine backing files to this directory: a name that resolves outside it (through `..`, an
   * absolute path or a symbolic link) is refused. Also the base of relative names when the
   * caller passes no `from`. Default: no confinement; names without `from` resolve against the
   * current directory.
   */
  baseDir?: string;
  /** Accept absolute names (`/srv/base.qcow2`). Default false. */
  allowAbsolute?: boolean;
  /**
   * Protocol prefixes (qemu's `proto:` syntax) to accept, e.g. `['file']`. `file:` is stripped
   * and the rest opened as a path; another listed protocol makes the whole name an ordinary
   * file name (a file whose name contains a colon). Default none: `nbd://…`, `json:{…}`,
   * `file:…` are refused.
   */
  allowProtocols?: readonly string[];
  /** Open backing files read-only. Default true. */
  readOnly?: boolean;
}

/**
 * A StorageResolver over node:fs. `resolver(name, from)` resolves `name` — a backing file name
 * as an image spells it — against the directory of `from` (the path of the image that names
 * it), applies the policy of `options`, and opens the file with `createNodeStorage`.
 * Refused names reject with Qcow2Error 'UNSUPPORTED' (a policy refusal, naming the rule and the
 * option that lifts it) or 'INVALID_ARGUMENT' (empty, or containing NUL); a missing file
 * rejects 'NOT_FOUND'.
 */
export function createNodeResolver(options: NodeResolverOptions = {}): StorageResolver {
  const { allowAbsolute = false, allowProtocols = [], readOnly = true } = options;
  const baseDir = options.baseDir === undefined ? undefined : resolve(options.baseDir);
  return async (name, from) => {
    const where = `backing file ${JSON.stringify(name)}${from === undefined ? '' : ` named by ${from}`}`;
    const refuse = (why: string): Qcow2Error => new Qcow2Error('UNSUPPORTED', `${where}: ${why}`);
    if (typeof name !== 'string' || name === '' || name.includes('\0')) {
      throw new Qcow2Error('INVALID_ARGUMENT', `${where}: not a file name`);
    }
    let path = name;
    const protocol = protocolOf(name);
    if (protocol !== undefined) {
      if (!allowProtocols.includes(protocol)) {
        throw refuse(`protocol '${protocol}:' is not allowed (allowProtocols: [${allowProtocols.map((p) => `'${p}'`).join(', ')}])`);
      }
      if (protocol === 'file') path = name.slice('file:'.length);
      if (path === '') throw new Qcow2Error('INVALID_ARGUMENT', `${where}: no path after 'file:'`);
    }
    let target: string;
    if (isAbsolute(path)) {
      if (!allowAbsolute) throw refuse('absolute names are refused (pass allowAbsolute: true to accept them)');
      target = resolve(path);
    } else {
      const base = from !== undefined ? dirname(resolve(from)) : (baseDir ?? process.cwd());
      target = resolve(base, path);
    }
    if (baseDir !== undefined) {
      if (!isInside(baseDir, target)) throw refuse(`resolves to ${target}, outside baseDir ${baseDir}`);
      // Follow symbolic links, then check again: a link inside baseDir must not lead out of it.
      let real: string;
      let realBase: string;
      try {
        real = await realpath(target);
      } catch (error) {
        throw nodeFsError(`resolve ${where} as`, target, error);
      }
      try {
        realBase = await realpath(baseDir);
      } catch (error) {
        throw nodeFsError('resolve baseDir', baseDir, error);
      }
      if (!isInside(realBase, real)) {
        throw refuse(`resolves through a symbolic link to ${real}, outside baseDir ${baseDir}`);
      }
      target = real;
    }
    return createNodeStorage(target, { readOnly });
  };
}

function isInside(directory: string, path: string): boolean {
  const rel = relative(directory, path);
  return rel === '' || (rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel));
}

/**
 * The protocol prefix of a name by qemu's rule (block.c path_has_protocol): a ':' before any
 * '/' (and '\' and drive letters on Windows). `./a:b` and `/x/a:b` have none.
 */
function protocolOf(name: string): string | undefined {
  if (process.platform === 'win32' && (/^[A-Za-z]:($|[\\/])/.test(name) || /^[\\/]{2}[.?][\\/]/.test(name))) {
    return undefined;
  }
  const stop = process.platform === 'win32' ? /[:/\\]/ : /[:/]/;
  const match = stop.exec(name);
  return match !== null && match[0] === ':' ? name.slice(0, match.index) : undefined;
}
