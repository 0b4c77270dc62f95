import type { Context } from '../context.js';
import { CliError, describeError } from '../errors.js';
import { getopt } from '../getopt.js';
import { nextBenchOffset } from '../bench-plan.js';
import { formatFixed } from '../c-format.js';
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
 * `qcow2 bench [-c count] [-d depth] [-f fmt] [-o offset] [-q] [-s size] [-S step] [-t cache] [-U] FILE`:
 * qemu-img bench, read mode. `count` reads of `size` bytes, `depth` in flight, each `step`
 * (default `size`) after the previous one, wrapping at the end of the image.
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
        break;
      case 'w':
        throw new CliError('-w: write benchmarks are not supported yet (qcow2 opens images read-only)');
      case 'flush-interval': {
        const n = strtoulWhole(arg);
        if (n === undefined || n > INT_MAX) throw new CliError('Invalid flush interval specified');
        flushInterval = n;
        break;
      }
      case 'pattern': {
        const n = strtoulWhole(arg);
        if (n === undefined || n > 0xff) throw new CliError('Invalid pattern byte specified');
        break;
      }
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break; // -n, -q, -U, --no-drain
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  if (flushInterval !== 0) throw new CliError('--flush-interval is only available in write tests');
  if (depth * bufferSize > MAX_BUFFERS) {
    throw new CliError(`Could not allocate ${depth} buffers of ${bufferSize} bytes`);
  }
  const filename = parsed.operands[0] as string;
  const image = await openWithChain(ctx, filename, format);
  try {
    const imageSize = image.virtualSize;
    const stepSize = step === 0 ? bufferSize : step;
    ctx.out(
      `Sending ${count} read requests, ${bufferSize} bytes each, ${depth} in parallel ` +
        `(starting at offset ${offset}, step size ${stepSize})\n`,
    );
    const start = ctx.now();
    await runBench(image, { count, depth, bufferSize, step: stepSize, offset, imageSize });
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

/** bench_cb's loop: keep `depth` reads in flight until `count` have completed. */
async function runBench(
  image: { read(dst: Uint8Array, offset: number): Promise<void> },
  plan: BenchPlan,
): Promise<void> {
  const buffers = Array.from({ length: Math.min(plan.depth, Math.max(plan.count, 1)) }, () => new Uint8Array(plan.bufferSize));
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
