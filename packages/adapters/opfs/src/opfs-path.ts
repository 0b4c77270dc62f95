import { Qcow2Error } from '@qcow2/storage';
import { opfsError } from './opfs-error.js';

/**
 * Splits a path inside the origin private file system (`vm/disk.qcow2`, a leading `/` allowed)
 * into its names. Empty names (`a//b`, a trailing `/`), `.`, `..`, backslashes and NUL are refused
 * with Qcow2Error 'INVALID_ARGUMENT': OPFS has no current directory and no parent of its root.
 */
export function splitOpfsPath(path: string): string[] {
  const bad = (why: string): Qcow2Error =>
    new Qcow2Error('INVALID_ARGUMENT', `opfs storage: path ${JSON.stringify(path)} ${why}`);
  if (typeof path !== 'string') throw bad('is not a string');
  const names = (path.startsWith('/') ? path.slice(1) : path).split('/');
  for (const name of names) {
    if (name === '') throw bad('has an empty name (nothing, or two slashes in a row, or a trailing slash)');
    if (name === '.' || name === '..') throw bad(`uses '${name}', which OPFS paths do not have`);
    if (name.includes('\\') || name.includes('\0')) throw bad('contains a backslash or NUL');
  }
  return names;
}

/**
 * Walks `names` from `root` and returns the file handle at the end. With `create`, missing
 * directories and the file are created. Errors become Qcow2Errors naming the path.
 */
export async function openOpfsFile(
  root: FileSystemDirectoryHandle,
  names: readonly string[],
  create: boolean,
): Promise<FileSystemFileHandle> {
  const path = names.join('/');
  let directory = root;
  let index = 0;
  try {
    for (; index < names.length - 1; index++) {
      directory = await directory.getDirectoryHandle(names[index]!, { create });
    }
    return await directory.getFileHandle(names[index]!, { create });
  } catch (error) {
    const at = index < names.length - 1 ? ` (at directory ${names.slice(0, index + 1).join('/')})` : '';
    throw opfsError(`opfs storage ${path}: open${at}`, error, true);
  }
}
