import type { CreateOptions } from '@qcow2/engine';
import { CliError } from './errors.js';
import { QemuOpts, type QemuOptDesc } from './qemu-opts.js';

/**
 * qemu-img 7.2's creation options for qcow2 (block/qcow2.c qcow2_create_opts) followed by the
 * file protocol's (block/file-posix.c), in the order qemu prints them in its "Formatting" line.
 */
export const QCOW2_CREATE_OPTS: readonly QemuOptDesc[] = [
  { name: 'encryption', type: 'bool' },
  { name: 'encrypt.format', type: 'string' },
  { name: 'encrypt.key-secret', type: 'string' },
  { name: 'encrypt.cipher-alg', type: 'string' },
  { name: 'encrypt.cipher-mode', type: 'string' },
  { name: 'encrypt.ivgen-alg', type: 'string' },
  { name: 'encrypt.ivgen-hash-alg', type: 'string' },
  { name: 'encrypt.hash-alg', type: 'string' },
  { name: 'encrypt.iter-time', type: 'number' },
  { name: 'cluster_size', type: 'size', def: '65536' },
  { name: 'extended_l2', type: 'bool', def: 'off' },
  { name: 'preallocation', type: 'string' },
  { name: 'compression_type', type: 'string', def: 'zlib' },
  { name: 'size', type: 'size' },
  { name: 'compat', type: 'string' },
  { name: 'backing_file', type: 'string' },
  { name: 'backing_fmt', type: 'string' },
  { name: 'data_file', type: 'string' },
  { name: 'data_file_raw', type: 'bool' },
  { name: 'lazy_refcounts', type: 'bool', def: 'off' },
  { name: 'refcount_bits', type: 'number', def: '16' },
  { name: 'nocow', type: 'bool' },
  { name: 'extent_size_hint', type: 'size' },
];

/** qemu-img create's raw options (size) and the file protocol's. */
export const RAW_CREATE_OPTS: readonly QemuOptDesc[] = [
  { name: 'size', type: 'size' },
  { name: 'nocow', type: 'bool' },
  { name: 'preallocation', type: 'string' },
  { name: 'extent_size_hint', type: 'size' },
];

const QCOW2_HELP: readonly string[] = [
  '  backing_file=<str>     - File name of a base image',
  '  backing_fmt=<str>      - Image format of the base image',
  '  cluster_size=<size>    - qcow2 cluster size',
  '  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])',
  '  compression_type=<str> - Compression method used for image cluster compression',
  '  data_file=<str>        - File name of an external data file',
  '  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image',
  '  encrypt.cipher-alg=<str> - Name of encryption cipher algorithm',
  '  encrypt.cipher-mode=<str> - Name of encryption cipher mode',
  "  encrypt.format=<str>   - Encrypt the image, format choices: 'aes', 'luks'",
  '  encrypt.hash-alg=<str> - Name of encryption hash algorithm',
  '  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds',
  '  encrypt.ivgen-alg=<str> - Name of IV generator algorithm',
  '  encrypt.ivgen-hash-alg=<str> - Name of IV generator hash algorithm',
  '  encrypt.key-secret=<str> - ID of secret providing qcow AES key or LUKS passphrase',
  "  encryption=<bool (on/off)> - Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
  '  extended_l2=<bool (on/off)> - Extended L2 tables',
  '  lazy_refcounts=<bool (on/off)> - Postpone refcount updates',
  '  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)',
  '  refcount_bits=<num>    - Width of a reference count entry in bits',
  '  size=<size>            - Virtual disk size',
];

const PROTOCOL_HELP: readonly string[] = [
  '  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable',
  '  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)',
];

const RAW_PROTOCOL_HELP: readonly string[] = [
  '  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)',
];

function byName(a: string, b: string): number {
  const key = (line: string): string => line.trim().split('=')[0] as string;
  return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
}

/**
 * print_block_option_help: the format's options; with a file name, the protocol's too, merged
 * and sorted, under "Supported options:".
 */
export function createOptionsHelp(format: 'qcow2' | 'raw', withFile: boolean): string {
  const own = format === 'qcow2' ? QCOW2_HELP : ['  size=<size>            - Virtual disk size'];
  if (!withFile) {
    return (
      `Supported ${format} options:\n${own.join('\n')}\n\n` +
      'The protocol level may support further options.\nSpecify the target filename to include those options.\n'
    );
  }
  const extra = format === 'qcow2' ? PROTOCOL_HELP : [...PROTOCOL_HELP, ...RAW_PROTOCOL_HELP];
  return `Supported options:\n${[...own, ...extra].sort(byName).join('\n')}\n`;
}

function str(opts: QemuOpts, name: string): string | undefined {
  const v = opts.get(name)?.value;
  return typeof v === 'string' ? v : undefined;
}

function bool(opts: QemuOpts, name: string): boolean | undefined {
  const v = opts.get(name)?.value;
  return typeof v === 'boolean' ? v : undefined;
}

/** A u64 option as a number (values past 2^53 only need to fail qemu's checks, which they do). */
function num(opts: QemuOpts, name: string): number | undefined {
  const v = opts.get(name)?.value;
  return typeof v === 'bigint' ? Number(v) : undefined;
}

const COMPAT: Readonly<Record<string, '0.10' | '1.1'>> = { '0.10': '0.10', v2: '0.10', '1.1': '1.1', v3: '1.1' };

/**
 * The engine's CreateOptions from parsed qcow2 creation options (size aside), with qemu's
 * refusals for what the qcow2 driver's option visitor refuses before creating anything.
 */
export function qcow2CreateOptions(opts: QemuOpts): CreateOptions {
  if (bool(opts, 'encryption') === true || str(opts, 'encrypt.format') !== undefined) {
    if (str(opts, 'encrypt.key-secret') === undefined) throw new CliError("Parameter 'encrypt.key-secret' is required for cipher");
    throw new CliError('Encryption is not supported by qcow2 (no --object secrets)');
  }
  const options: CreateOptions = {};
  const compat = str(opts, 'compat');
  // The visitor's order: version, backing-fmt, preallocation, compression-type (checked by the engine).
  if (compat !== undefined) options.compat = COMPAT[compat] ?? (compat as '0.10');
  const clusterSize = num(opts, 'cluster_size');
  if (clusterSize !== undefined) options.clusterSize = clusterSize;
  const refcountBits = num(opts, 'refcount_bits');
  if (refcountBits !== undefined) options.refcountBits = refcountBits;
  const extendedL2 = bool(opts, 'extended_l2');
  if (extendedL2 !== undefined) options.extendedL2 = extendedL2;
  const lazy = bool(opts, 'lazy_refcounts');
  if (lazy !== undefined) options.lazyRefcounts = lazy;
  const compression = str(opts, 'compression_type');
  if (compression !== undefined) options.compressionType = compression as 'zlib';
  const preallocation = str(opts, 'preallocation');
  if (preallocation !== undefined) options.preallocation = preallocation as 'off';
  const backingFile = str(opts, 'backing_file');
  if (backingFile !== undefined) options.backingFile = backingFile;
  const backingFormat = str(opts, 'backing_fmt');
  if (backingFormat !== undefined) {
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') {
      throw new CliError(`Backing format '${backingFormat}' is not supported (qcow2 and raw are)`);
    }
    options.backingFormat = backingFormat;
  }
  const dataFile = str(opts, 'data_file');
  if (dataFile !== undefined) options.dataFile = dataFile;
  const dataFileRaw = bool(opts, 'data_file_raw');
  if (dataFileRaw !== undefined) options.dataFileRaw = dataFileRaw;
  return options;
}
