import { checkImage, openImage, type CheckMessage, type Image, type OpenOptions, type SnapshotInfo } from '@qcow2/engine';
import { isQcow2Error, type Qcow2ErrorCode } from '@qcow2/format';
import type { Storage, StorageResolver } from '@qcow2/storage';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import type { Context } from '../context.js';
import { CliError, describeError, describeFileError, errnoOf, strerror } from '../errors.js';
import { getopt } from '../getopt.js';
import { snapshotLine } from '../image-info.js';
import { openFailure } from '../node-host.js';
import { imageFormat } from '../options.js';
import { pathCombine } from '../path-combine.js';
import { checkGetopt, usageError } from '../usage.js';
import { unsupportedOption } from './common.js';

type Action = 'list' | 'create' | 'apply' | 'delete';

/** qcow2's QCOW_MAX_SNAPSHOTS: qcow2_snapshot_create refuses one more with EFBIG. */
const MAX_SNAPSHOTS = 65536;

/** sizeof(QEMUSnapshotInfo.name) - 1: qemu-img snapshot -c copies the name with pstrcpy into 256 bytes. */
const MAX_NAME_BYTES = 255;

/** Linux errno numbers, for qemu-img's "Could not create snapshot 'x': -95 (Operation not supported)". */
const ERRNO: Readonly<Record<string, number>> = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENOTSUP: 95,
  EOPNOTSUPP: 95,
};

/** The errno qemu's qcow2 driver returns for what the engine reports with `code`. */
const CODE_ERRNO: Readonly<Record<Qcow2ErrorCode, string>> = {
  CORRUPT: 'EIO',
  UNSUPPORTED: 'ENOTSUP',
  INVALID_ARGUMENT: 'EINVAL',
  READ_ONLY: 'EACCES',
  IO: 'EIO',
  NOT_FOUND: 'ENOENT',
  CLOSED: 'EIO',
};

function errnoName(error: unknown): string {
  const code = errnoOf(error);
  if (code !== undefined && ERRNO[code] !== undefined) return code;
  if (isQcow2Error(error)) return CODE_ERRNO[error.code];
  return 'EIO';
}

/** `pstrcpy(sn.name, 256, name)`: at most 255 bytes of UTF-8 (cut at a character boundary). */
function qemuSnapshotName(name: string): string {
  const encoder = new TextEncoder();
  if (encoder.encode(name).length <= MAX_NAME_BYTES) return name;
  let out = '';
  let bytes = 0;
  for (const ch of name) {
    const size = encoder.encode(ch).length;
    if (bytes + size > MAX_NAME_BYTES) break;
    out += ch;
    bytes += size;
  }
  return out;
}

/** qemu's warning when it opens a probed raw image for writing. */
function probedRawWarning(filename: string): string {
  return (
    `WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
    '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
    "         Specify the 'raw' format explicitly to remove the restrictions.\n"
  );
}

/** qemu-img's dump_snapshots: nothing for an image without snapshots. */
export function snapshotList(snapshots: readonly SnapshotInfo[]): string {
  if (snapshots.length === 0) return '';
  let out = `Snapshot list:\n${snapshotLine()}\n`;
  for (const s of snapshots) out += `${snapshotLine(s)}\n`;
  return out;
}

/**
 * Opens `filename` for `qcow2 snapshot` as qemu-img does (img_open: the backing chain too, read
 * only for -l, else for writing), with qemu's words for what fails.
 */
async function openForSnapshot(
  ctx: Context,
  filename: string,
  format: string | undefined,
  writable: boolean,
): Promise<{ image: Image; storage: Storage }> {
  const forced = imageFormat(format, filename);
  let storage: Storage;
  try {
    storage = await createNodeStorage(filename, { readOnly: !writable });
  } catch (error) {
    throw new CliError(`Could not open '${filename}': Could not open '${filename}': ${describeFileError(error)}`, { cause: error });
  }
  /** The last backing or data file that could not be opened, to word the error as qemu does. */
  let failed: { name: string; error: unknown } | undefined;
  const tracked =
    (inner: StorageResolver): StorageResolver =>
    async (name, from) => {
      try {
        return await inner(name, from);
      } catch (error) {
        failed = { name: from === undefined ? name : pathCombine(from, name), error };
        throw error;
      }
    };
  const options: OpenOptions = {
    readOnly: !writable,
    name: filename,
    backing: true,
    resolver: tracked(createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'] })),
    ...(forced === undefined ? {} : { format: forced }),
  };
  if (writable) {
    options.dataFileResolver = tracked(createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'], readOnly: false }));
  }
  try {
    if (writable && forced !== 'raw' && (await isDirtyQcow2(storage))) {
      // qemu's qcow2_do_open repairs a dirty image opened for writing as `check -r all`, its lines on stderr.
      const emit = (m: CheckMessage): void => (m.report ? ctx.report(m.text) : ctx.err(`${m.text}\n`));
      await checkImage(storage, { repair: 'all', onMessage: emit }).catch(() => undefined);
    }
    const image = await openImage(storage, options);
    if (writable && forced === undefined && image.format === 'raw') ctx.err(probedRawWarning(filename));
    return { image, storage };
  } catch (error) {
    await storage.close().catch(() => undefined);
    throw openFailure(filename, error, failed as { name: string; error: unknown } | undefined);
  }
}

/** A qcow2 version 3 header with the dirty bit (lazy refcounts left unflushed). */
async function isDirtyQcow2(storage: Storage): Promise<boolean> {
  const head = new Uint8Array(80);
  if ((await storage.read(head, 0)) < head.length) return false;
  const view = new DataView(head.buffer);
  return view.getUint32(0) === 0x514649fb && view.getUint32(4) >= 3 && (view.getUint32(76) & 1) !== 0;
}

function hasDataFile(image: Image): boolean {
  return image.formatSpecific?.['data-file'] !== undefined;
}

/** g_get_real_time(): the wall clock in microseconds, as qemu-img dates a new snapshot. */
function realTimeMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/**
 * `qcow2 snapshot [--object objectdef] [--image-opts] [-f fmt] [-U] [-q] [-l | -a snapshot |
 * -c snapshot | -d snapshot] filename`: qemu-img snapshot, with its messages and exit statuses.
 * `-f` is an addition (later qemu-img versions have it; 7.2 probes the format). As in qemu-img
 * 7.2: -l prints nothing for an image without snapshots; -a looks a snapshot up by id, then by
 * name; -d by name only (the first snapshot with that name); -c cuts a name to 255 bytes; no action
 * opens the image for writing and closes it. Unlike qemu-img 7.2, -c refuses a name already in
 * use (@qcow2/engine keeps names unique): "Could not create snapshot 'x': -22 (Invalid argument)".
 */
export async function snapshotCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':la:c:d:f:hqU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
      ],
    }),
  );
  let action: Action | undefined;
  let snapshotName = '';
  let format: string | undefined;
  let forceShare = false;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'l':
      case 'a':
      case 'c':
      case 'd':
        if (action !== undefined) throw usageError("Cannot mix '-l', '-a', '-c', '-d'");
        action = ({ l: 'list', a: 'apply', c: 'create', d: 'delete' } as const)[option];
        snapshotName = arg;
        break;
      case 'f':
        format = arg;
        break;
      case 'U':
        forceShare = true;
        break;
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break; // -q: qemu-img snapshot prints nothing but the list, which -q does not hide
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  const filename = parsed.operands[0] as string;
  const writable = action !== 'list';
  if (writable && forceShare) {
    throw new CliError(`Could not open '${filename}': force-share=on can only be used with read-only images`);
  }

  const { image, storage } = await openForSnapshot(ctx, filename, format, writable);
  let status = 0;
  try {
    switch (action) {
      case 'list':
        ctx.out(snapshotList(image.snapshots));
        break;
      case 'create':
        status = await create(ctx, image, snapshotName);
        break;
      case 'apply':
        status = await apply(ctx, image, snapshotName, filename, format === undefined);
        break;
      case 'delete':
        status = await remove(ctx, image, snapshotName);
        break;
      default:
        break; // no action: the image is opened for writing and closed, as qemu-img does
    }
  } finally {
    try {
      await image.close();
    } finally {
      await storage.close().catch(() => undefined);
    }
  }
  return status;
}

async function create(ctx: Context, image: Image, snapshotName: string): Promise<number> {
  const fail = (errno: string): number => {
    ctx.report(`Could not create snapshot '${snapshotName}': -${ERRNO[errno] ?? 5} (${strerror(errno)})`);
    return 1;
  };
  if (image.format !== 'qcow2' || hasDataFile(image)) return fail('ENOTSUP');
  if (image.snapshots.length >= MAX_SNAPSHOTS) return fail('EFBIG');
  const micros = realTimeMicros();
  try {
    await image.createSnapshot(qemuSnapshotName(snapshotName), {
      dateSec: Math.floor(micros / 1e6),
      dateNsec: (micros % 1e6) * 1000,
      vmClockNsec: 0,
    });
  } catch (error) {
    if (!isQcow2Error(error)) throw error;
    return fail(errnoName(error));
  }
  return 0;
}

async function apply(ctx: Context, image: Image, snapshotName: string, filename: string, probed: boolean): Promise<number> {
  const fail = (why: string): number => {
    ctx.report(`Could not apply snapshot '${snapshotName}': ${why}`);
    return 1;
  };
  if (image.format !== 'qcow2') {
    // qemu reopens the raw driver over its file to try the file's snapshots: a second warning.
    if (probed) ctx.err(probedRawWarning(filename));
    return fail('Block driver does not support snapshots');
  }
  if (hasDataFile(image)) return fail(`Failed to load snapshot: ${strerror('ENOTSUP')}`);
  try {
    await image.applySnapshot(snapshotName);
  } catch (error) {
    if (!isQcow2Error(error)) throw error;
    return fail(`Failed to load snapshot: ${strerror(errnoName(error))}`);
  }
  return 0;
}

async function remove(ctx: Context, image: Image, snapshotName: string): Promise<number> {
  // qemu-img 7.2 looks the snapshot up by name only (bdrv_snapshot_find), as the engine's deleteSnapshot does.
  const notFound = (): number => {
    ctx.report(`Could not delete snapshot '${snapshotName}': snapshot not found`);
    return 1;
  };
  if (!image.snapshots.some((s) => s.name === snapshotName)) return notFound();
  try {
    await image.deleteSnapshot(snapshotName);
  } catch (error) {
    if (!isQcow2Error(error)) throw error;
    if (error.code === 'NOT_FOUND') return notFound();
    ctx.report(`Could not delete snapshot '${snapshotName}': ${describeError(error)}`);
    return 1;
  }
  return 0;
}
