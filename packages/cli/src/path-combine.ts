/**
 * qemu's path_combine (util/cutils.c, via bdrv_get_full_backing_filename): a relative backing
 * file name is taken relative to the directory of the image that names it, keeping that image's
 * spelling (`sub/top.qcow2` + `mid.qcow2` → `sub/mid.qcow2`); absolute names and names with a
 * protocol prefix stay as they are.
 */
export function pathCombine(base: string, name: string): string {
  if (name.startsWith('/') || hasProtocol(name)) return name;
  const colon = base.indexOf(':');
  let start = hasProtocol(base) && colon >= 0 ? colon + 1 : 0;
  const slash = base.lastIndexOf('/');
  if (slash + 1 > start) start = slash + 1;
  return base.slice(0, start) + name;
}

/** block.c path_has_protocol: a ':' before any '/'. */
function hasProtocol(path: string): boolean {
  const match = /[:/]/.exec(path);
  return match !== null && match[0] === ':';
}
