import type { Context } from '../context.js';
import { CliError, describeError, describeFileError } from '../errors.js';
import { getopt } from '../getopt.js';
import type { ImageLike, OutputFile } from '../host.js';
import { checkCacheMode, cvtnum, isQemuDriver } from '../options.js';
import { Progress } from '../progress.js';
import { isZero } from '../zero-scan.js';
import { findSnapshot, parseSnapshotParam } from '../snapshot-param.js';
import { checkGetopt } from '../usage.js';
import { openWithChain, unsupportedOption } from './common.js';

const SECTOR = 512;
/** qemu-img convert's largest -S (MAX_BUF_SECTORS sectors). */
const MAX_SPARSE = 32768 * SECTOR;
/** Bytes read per request (qemu's convert buffer is 2 MiB too). */
const CHUNK = 2 * 1024 * 1024;

interface ConvertOptions {
  format?: string;
  outputFormat: string;
  snapshot?: string;
  progress: boolean;
  quiet: boolean;
  minSparse: number;
  noCreate: boolean;
  /** Make the output durable before returning: any -t mode but qemu's default for convert, unsafe. */
  flush: boolean;
}

/**
 * `qcow2 convert [-f fmt] [-O raw] [-l SNAPSHOT] [-p] [-q] [-n] [-S size] SRC... DST`: qemu-img
 * convert to a raw file. Zero and unallocated runs are not written (the new file is sparse
 * there), nor are runs of at least -S zero bytes inside data (default 4 KiB; 0 writes everything).
 * Several sources are concatenated, as qemu-img does. As qemu-img's default cache mode for
 * convert (unsafe), the output is not fsynced unless -t names another mode.
 */
export async function convertCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':hf:O:B:Cco:l:S:pt:T:qnm:WUr:',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'target-image-opts', hasArg: false },
        { name: 'salvage', hasArg: false },
        { name: 'target-is-zero', hasArg: false },
        { name: 'bitmaps', hasArg: false },
        { name: 'skip-broken-bitmaps', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
      ],
    }),
  );
  const options: ConvertOptions = {
    outputFormat: 'raw',
    progress: false,
    quiet: false,
    minSparse: 8 * SECTOR,
    noCreate: false,
    flush: false,
  };
  let compress = false;
  let backing: string | undefined;
  let createOptions: string | undefined;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'f':
        options.format = arg;
        break;
      case 'O':
        options.outputFormat = arg;
        break;
      case 'B':
        backing = arg;
        break;
      case 'c':
        compress = true;
        break;
      case 'o':
        createOptions = arg;
        break;
      case 'l':
        options.snapshot = arg;
        break;
      case 'S': {
        const value = strtoszOrInvalidSparse(arg);
        if (value % SECTOR !== 0 || value > MAX_SPARSE) throw invalidSparse();
        options.minSparse = value;
        break;
      }
      case 'p':
        options.progress = true;
        break;
      case 'q':
        options.quiet = true;
        break;
      case 'n':
        options.noCreate = true;
        break;
      case 't':
        if (!checkCacheMode(arg)) throw new CliError(`Invalid cache option: ${arg}`);
        options.flush = arg !== 'unsafe';
        break;
      case 'T':
        if (!checkCacheMode(arg)) throw new CliError(`Invalid source cache option: ${arg}`);
        break;
      case 'm': {
        const n = /^[0-9]+$/.test(arg) ? Number(arg) : NaN;
        if (!(n >= 1 && n <= 16)) {
          throw new CliError('Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
        }
        break;
      }
      case 'r':
        cvtnum('rate limit', arg);
        break;
      case 'object':
      case 'image-opts':
      case 'target-image-opts':
      case 'bitmaps':
        throw unsupportedOption(option);
      default:
        break; // -C, -W, -U, --salvage, --target-is-zero, --skip-broken-bitmaps: no effect on a raw copy
    }
  }
  if (options.quiet) options.progress = false;
  const files = parsed.operands;
  if (files.length < 2) throw new CliError('Must specify image file name');
  const sources = files.slice(0, -1);
  const target = files[files.length - 1] as string;

  if (options.outputFormat !== 'raw' && options.outputFormat !== 'file') {
    if (!isQemuDriver(options.outputFormat)) throw new CliError(`Unknown file format '${options.outputFormat}'`);
    throw new CliError(`-O ${options.outputFormat}: qcow2 convert writes raw images only (-O raw)`);
  }
  if (compress) throw new CliError('Compression not supported for this file format');
  if (backing !== undefined) throw new CliError(`Backing file not supported for file format 'raw'`);
  if (createOptions !== undefined) throw new CliError(`-o ${createOptions}: creation options are not supported by qcow2 convert`);
  const snapshotParam = options.snapshot === undefined ? undefined : parseSnapshotParam(options.snapshot);
  if (snapshotParam !== undefined && sources.length > 1) {
    throw new CliError('No support for concatenating multiple snapshot');
  }

  const progress = new Progress(ctx.out, options.progress, 1);
  progress.set(0);
  const opened: ImageLike[] = [];
  try {
    for (const source of sources) opened.push(await openWithChain(ctx, source, options.format));
    let toCopy = opened.slice();
    if (snapshotParam !== undefined) {
      const base = opened[0] as ImageLike;
      const found = findSnapshot(base.snapshots, snapshotParam);
      if (found === undefined) throw new CliError("Failed to load snapshot: Can't find snapshot");
      let view: ImageLike;
      try {
        view = await base.openSnapshot(found.id);
      } catch (error) {
        throw new CliError(`Failed to load snapshot: ${describeError(error)}`, { cause: error });
      }
      opened.push(view);
      toCopy = [view];
    }
    await copyToRaw(ctx, toCopy, target, options, progress);
  } finally {
    for (const image of opened.reverse()) await image.close().catch(() => undefined);
    progress.end();
  }
  return 0;
}

function invalidSparse(): CliError {
  return new CliError(
    `Invalid buffer size for sparse output specified. Valid sizes are multiples of ${SECTOR} up to ${MAX_SPARSE}. ` +
      'Select 0 to disable sparse detection (fully allocates output).',
  );
}

function strtoszOrInvalidSparse(arg: string): number {
  try {
    return cvtnum('buffer size for sparse output', arg);
  } catch (error) {
    if (error instanceof CliError && error.message.startsWith('Invalid buffer size for sparse output specified. Must')) {
      throw invalidSparse();
    }
    throw error;
  }
}

async function copyToRaw(
  ctx: Context,
  sources: readonly ImageLike[],
  target: string,
  options: ConvertOptions,
  progress: Progress,
): Promise<void> {
  // qemu counts in 512-byte sectors: a raw source of 1000 bytes converts to 1024.
  const sizes = sources.map((s) => Math.ceil(s.virtualSize / SECTOR) * SECTOR);
  const total = sizes.reduce((a, b) => a + b, 0);
  const targetError = (error: unknown): CliError =>
    new CliError(`${target}: error while converting raw: ${describeError(error)}`, { cause: error });
  let output: OutputFile;
  if (options.noCreate) {
    try {
      output = await ctx.host.openOutput(target, { create: false });
    } catch (error) {
      throw new CliError(`Could not open '${target}': ${describeFileError(error)}`, { cause: error });
    }
    if ((await output.size()) < total) {
      await output.close();
      throw new CliError('output file is smaller than input file');
    }
  } else {
    try {
      output = await ctx.host.openOutput(target, { create: true });
    } catch (error) {
      throw targetError(new CliError(`Could not create '${target}': ${describeFileError(error)}`, { cause: error }));
    }
  }
  const zeroInit = !options.noCreate;
  try {
    if (!options.noCreate) await output.truncate(total);
    // Progress follows the bytes that need copying, as qemu's follows allocated sectors.
    let work = 0;
    const plans: { image: ImageLike; base: number; extents: Awaited<ReturnType<ImageLike['extents']>> }[] = [];
    let base = 0;
    for (const [i, image] of sources.entries()) {
      let extents;
      try {
        extents = image.virtualSize > 0 ? await image.extents(0, image.virtualSize) : [];
      } catch (error) {
        throw new CliError(`error while reading block status at offset ${base}: ${describeError(error)}`, { cause: error });
      }
      for (const e of extents) if (e.kind === 'data' || !zeroInit || options.minSparse === 0) work += e.length;
      plans.push({ image, base, extents });
      base += sizes[i] as number;
    }
    let done = 0;
    const buffer = new Uint8Array(CHUNK);
    const zeros = new Uint8Array(CHUNK);
    for (const { image, base: at, extents } of plans) {
      for (const e of extents) {
        const isData = e.kind === 'data';
        if (!isData && zeroInit && options.minSparse !== 0) continue;
        for (let pos = e.offset; pos < e.offset + e.length; pos += CHUNK) {
          const n = Math.min(CHUNK, e.offset + e.length - pos);
          if (!isData) {
            await writeOut(output, zeros.subarray(0, n), at + pos, targetError);
          } else {
            const chunk = buffer.subarray(0, n);
            try {
              await image.read(chunk, pos);
            } catch (error) {
              throw new CliError(`error while reading at byte ${at + pos}: ${describeError(error)}`, { cause: error });
            }
            await writeChunk(output, chunk, at + pos, zeroInit ? options.minSparse : 0, targetError);
          }
          done += n;
          progress.set((done / work) * 100);
        }
      }
    }
    if (options.flush) {
      try {
        await output.flush();
      } catch (error) {
        throw targetError(error);
      }
    }
    progress.set(100);
  } finally {
    await output.close().catch(() => undefined);
  }
}

async function writeOut(
  output: OutputFile,
  bytes: Uint8Array,
  offset: number,
  targetError: (error: unknown) => CliError,
): Promise<void> {
  try {
    await output.write(bytes, offset);
  } catch (error) {
    throw targetError(error);
  }
}

/**
 * Writes `chunk` at `offset`, leaving out runs of zero sectors at least `minSparse` bytes long
 * (the target reads zeros there already); `minSparse` 0 writes everything.
 */
async function writeChunk(
  output: OutputFile,
  chunk: Uint8Array,
  offset: number,
  minSparse: number,
  targetError: (error: unknown) => CliError,
): Promise<void> {
  if (minSparse === 0) {
    await writeOut(output, chunk, offset, targetError);
    return;
  }
  if (isZero(chunk)) return;
  let spanStart = 0; // start of the bytes not yet written or skipped
  let zeroStart = -1;
  for (let s = 0; s < chunk.length; s += SECTOR) {
    const e = Math.min(s + SECTOR, chunk.length);
    if (isZero(chunk, s, e)) {
      if (zeroStart < 0) zeroStart = s;
      continue;
    }
    if (zeroStart >= 0 && s - zeroStart >= minSparse) {
      if (zeroStart > spanStart) await writeOut(output, chunk.subarray(spanStart, zeroStart), offset + spanStart, targetError);
      spanStart = s;
    }
    zeroStart = -1;
  }
  const tailZero = zeroStart >= 0 && chunk.length - zeroStart >= minSparse;
  const end = tailZero ? zeroStart : chunk.length;
  if (end > spanStart) await writeOut(output, chunk.subarray(spanStart, end), offset + spanStart, targetError);
}
