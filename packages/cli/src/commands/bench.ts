import { pageAlignedBuffers } from '../aligned-buffers.js';
import type { Context } from '../context.js';
import { CliError, describeError } from '../errors.js';
import { getopt } from '../getopt.js';
import { nextBenchOffset } from '../bench-plan.js';
import { formatFixed } from '../c-format.js';
import type { CacheMode, ImageLike } from '../host.js';
import { checkCacheMode, cvtnum } from '../options.js';
import { checkGetopt, usageError } from '../usage.js';
import { openWithChain, unsupportedOption } from './common.js';

const INT_MAX = 2 ** 31 - 1;
/** We hold depth × size bytes of buffers; qemu crashes well before this. */
const MAX_BUFFERS = 2 ** 31;

/** qemu_strtoul(optarg, NULL, 0): a C integer in any base (0x.., 0..), the whole argument. */
function strtoulWhole(text: string): number | undefined {
  const match = /^\s*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (match === null) return undefined;
  const digits = match[1] as string;
  if (/^0[xX]/.test(digits)) return Number.parseInt(digits.slice(2), 16);
  if (digits.length > 1 && digits.startsWith('0')) return Number.parseInt(digits, 8);
  return Number(digits);
}

/**
 * `qcow2 bench [-c count] [-d depth] [-f fmt] [-o offset] [-q] [-s size] [-S step] [-t cache] [-U]
 * [-w [--pattern=N] [--flush-interval=N [--no-drain]]] FILE`: qemu-img bench. `count` requests of
 * `size` bytes (reads, or with -w writes of the pattern byte), `depth` in flight, each `step`
 * (default `size`) after the previous one, wrapping at the end of the image; with a flush interval
 * a flush after every that many completed writes (by default with the queue drained first).
 * -t unsafe makes flushes no-ops, writethrough flushes after every write.
 */
export async function benchCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':hc:d:f:ni:o:qs:S:t:wU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'flush-interval', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'pattern', hasArg: true },
        { name: 'no-drain', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
        { name: 'object', hasArg: true },
      ],
    }),
  );
  let count = 75000;
  let depth = 64;
  let offset = 0;
  let bufferSize = 4096;
  let step = 0;
  let format: string | undefined;
  let flushInterval = 0;
  let write = false;
  let pattern = 0;
  let drain = true;
  let forceShare = false;
  let cache: CacheMode = 'writeback';
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'c': {
        const n = strtoulWhole(arg);
        if (n === undefined || n > INT_MAX) throw new CliError('Invalid request count specified');
        count = n;
        break;
      }
      case 'd': {
        const n = strtoulWhole(arg);
        // qemu accepts 0 and then waits forever; refuse it instead.
        if (n === undefined || n > INT_MAX || n === 0) throw new CliError('Invalid queue depth specified');
        depth = n;
        break;
      }
      case 'f':
        format = arg;
        break;
      case 'i':
        if (!['threads', 'native', 'io_uring'].includes(arg)) throw new CliError(`Invalid aio option: ${arg}`);
        break;
      case 'o':
        offset = cvtnum('offset', arg);
        break;
      case 's':
        bufferSize = cvtnum('buffer size', arg, 0, INT_MAX);
        break;
      case 'S':
        step = cvtnum('step_size', arg, 0, INT_MAX);
        break;
      case 't':
        if (!checkCacheMode(arg)) throw new CliError('Invalid cache mode');
        cache = arg === 'directsync' || arg === 'writethrough' ? 'writethrough' : arg === 'off' ? 'none' : (arg as CacheMode);
        break;
      case 'w':
        write = true;
        break;
      case 'U':
        forceShare = true;
        break;
      case 'no-drain':
        drain = false;
        break;
      case 'flush-interval': {
        const n = strtoulWhole(arg);
        if (n === undefined || n > INT_MAX) throw new CliError('Invalid flush interval specified');
        flushInterval = n;
        break;
      }
      case 'pattern': {
        const n = strtoulWhole(arg);
        if (n === undefined || n > 0xff) throw new CliError('Invalid pattern byte specified');
        pattern = n;
        break;
      }
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break; // -n, -q
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  if (!write && flushInterval !== 0) throw new CliError('--flush-interval is only available in write tests');
  if (flushInterval !== 0 && flushInterval < depth) throw new CliError("Flush interval can't be smaller than depth");
  if (depth * bufferSize > MAX_BUFFERS) {
    throw new CliError(`Could not allocate ${depth} buffers of ${bufferSize} bytes`);
  }
  const filename = parsed.operands[0] as string;
  if (write && forceShare) {
    throw new CliError(`Could not open '${filename}': force-share=on can only be used with read-only images`);
  }
  const image = await openWithChain(ctx, filename, format, write ? { writable: true, cacheMode: cache } : {});
  try {
    if (write && (image.readOnly !== false || typeof image.write !== 'function')) {
      throw new CliError(`Could not open '${filename}': the image did not open for writing`);
    }
    const imageSize = image.virtualSize;
    const stepSize = step === 0 ? bufferSize : step;
    ctx.out(
      `Sending ${count} ${write ? 'write' : 'read'} requests, ${bufferSize} bytes each, ${depth} in parallel ` +
        `(starting at offset ${offset}, step size ${stepSize})\n`,
    );
    if (flushInterval !== 0) ctx.out(`Sending flush every ${flushInterval} requests\n`);
    const plan = { count, depth, bufferSize, step: stepSize, offset, imageSize };
    // As qemu-img: the read buffers exist, written once (qemu memsets them), before the clock starts.
    const buffers = write ? [] : readBuffers(plan);
    const start = ctx.now();
    if (write) {
      await runWriteBench(image as BenchTarget, plan, { pattern, flushInterval, drain, writethrough: cache === 'writethrough' });
    } else {
      await runBench(image, plan, buffers);
    }
    const seconds = ctx.now() - start;
    ctx.out(`Run completed in ${formatFixed(seconds, 3).padStart(3)} seconds.\n`);
  } finally {
    await image.close();
  }
  return 0;
}

interface BenchPlan {
  count: number;
  depth: number;
  bufferSize: number;
  step: number;
  offset: number;
  imageSize: number;
}

/**
 * One buffer per request in flight, page-aligned as qemu-img's (blk_blockalign; see
 * pageAlignedBuffers for why it matters to the kernel's copies), each written once so that its
 * pages exist before the clock starts (a fresh allocation is only mapped: the first read into it
 * would fault in every page).
 */
function readBuffers(plan: BenchPlan): Uint8Array[] {
  const buffers = pageAlignedBuffers(Math.min(plan.depth, Math.max(plan.count, 1)), plan.bufferSize);
  for (const buffer of buffers) buffer.fill(0);
  return buffers;
}

/** bench_cb's loop: keep `depth` reads in flight (one per buffer) until `count` have completed. */
async function runBench(
  image: { read(dst: Uint8Array, offset: number): Promise<void> },
  plan: BenchPlan,
  buffers: Uint8Array[],
): Promise<void> {
  let next = plan.offset;
  let issued = 0;
  const worker = async (buffer: Uint8Array): Promise<void> => {
    while (issued < plan.count) {
      const at = next;
      issued += 1;
      next = nextBenchOffset(next, plan.step, plan.imageSize, plan.bufferSize);
      if (at + plan.bufferSize > plan.imageSize) throw failedRequest('Input/output error');
      try {
        await image.read(buffer, at);
      } catch (error) {
        throw failedRequest(describeError(error));
      }
    }
  };
  await Promise.all(buffers.map(worker));
}

function failedRequest(reason: string): CliError {
  return new CliError(`Failed request: ${reason}`);
}

type BenchTarget = ImageLike & Required<Pick<ImageLike, 'write' | 'flush'>>;

interface WriteSettings {
  pattern: number;
  flushInterval: number;
  drain: boolean;
  writethrough: boolean;
}

/**
 * bench_cb in write mode: `depth` writes in flight; after the completion that makes the number of
 * finished requests a multiple of the flush interval, a flush — with drain, once the writes in
 * flight have completed and before any new one starts; without, alongside them. With writethrough
 * each write is followed by its flush before it counts as completed. The run ends when every
 * request has completed (or one failed) and nothing started is still running: a counter of the
 * writes and flushes in flight, not a set of their promises.
 */
async function runWriteBench(image: BenchTarget, plan: BenchPlan, settings: WriteSettings): Promise<void> {
  const buffer = pageAlignedBuffers(1, plan.bufferSize)[0]!.fill(settings.pattern);
  const { depth, bufferSize, step, imageSize } = plan;
  const { flushInterval, drain, writethrough } = settings;
  let n = plan.count;
  let inFlight = 0;
  /** Writes and flushes started and not yet settled (what the end of the run waits for). */
  let running = 0;
  let inFlush = false;
  let next = plan.offset;
  let failure: CliError | undefined;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const settle = (): void => {
    if ((n === 0 || failure !== undefined) && running === 0) finish();
  };
  const fail = (error: unknown): void => {
    failure ??= error instanceof CliError ? error : failedRequest(describeError(error));
  };
  const failed = (error: unknown): void => {
    running -= 1;
    fail(error);
    settle();
  };
  const flush = (then: (() => void) | undefined): void => {
    running += 1;
    image.flush().then(
      () => {
        running -= 1;
        then?.();
        settle();
      },
      (error: unknown) => {
        running -= 1;
        fail(new CliError(`Failed flush request: ${describeError(error)}`));
        settle();
      },
    );
  };
  const completed = (): void => {
    running -= 1;
    const remaining = n - inFlight;
    n -= 1;
    inFlight -= 1;
    // The last completion can start a flush too; the run is over either way (qemu's loop ends at n == 0).
    if (flushInterval !== 0 && remaining % flushInterval === 0) {
      if (inFlight === 0 || !drain) {
        if (drain) {
          inFlush = true;
          flush(() => {
            inFlush = false;
            issue();
          });
        } else {
          flush(undefined);
        }
      }
      if (drain) {
        settle();
        return;
      }
    }
    issue();
    settle();
  };
  const flushWritten = (): Promise<void> => image.flush().then(completed, failed);
  const issue = (): void => {
    while (failure === undefined && !inFlush && n > inFlight && inFlight < depth) {
      const at = next;
      inFlight += 1;
      next = nextBenchOffset(next, step, imageSize, bufferSize);
      if (at + bufferSize > imageSize) {
        fail(failedRequest('Input/output error'));
        return;
      }
      running += 1;
      if (writethrough) void image.write(buffer, at).then(flushWritten, failed);
      else void image.write(buffer, at).then(completed, failed);
    }
  };
  if (n === 0) return;
  issue();
  settle();
  await finished;
  if (failure !== undefined) throw failure;
}
