import type { Context } from '../context.js';
import { CliError, describeError, describeFileError, isCliError } from '../errors.js';
import { getopt } from '../getopt.js';
import type { CreateOptions } from '@qcow2/engine';
import { createOptionsHelp, qcow2CreateOptions, QCOW2_CREATE_OPTS } from '../create-opts.js';
import type { ImageLike, OutputFile } from '../host.js';
import { checkCacheMode, cvtnum, isQemuDriver } from '../options.js';
import { hasHelpOption, isValidOptionList, QemuOpts } from '../qemu-opts.js';
import { Progress } from '../progress.js';
import { isZero, zeroRuns } from '../zero-scan.js';
import { pageAlignedBuffers } from '../aligned-buffers.js';
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
        if (!isValidOptionList(arg)) throw new CliError(`Invalid option list: ${arg}`);
        createOptions = createOptions === undefined ? arg : `${createOptions},${arg}`;
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

  const outFormat = options.outputFormat === 'file' ? 'raw' : options.outputFormat;
  if (outFormat !== 'raw' && outFormat !== 'qcow2') {
    if (!isQemuDriver(outFormat)) throw new CliError(`Unknown file format '${outFormat}'`);
    throw new CliError(`-O ${outFormat}: qcow2 convert writes raw and qcow2 images only`);
  }
  if (createOptions !== undefined && hasHelpOption(createOptions)) {
    ctx.out(createOptionsHelp(outFormat, true));
    return 0;
  }
  if (compress && outFormat === 'raw') throw new CliError('Compression not supported for this file format');
  if (backing !== undefined) {
    if (outFormat === 'raw') throw new CliError(`Backing file not supported for file format 'raw'`);
    throw new CliError('-B: a backing file for the output is not supported by qcow2 convert');
  }
  if (createOptions !== undefined && outFormat === 'raw') {
    throw new CliError(`-o ${createOptions}: creation options are not supported for raw output by qcow2 convert`);
  }
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
    if (outFormat === 'raw') await copyToRaw(ctx, toCopy, target, options, progress);
    else await copyToQcow2(ctx, toCopy, target, options, { compress, list: createOptions }, progress);
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
    const [buffer, zeros] = pageAlignedBuffers(2, CHUNK) as [Uint8Array, Uint8Array];
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
  const runs = zeroRuns(chunk, minSparse);
  let spanStart = 0; // start of the bytes not yet written or skipped
  for (let i = 0; i < runs.length; i += 2) {
    const zeroStart = runs[i] as number;
    if (zeroStart > spanStart) await writeOut(output, chunk.subarray(spanStart, zeroStart), offset + spanStart, targetError);
    spanStart = runs[i + 1] as number;
  }
  if (chunk.length > spanStart) await writeOut(output, chunk.subarray(spanStart), offset + spanStart, targetError);
}

interface Qcow2Target {
  compress: boolean;
  /** The -o option list. */
  list: string | undefined;
}

type WritableImage = ImageLike & Required<Pick<ImageLike, 'write' | 'writeZeroes' | 'writeCompressed' | 'flush'>>;

/** Writes in flight: one, so clusters are allocated in guest order as qemu-img convert (without -W) allocates them. */
const IN_FLIGHT = 1;

/**
 * Chunks read ahead of the one being written (qemu-img convert's coroutines read the next chunks
 * while one writes, in order): the source's reads, the zero scan and the target's writes overlap.
 */
const READ_AHEAD = 4;

/**
 * qemu-img convert -O qcow2: the target created with the -o options and the sources' total size,
 * then opened writable. Unallocated and zero runs of the sources are left alone (a new qcow2 image
 * reads as zeros: qemu's has_zero_init), and so are runs of at least -S zero bytes inside data;
 * with -n (an existing target) they are written as zeros instead. With -c every cluster with data
 * is written compressed, whole (the last one may be short at the end of the image), all-zero
 * clusters left unallocated.
 */
async function copyToQcow2(
  ctx: Context,
  sources: readonly ImageLike[],
  target: string,
  options: ConvertOptions,
  qcow2: Qcow2Target,
  progress: Progress,
): Promise<void> {
  const sizes = sources.map((s) => Math.ceil(s.virtualSize / SECTOR) * SECTOR);
  const total = sizes.reduce((a, b) => a + b, 0);
  const targetError = (error: unknown): CliError =>
    new CliError(`${target}: error while converting qcow2: ${describeError(error)}`, { cause: error });
  if (!options.noCreate) {
    const opts = new QemuOpts(QCOW2_CREATE_OPTS);
    if (qcow2.list !== undefined) opts.parse(qcow2.list);
    opts.set('size', String(total));
    if (opts.has('backing_file')) throw new CliError('-o backing_file: a backing file for the output is not supported by qcow2 convert');
    if (qcow2.compress) {
      if (opts.get('encryption')?.value === true || opts.has('encrypt.format')) {
        throw new CliError('Compression and encryption not supported at the same time');
      }
      const preallocation = opts.get('preallocation')?.str;
      if (preallocation !== undefined && preallocation !== 'off') {
        throw new CliError('Compression and preallocation not supported at the same time');
      }
    }
    let create: CreateOptions;
    try {
      create = qcow2CreateOptions(opts);
    } catch (error) {
      throw targetError(error);
    }
    create.size = total;
    try {
      await ctx.host.createImage(target, 'qcow2', create);
    } catch (error) {
      throw targetError(error);
    }
  }
  let image: ImageLike;
  try {
    image = await ctx.host.openImage(target, {
      format: 'qcow2',
      backing: true,
      writable: true,
      cacheMode: options.flush ? 'writeback' : 'unsafe',
    });
  } catch (error) {
    throw new CliError(describeError(error), { cause: error });
  }
  try {
    if (image.readOnly !== false || typeof image.write !== 'function') {
      throw new CliError(`Could not open '${target}': the image did not open for writing`);
    }
    if (options.noCreate && image.virtualSize < total) throw new CliError('output file is smaller than input file');
    await copyInto(sources, sizes, image as WritableImage, options, qcow2.compress, progress, targetError);
    if (options.flush) {
      try {
        await image.flush!();
      } catch (error) {
        throw targetError(error);
      }
    }
    progress.set(100);
  } finally {
    await image.close().catch(() => undefined);
  }
}

async function copyInto(
  sources: readonly ImageLike[],
  sizes: readonly number[],
  image: WritableImage,
  options: ConvertOptions,
  compress: boolean,
  progress: Progress,
  targetError: (error: unknown) => CliError,
): Promise<void> {
  const zeroInit = !options.noCreate;
  const minSparse = options.minSparse;
  const cluster = image.clusterSize ?? 65536;
  // Progress follows the bytes that need copying.
  let work = 0;
  const plans: { image: ImageLike; base: number; extents: Awaited<ReturnType<ImageLike['extents']>> }[] = [];
  let base = 0;
  for (const [i, source] of sources.entries()) {
    let extents;
    try {
      extents = source.virtualSize > 0 ? await source.extents(0, source.virtualSize) : [];
    } catch (error) {
      throw new CliError(`error while reading block status at offset ${base}: ${describeError(error)}`, { cause: error });
    }
    for (const e of extents) if (e.kind === 'data' || !zeroInit || minSparse === 0) work += e.length;
    plans.push({ image: source, base, extents });
    base += sizes[i] as number;
  }
  const total = base;
  let done = 0;
  const advance = (n: number): void => {
    done += n;
    progress.set(work === 0 ? 100 : (done / work) * 100);
  };
  const pool = new RequestPool(IN_FLIGHT);
  // Buffers are reused (fresh ones cost page faults): one for each write in flight and each
  // chunk read ahead, and one more.
  const ring = new BufferRing(IN_FLIGHT + READ_AHEAD + 1, Math.max(CHUNK, cluster));
  const run = (fn: () => Promise<void>): Promise<void> =>
    pool.run(async () => {
      try {
        await fn();
      } catch (error) {
        throw isCliError(error) ? error : targetError(error);
      }
    });
  const read = async (source: ImageLike, dst: Uint8Array, offset: number, at: number): Promise<void> => {
    try {
      await source.read(dst, offset);
    } catch (error) {
      throw new CliError(`error while reading at byte ${at + offset}: ${describeError(error)}`, { cause: error });
    }
  };

  if (compress) {
    // Chunks of whole target clusters (CHUNK is a multiple of every cluster size), read ahead
    // (across extents and sources) as below; each run of clusters that are not all zeros goes to
    // one compressed write.
    const span = Math.max(CHUNK, cluster);
    const ahead: CompressedChunk[] = [];
    let nextAt = 0;
    const fill = (): void => {
      while (ahead.length < READ_AHEAD && nextAt < total) {
        const at = nextAt;
        const length = Math.min(span, total - at);
        nextAt += length;
        const pieces = piecesOf(plans, sizes, at, length);
        if (pieces.every((p) => !p.data)) {
          ahead.push({ at, length, pieces, buffer: undefined, ready: undefined });
          continue;
        }
        const buffer = ring.next().subarray(0, length);
        buffer.fill(0);
        const ready = (async () => {
          for (const p of pieces) if (p.data) await read(p.image, buffer.subarray(p.into, p.into + p.length), p.offset, p.base);
        })();
        ready.catch(() => undefined); // awaited in turn below
        ahead.push({ at, length, pieces, buffer, ready });
      }
    };
    fill();
    for (let item = ahead.shift(); item !== undefined; item = ahead.shift()) {
      const { at, length, pieces, buffer, ready } = item;
      if (buffer === undefined) {
        if (!zeroInit) await run(() => image.writeZeroes(at, length, { mayUnmap: true }));
        if (!zeroInit || minSparse === 0) advance(length);
        fill();
        continue;
      }
      await ready;
      let runStart = -1;
      const flushRun = async (end: number): Promise<void> => {
        if (runStart < 0) return;
        const from = runStart;
        runStart = -1;
        await run(() => image.writeCompressed(buffer.subarray(from, end), at + from));
      };
      for (let c = 0; c < length; c += cluster) {
        const end = Math.min(c + cluster, length);
        if (!isZero(buffer, c, end)) {
          if (runStart < 0) runStart = c;
          continue;
        }
        await flushRun(c);
        if (!zeroInit) await run(() => image.writeZeroes(at + c, end - c, { mayUnmap: true }));
      }
      await flushRun(length);
      advance(pieces.reduce((sum, p) => sum + (p.data || !zeroInit || minSparse === 0 ? p.length : 0), 0));
      fill();
    }
  } else {
    // A pipeline in guest order: up to READ_AHEAD chunks being read while the oldest is written.
    // Each chunk's buffer is taken in turn from a ring larger than the chunks that can hold one.
    const chunks = dataChunks(plans, zeroInit && minSparse !== 0);
    const scanSparse = zeroInit ? minSparse : 0;
    const ahead: ChunkInFlight[] = [];
    const fill = (): void => {
      while (ahead.length < READ_AHEAD) {
        const next = chunks.next();
        if (next.done === true) return;
        const c = next.value;
        if (!c.data) {
          ahead.push({ chunk: c, buffer: undefined, ready: undefined });
          continue;
        }
        const buffer = ring.next().subarray(0, c.length);
        // The zero scan runs as soon as the bytes are in, while earlier chunks are being written:
        // the next write then goes out right when the one before completes.
        const ready = read(c.source, buffer, c.pos, c.base).then(() => sparseSpans(buffer, scanSparse));
        ready.catch(() => undefined); // awaited in turn below; not an unhandled rejection meanwhile
        ahead.push({ chunk: c, buffer, ready });
      }
    };
    fill();
    for (let item = ahead.shift(); item !== undefined; item = ahead.shift()) {
      const { chunk: c, buffer, ready } = item;
      const offset = c.base + c.pos;
      if (buffer === undefined) {
        await run(() => image.writeZeroes(offset, c.length, { mayUnmap: true }));
      } else {
        const spans = (await ready) as Span[];
        await run(() => writeSpans(image, buffer, offset, spans, zeroInit));
      }
      advance(c.length);
      fill();
    }
  }
  await pool.drain();
}

interface Chunk {
  source: ImageLike;
  /** Where the source starts in the target. */
  base: number;
  /** Offset in the source. */
  pos: number;
  length: number;
  /** False: zeros to write (only yielded when zero runs are written). */
  data: boolean;
}

interface CompressedChunk {
  /** Target offset and length (whole clusters, but for the end of the image). */
  at: number;
  length: number;
  pieces: Piece[];
  /** The chunk's bytes once `ready` resolves; undefined when no piece has data. */
  buffer: Uint8Array | undefined;
  ready: Promise<void> | undefined;
}

interface ChunkInFlight {
  chunk: Chunk;
  /** The chunk's bytes once `ready` resolves; undefined for zeros. */
  buffer: Uint8Array | undefined;
  /** The chunk's data and zero runs, once read and scanned. */
  ready: Promise<Span[]> | undefined;
}


/** The chunks to copy in guest order, at most CHUNK bytes each; zero extents skipped when `skipZeros`. */
function* dataChunks(
  plans: readonly { image: ImageLike; base: number; extents: Awaited<ReturnType<ImageLike['extents']>> }[],
  skipZeros: boolean,
): Generator<Chunk> {
  for (const { image: source, base, extents } of plans) {
    for (const e of extents) {
      const data = e.kind === 'data';
      if (!data && skipZeros) continue;
      for (let pos = e.offset; pos < e.offset + e.length; pos += CHUNK) {
        yield { source, base, pos, length: Math.min(CHUNK, e.offset + e.length - pos), data };
      }
    }
  }
}

interface Piece {
  image: ImageLike;
  /** Offset in the source. */
  offset: number;
  /** Where the source starts in the target. */
  base: number;
  /** Where the piece goes in the cluster buffer. */
  into: number;
  length: number;
  data: boolean;
}

/** What of the sources lands in the target range [at, at + length), extent by extent. */
function piecesOf(
  plans: readonly { image: ImageLike; base: number; extents: Awaited<ReturnType<ImageLike['extents']>> }[],
  sizes: readonly number[],
  at: number,
  length: number,
): Piece[] {
  const pieces: Piece[] = [];
  const end = at + length;
  for (const [i, plan] of plans.entries()) {
    const size = sizes[i] as number;
    if (plan.base >= end || plan.base + size <= at) continue;
    const from = Math.max(at, plan.base) - plan.base;
    const to = Math.min(end, plan.base + size) - plan.base;
    let covered = from;
    for (const e of extentsIn(plan.extents, from, to)) {
      const s = Math.max(e.offset, from);
      const t = Math.min(e.offset + e.length, to);
      if (s > covered) pieces.push({ image: plan.image, offset: covered, base: plan.base, into: plan.base + covered - at, length: s - covered, data: false });
      pieces.push({ image: plan.image, offset: s, base: plan.base, into: plan.base + s - at, length: t - s, data: e.kind === 'data' });
      covered = t;
    }
    // Past the end of a source whose size is not a sector multiple: zeros.
    if (covered < to) pieces.push({ image: plan.image, offset: covered, base: plan.base, into: plan.base + covered - at, length: to - covered, data: false });
  }
  return pieces;
}

/** The extents overlapping [from, to), found by binary search (extents are sorted). */
function extentsIn<T extends { offset: number; length: number }>(extents: readonly T[], from: number, to: number): T[] {
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = extents[mid] as T;
    if (e.offset + e.length <= from) lo = mid + 1;
    else hi = mid;
  }
  const out: T[] = [];
  for (let i = lo; i < extents.length && (extents[i] as T).offset < to; i++) out.push(extents[i] as T);
  return out;
}

/** A run of a chunk: bytes to write, or (data false) zero sectors to leave out or write as zeros. */
interface Span {
  start: number;
  end: number;
  data: boolean;
}

/**
 * The runs of `chunk`: runs of zero sectors at least `minSparse` bytes long are zero spans, the
 * rest data spans (`minSparse` 0: all of it one data span).
 */
function sparseSpans(chunk: Uint8Array, minSparse: number): Span[] {
  if (minSparse === 0) return [{ start: 0, end: chunk.length, data: true }];
  const runs = zeroRuns(chunk, minSparse);
  const spans: Span[] = [];
  let spanStart = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const zeroStart = runs[i] as number;
    const zeroEnd = runs[i + 1] as number;
    if (zeroStart > spanStart) spans.push({ start: spanStart, end: zeroStart, data: true });
    spans.push({ start: zeroStart, end: zeroEnd, data: false });
    spanStart = zeroEnd;
  }
  if (chunk.length > spanStart) spans.push({ start: spanStart, end: chunk.length, data: true });
  return spans;
}

/**
 * Writes the spans of `chunk` at `offset`, in order: data spans as data, zero spans left out
 * (`zeroInit`: the target reads zeros there already) or written as zeros.
 */
async function writeSpans(image: WritableImage, chunk: Uint8Array, offset: number, spans: readonly Span[], zeroInit: boolean): Promise<void> {
  for (const { start, end, data } of spans) {
    if (data) await image.write(chunk.subarray(start, end), offset + start);
    else if (!zeroInit) await image.writeZeroes(offset + start, end - start, { mayUnmap: true });
  }
}

/** `count` buffers of `size` bytes handed out in turn. */
class BufferRing {
  readonly #buffers: Uint8Array[];
  #at = 0;

  constructor(count: number, size: number) {
    this.#buffers = pageAlignedBuffers(count, size);
  }

  next(): Uint8Array {
    const buffer = this.#buffers[this.#at] as Uint8Array;
    this.#at = (this.#at + 1) % this.#buffers.length;
    return buffer;
  }
}

/** At most `limit` requests at once; the first failure is rethrown by the next run() or drain(). */
class RequestPool {
  readonly #limit: number;
  readonly #running = new Set<Promise<void>>();
  #failure: { error: unknown } | undefined;

  constructor(limit: number) {
    this.#limit = limit;
  }

  async run(fn: () => Promise<void>): Promise<void> {
    while (this.#running.size >= this.#limit) await Promise.race(this.#running);
    this.#check();
    const p: Promise<void> = fn()
      .catch((error: unknown) => {
        this.#failure ??= { error };
      })
      .finally(() => this.#running.delete(p));
    this.#running.add(p);
  }

  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.race(this.#running);
    this.#check();
  }

  #check(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
  }
}
