import type { CreateOptions } from '@qcow2/engine';
import type { Context } from '../context.js';
import { createOptionsHelp, qcow2CreateOptions, QCOW2_CREATE_OPTS, RAW_CREATE_OPTS } from '../create-opts.js';
import { CliError, describeError, isCliError } from '../errors.js';
import { getopt } from '../getopt.js';
import { isQemuDriver } from '../options.js';
import { pathCombine } from '../path-combine.js';
import { hasHelpOption, isValidOptionList, QemuOpts } from '../qemu-opts.js';
import { strtosz } from '../strtosz.js';
import { checkGetopt, usageError } from '../usage.js';
import { unsupportedOption } from './common.js';

const INT64_MAX = (1n << 63n) - 1n;

/**
 * `qcow2 create [-f fmt] [-o options] [-b backing -F backing_fmt] [-u] [-q] FILE [SIZE]`:
 * qemu-img create for qcow2 (and raw) images. Options as qemu-img takes them (`-o` lists, which
 * can repeat, `-o help`), the backing file opened for its size and to check it exists (unless
 * -u), qemu's "Formatting '...'" line, qemu's messages, and the new file removed on failure.
 */
export async function createCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':F:b:f:ho:qu',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'object', hasArg: true },
      ],
    }),
  );
  let format = 'raw';
  let backingFile: string | undefined;
  let backingFormat: string | undefined;
  let optionList: string | undefined;
  let quiet = false;
  let unsafe = false;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'F':
        backingFormat = arg;
        break;
      case 'b':
        backingFile = arg;
        break;
      case 'f':
        format = arg;
        break;
      case 'o':
        if (!isValidOptionList(arg)) throw new CliError(`Invalid option list: ${arg}`);
        optionList = optionList === undefined ? arg : `${optionList},${arg}`;
        break;
      case 'q':
        quiet = true;
        break;
      case 'u':
        unsafe = true;
        break;
      case 'object':
        throw unsupportedOption(option);
      default:
        break;
    }
  }
  const [filename, sizeArg, ...extra] = parsed.operands;
  const knownFormat = format === 'qcow2' || format === 'raw' || format === 'file';
  if (optionList !== undefined && hasHelpOption(optionList)) {
    if (!knownFormat) throw new CliError(`Unknown file format '${format}'`);
    ctx.out(createOptionsHelp(format === 'qcow2' ? 'qcow2' : 'raw', filename !== undefined));
    return 0;
  }
  if (filename === undefined) throw usageError('Expecting image file name');
  let size: bigint | undefined;
  if (sizeArg !== undefined) {
    const r = strtosz(sizeArg);
    if (!r.ok && r.error === 'EINVAL') {
      throw new CliError(
        'Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n' +
          'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
      );
    }
    if (!r.ok || r.value > INT64_MAX) throw new CliError('Invalid image size specified. Must be between 0 and 9223372036854775807.');
    size = r.value;
  }
  if (extra.length > 0) throw usageError(`Unexpected argument: ${extra[0]}`);
  const fail = (message: string, hint?: string): CliError =>
    new CliError(`${filename}: ${message}`, hint === undefined ? {} : { hint });
  if (!knownFormat) {
    throw fail(isQemuDriver(format) ? `Formatting ${format} images is not supported (qcow2 and raw are)` : `Unknown file format '${format}'`);
  }
  const fmt: 'qcow2' | 'raw' = format === 'qcow2' ? 'qcow2' : 'raw';

  const opts = new QemuOpts(fmt === 'qcow2' ? QCOW2_CREATE_OPTS : RAW_CREATE_OPTS);
  try {
    if (optionList !== undefined) opts.parse(optionList);
    if (!opts.has('size')) {
      if (size !== undefined) opts.set('size', String(size));
    } else if (size !== undefined) {
      throw new CliError('The image size must be specified only once');
    }
    if (backingFile !== undefined) {
      if (fmt === 'raw') throw new CliError("Backing file not supported for file format 'raw'");
      opts.set('backing_file', backingFile);
    }
    if (backingFormat !== undefined) {
      if (fmt === 'raw') throw new CliError("Backing file format not supported for file format 'raw'");
      opts.set('backing_fmt', backingFormat);
    }
  } catch (error) {
    if (isCliError(error)) throw fail(error.message, error.hint);
    throw error;
  }

  const backing = opts.get('backing_file')?.str;
  const backingFmt = opts.get('backing_fmt')?.str;
  if (backing !== undefined) {
    if (backing === filename) throw fail('Error: Trying to create an image with the same filename as the backing file');
    if (backing === '') throw fail('Expected backing file name, got empty string');
  }
  let virtualSize = opts.has('size') ? Number(opts.get('size')?.value) : undefined;
  if (backing !== undefined && !unsafe) {
    const full = pathCombine(filename, backing);
    if (backingFmt !== undefined && backingFmt !== 'qcow2' && backingFmt !== 'raw' && backingFmt !== 'file') {
      const why = isQemuDriver(backingFmt) ? `the '${backingFmt}' format is not supported (qcow2 and raw are)` : `Unknown driver '${backingFmt}'`;
      throw fail(why, 'Could not open backing image.\n');
    }
    let backingSize: number;
    let detected: string;
    try {
      const image = await ctx.host.openImage(full, {
        backing: true,
        ...(backingFmt === undefined ? {} : { format: backingFmt === 'qcow2' ? 'qcow2' : 'raw' }),
      });
      backingSize = image.virtualSize;
      detected = image.format;
      await image.close();
    } catch (error) {
      throw fail(backingOpenFailure(error, full), 'Could not open backing image.\n');
    }
    if (backingFmt === undefined) throw fail('Backing file specified without backing format', `Detected format of ${detected}.`);
    if (virtualSize === undefined) {
      virtualSize = Math.ceil(backingSize / 512) * 512;
      opts.set('size', String(virtualSize));
    }
  } else if (backing !== undefined && backingFmt === undefined) {
    throw fail('Backing file specified without backing format');
  }
  if (virtualSize === undefined) throw fail('Image creation needs a size parameter');

  if (!quiet) ctx.out(`Formatting '${filename}', fmt=${fmt} ${opts.print()}\n`);

  let options: CreateOptions;
  try {
    options = fmt === 'qcow2' ? qcow2CreateOptions(opts) : {};
  } catch (error) {
    if (isCliError(error)) throw fail(error.message);
    throw error;
  }
  if (fmt === 'raw') {
    const preallocation = opts.get('preallocation')?.str;
    if (preallocation !== undefined && !['off', 'falloc', 'full'].includes(preallocation)) {
      throw fail(`invalid parameter value: ${preallocation}`);
    }
    if (preallocation !== undefined) options.preallocation = preallocation as 'off';
  }
  // qcow2 rounds the size up to whole sectors silently.
  options.size = Math.ceil(virtualSize / 512) * 512;
  try {
    await ctx.host.createImage(filename, fmt, options);
  } catch (error) {
    throw fail(describeError(error));
  }
  return 0;
}

/**
 * How qemu words a backing file that does not open: the file's own failure as it is, a failure
 * further down its chain without the "Could not open 'backing':" that our host puts first.
 */
function backingOpenFailure(error: unknown, full: string): string {
  const message = isCliError(error) ? error.message : describeError(error);
  const prefix = `Could not open '${full}': `;
  if (message.startsWith(`${prefix}Could not open backing file: `)) return message.slice(prefix.length);
  if (message.startsWith(`${prefix}the 'raw' format`) || message.startsWith(`${prefix}header magic`)) return 'Image is not in qcow2 format';
  return message;
}
