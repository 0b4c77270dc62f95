import type { Context } from '../context.js';
import { CliError, describeError, isCliError } from '../errors.js';
import { getopt } from '../getopt.js';
import type { CacheMode, ImageLike } from '../host.js';
import { checkCacheMode } from '../options.js';
import { runIoCommand, type IoSession } from '../qemu-io-commands.js';
import { checkGetopt, usageError } from '../usage.js';
import { openWithChain, unsupportedOption } from './common.js';

/**
 * `qcow2 io [-f fmt] [-r] [-t cache] [-d discard] [-U] [-c CMD]... [FILE]`: qemu-io's command
 * line. The image is opened writable unless -r, with qemu-io's defaults (writethrough: each
 * write flushed; discard=unmap). The -c commands run in order (or, with none, the lines of
 * standard input); `quit` stops. Exit status 1 when any command failed, as qemu-io.
 */
export async function ioCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':hc:d:f:rsnCmki:t:T:U',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'format', hasArg: true, id: 'f' },
        { name: 'cmd', hasArg: true, id: 'c' },
        { name: 'read-only', hasArg: false, id: 'r' },
        { name: 'snapshot', hasArg: false, id: 's' },
        { name: 'nocache', hasArg: false, id: 'n' },
        { name: 'copy-on-read', hasArg: false, id: 'C' },
        { name: 'misalign', hasArg: false, id: 'm' },
        { name: 'native-aio', hasArg: false, id: 'k' },
        { name: 'discard', hasArg: true, id: 'd' },
        { name: 'cache', hasArg: true, id: 't' },
        { name: 'trace', hasArg: true, id: 'T' },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
        { name: 'aio', hasArg: true, id: 'i' },
      ],
    }),
  );
  const commands: string[] = [];
  let format: string | undefined;
  let readOnly = false;
  // qemu-io's defaults: cache=writethrough, discard=unmap.
  let cache: CacheMode = 'writethrough';
  let discard: 'ignore' | 'unmap' = 'unmap';
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'c':
        commands.push(arg);
        break;
      case 'f':
        format = arg;
        break;
      case 'r':
        readOnly = true;
        break;
      case 'n':
        cache = 'none';
        break;
      case 't':
        if (!checkCacheMode(arg)) throw new CliError(`Invalid cache option: ${arg}`);
        cache = arg === 'directsync' || arg === 'writethrough' ? 'writethrough' : arg === 'off' ? 'none' : (arg as CacheMode);
        break;
      case 'd':
        if (!['ignore', 'off', 'unmap', 'on'].includes(arg)) throw new CliError(`Invalid discard option: ${arg}`);
        discard = arg === 'unmap' || arg === 'on' ? 'unmap' : 'ignore';
        break;
      case 'i':
        if (!['threads', 'native', 'io_uring'].includes(arg)) throw new CliError(`Invalid aio option: ${arg}`);
        break;
      case 'T':
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option === 'T' ? 'trace' : option);
      default:
        break; // -s, -C, -m, -k, -U
    }
  }
  if (parsed.operands.length > 1) throw usageError('Expecting at most one image file name');
  const filename = parsed.operands[0];

  // qemu's qcow2_signal_corruption reports the first fatal event on stderr and suppresses the rest.
  const corruption = { events: 0 };
  const reportCorruption = (message: string): void => {
    corruption.events++;
    ctx.err(`qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed\n`);
  };

  // Without a file, as qemu-io: only help and quit work, other commands fail.
  let image: ImageLike | undefined;
  if (filename !== undefined) {
    try {
      image = await openWithChain(
        ctx,
        filename,
        format,
        readOnly ? {} : { writable: true, cacheMode: cache, discard, onCorruption: (event) => reportCorruption(event.message) },
      );
    } catch (error) {
      throw new CliError(`can't open device ${filename}: ${isCliError(error) ? error.message : describeError(error)}`, {
        cause: error,
      });
    }
  }
  const session: IoSession = { image, out: ctx.out, err: ctx.err, now: ctx.now, quit: false, writethrough: cache === 'writethrough', corruption };
  let failed = false;
  try {
    const lines = commands.length > 0 ? commands : await ctx.stdinLines();
    for (const line of lines) {
      if (session.quit) break;
      if (!(await runIoCommand(session, line))) failed = true;
    }
  } finally {
    await image?.close();
  }
  return failed ? 1 : 0;
}
