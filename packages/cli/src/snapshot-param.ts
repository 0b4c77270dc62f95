import { CliError } from './errors.js';
import type { ImageSnapshot } from './host.js';

/** `-l` of convert: `snapshot.id=ID,snapshot.name=NAME` (either part), or a bare id-or-name. */
export interface SnapshotParam {
  id?: string;
  name?: string;
  idOrName?: string;
}

export function parseSnapshotParam(text: string): SnapshotParam {
  if (!text.startsWith('snapshot.')) return { idOrName: text };
  const param: SnapshotParam = {};
  for (const part of text.split(',')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? 'on' : part.slice(eq + 1);
    if (key === 'snapshot.id') param.id = value;
    else if (key === 'snapshot.name') param.name = value;
    else throw new CliError(`Invalid parameter '${key}'\nFailed in parsing snapshot param '${text}'`);
  }
  return param;
}

/** bdrv_snapshot_load_tmp(_by_id_or_name): by id first, then by name; with both, both must match. */
export function findSnapshot(snapshots: readonly ImageSnapshot[], param: SnapshotParam): ImageSnapshot | undefined {
  if (param.idOrName !== undefined) {
    return snapshots.find((s) => s.id === param.idOrName) ?? snapshots.find((s) => s.name === param.idOrName);
  }
  return snapshots.find(
    (s) => (param.id === undefined || s.id === param.id) && (param.name === undefined || s.name === param.name),
  );
}
