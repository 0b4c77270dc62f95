import type { SnapshotEntry } from '@qcow2/format';

/** Anything with a snapshot entry (StoredSnapshot) or an entry itself. */
type HasEntry = { readonly entry: Pick<SnapshotEntry, 'id' | 'name'> } | Pick<SnapshotEntry, 'id' | 'name'>;

function idOf(s: HasEntry): string {
  return 'entry' in s ? s.entry.id : s.id;
}

function nameOf(s: HasEntry): string {
  return 'entry' in s ? s.entry.name : s.name;
}

/**
 * qemu's find_snapshot_by_id_and_name: with both, the entry matching both; with one, the first
 * entry matching it. -1 when none (or neither is given).
 */
export function findSnapshotByIdAndName(snapshots: readonly HasEntry[], id: string | undefined, name: string | undefined): number {
  if (id !== undefined && name !== undefined) return snapshots.findIndex((s) => idOf(s) === id && nameOf(s) === name);
  if (id !== undefined) return snapshots.findIndex((s) => idOf(s) === id);
  if (name !== undefined) return snapshots.findIndex((s) => nameOf(s) === name);
  return -1;
}

/**
 * qemu's find_snapshot_by_id_or_name (qcow2_snapshot_goto, `qemu-img snapshot -a`, and
 * bdrv_snapshot_load_tmp_by_id_or_name for `qemu-img convert -l`): by id first, then by name.
 */
export function findSnapshotByIdOrName(snapshots: readonly HasEntry[], idOrName: string): number {
  const byId = findSnapshotByIdAndName(snapshots, idOrName, undefined);
  return byId >= 0 ? byId : findSnapshotByIdAndName(snapshots, undefined, idOrName);
}

/**
 * qemu 7.2's bdrv_snapshot_find (`qemu-img snapshot -d`): by name only. `qemu-img snapshot -d 1`
 * does not delete the snapshot whose id is 1 unless its name is "1" too.
 */
export function findSnapshotByName(snapshots: readonly HasEntry[], name: string): number {
  return findSnapshotByIdAndName(snapshots, undefined, name);
}

const U64 = 1n << 64n;
const ULONG_MAX = U64 - 1n;

/** C's strtoul(s, NULL, 10) on a 64-bit system (whitespace, sign, digits; overflow → ULONG_MAX). */
export function strtoul(s: string): bigint {
  let i = 0;
  while (i < s.length && ' \t\n\v\f\r'.includes(s[i]!)) i++;
  let negative = false;
  if (s[i] === '+' || s[i] === '-') {
    negative = s[i] === '-';
    i++;
  }
  let value = 0n;
  let digits = 0;
  for (; i < s.length && s[i]! >= '0' && s[i]! <= '9'; i++) {
    digits++;
    if (value <= ULONG_MAX) value = value * 10n + BigInt(s.charCodeAt(i) - 48);
  }
  if (digits === 0) return 0n;
  if (value > ULONG_MAX) return ULONG_MAX;
  return negative ? (U64 - value) % U64 : value;
}

/**
 * The id qemu's find_new_snapshot_id gives a new snapshot: the largest id read as an unsigned
 * long (strtoul, so "abc" counts as 0), plus one, in decimal (wrapping as C does).
 */
export function nextSnapshotId(snapshots: readonly HasEntry[]): string {
  let max = 0n;
  for (const s of snapshots) {
    const id = strtoul(idOf(s));
    if (id > max) max = id;
  }
  return ((max + 1n) % U64).toString();
}
