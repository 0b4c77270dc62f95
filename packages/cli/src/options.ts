import { CliError } from './errors.js';
import type { ImageFormat } from './host.js';
import { strtosz } from './strtosz.js';

/** The drivers qemu-img 7.2 knows: naming one of these that we do not read is "not supported", anything else "unknown". */
const QEMU_DRIVERS = new Set(
  (
    'blkdebug blklogwrites blkverify bochs cloop compress copy-before-write copy-on-read dmg file ftp ftps ' +
    'gluster host_cdrom host_device http https iscsi iser luks nbd nfs null-aio null-co nvme parallels ' +
    'preallocate qcow qcow2 qed quorum raw rbd replication snapshot-access ssh throttle vdi vhdx vmdk vpc vvfat'
  ).split(' '),
);

/** A `-f` value as an image format; `file` (qemu's protocol driver) reads the bytes as they are, like raw. */
export function imageFormat(name: string | undefined, filename: string): ImageFormat | undefined {
  if (name === undefined) return undefined;
  if (name === 'qcow2' || name === 'raw') return name;
  if (name === 'file') return 'raw';
  if (QEMU_DRIVERS.has(name)) {
    throw new CliError(`Could not open '${filename}': the '${name}' format is not supported (qcow2 and raw are)`);
  }
  throw new CliError(`Could not open '${filename}': Unknown driver '${name}'`);
}

export function isQemuDriver(name: string): boolean {
  return QEMU_DRIVERS.has(name);
}

export type OutputFormat = 'human' | 'json';

/** `--output`: exactly `human` or `json`, as qemu-img. */
export function outputFormat(value: string | undefined): OutputFormat {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new CliError('--output must be used with human or json as argument.');
}

/**
 * qemu-img's cvtnum_full: a size with qemu's suffixes, within [min, max], else qemu's two-line
 * message naming `what` ("start offset", "max length", ...).
 */
export function cvtnum(what: string, value: string, min: number = 0, max: number = Number.MAX_SAFE_INTEGER): number {
  const r = strtosz(value);
  if (!r.ok && r.error === 'EINVAL') {
    throw new CliError(
      `Invalid ${what} specified. You may use k, M, G, T, P or E suffixes for\n` +
        'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    );
  }
  // qemu's bound is INT64_MAX; JavaScript numbers stop at 2^53 - 1, which no image reaches.
  const qemuMax = max === Number.MAX_SAFE_INTEGER ? '9223372036854775807' : String(max);
  if (!r.ok || r.value > BigInt(max) || r.value < BigInt(min)) {
    throw new CliError(`Invalid ${what} specified. Must be between ${min} and ${qemuMax}.`);
  }
  return Number(r.value);
}

/** qemu's cache modes (`-t`, `-T`); accepted and ignored: the engine has one cache policy. */
export function checkCacheMode(value: string): boolean {
  return ['none', 'writeback', 'writethrough', 'directsync', 'unsafe', 'off'].includes(value);
}
