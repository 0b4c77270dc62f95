/**
 * Names of files an image refers to (backing file, external data file), as qemu combines them
 * (path_combine, via bdrv_get_full_backing_filename): a relative name is relative to the
 * directory of the image that names it, keeping that image's spelling
 * (`sub/top.qcow2` + `mid.qcow2` → `sub/mid.qcow2`); absolute names and names with a protocol
 * prefix (`nbd:…`, `file:…`) stay as they are. The engine never opens a path itself: the
 * combined name is what it reports and passes as `from` for the next level; the resolver opens.
 */
export function combineName(base: string | undefined, name: string): string {
  if (base === undefined || name.startsWith('/') || hasProtocol(name)) return name;
  const colon = base.indexOf(':');
  let start = hasProtocol(base) && colon >= 0 ? colon + 1 : 0;
  const slash = Math.max(base.lastIndexOf('/'), base.lastIndexOf('\\'));
  if (slash + 1 > start) start = slash + 1;
  return base.slice(0, start) + name;
}

/** qemu's path_has_protocol: a ':' before any '/'. */
function hasProtocol(path: string): boolean {
  const match = /[:/\\]/.exec(path);
  return match !== null && match[0] === ':';
}

/**
 * A key under which two spellings of one file compare equal, for loop detection: `.` segments
 * and `dir/..` pairs removed, repeated separators collapsed.
 */
export function nameKey(name: string): string {
  const absolute = name.startsWith('/');
  const out: string[] = [];
  for (const part of name.split(/[/\\]+/)) {
    if (part === '' || part === '.') continue;
    if (part === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(part);
  }
  return (absolute ? '/' : '') + out.join('/');
}
