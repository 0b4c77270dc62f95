import { checkImage, type CheckMessage, type CheckResult } from '@qcow2/engine';
import { createNodeStorage } from '@qcow2/storage-node';
import type { Storage } from '@qcow2/storage';
import { formatFixed } from '../c-format.js';
import type { Context } from '../context.js';
import { CliError, describeError, describeFileError } from '../errors.js';
import { getopt } from '../getopt.js';
import { checkCacheMode, imageFormat, outputFormat } from '../options.js';
import { toJsonPretty, type QDict } from '../qobject.js';
import { checkGetopt, usageError } from '../usage.js';
import { unsupportedOption } from './common.js';

/** qemu's probe: qcow2 for the magic and a version of at least 2, qcow (version 1, not read here) for version 1, else raw. */
async function probeAsQemu(storage: Storage): Promise<'qcow2' | 'qcow' | 'raw'> {
  const head = new Uint8Array(8);
  let count: number;
  try {
    count = await storage.read(head, 0);
  } catch {
    return 'raw';
  }
  const view = new DataView(head.buffer);
  if (count < 8 || view.getUint32(0) !== 0x514649fb) return 'raw';
  const version = view.getUint32(4);
  return version >= 2 ? 'qcow2' : version === 1 ? 'qcow' : 'raw';
}

/** qemu-img check's exit statuses. */
export const CHECK_EXIT = { clean: 0, failed: 1, corruptions: 2, leaks: 3, unsupported: 63 } as const;

/** qemu-img's dump_human_image_check. */
export function humanImageCheck(result: CheckResult): string {
  let out = '';
  if (result.corruptions === 0 && result.leaks === 0 && result.checkErrors === 0) {
    out += 'No errors were found on the image.\n';
  } else {
    if (result.corruptions > 0) {
      out += `\n${result.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (result.leaks > 0) {
      out += `\n${result.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (result.checkErrors > 0) out += `\n${result.checkErrors} internal errors have occurred during the check.\n`;
  }
  if (result.totalClusters !== 0 && result.allocatedClusters !== 0) {
    const pct = (n: number, d: number): string => formatFixed((n * 100) / d, 2);
    out +=
      `${result.allocatedClusters}/${result.totalClusters} = ${pct(result.allocatedClusters, result.totalClusters)}% allocated, ` +
      `${pct(result.fragmentedClusters, result.allocatedClusters)}% fragmented, ` +
      `${pct(result.compressedClusters, result.allocatedClusters)}% compressed clusters\n`;
  }
  if (result.imageEndOffset !== 0) out += `Image end offset: ${result.imageEndOffset}\n`;
  return out;
}

/** qemu's ImageCheck as its QAPI visitor builds it (optional members only when non-zero). */
export function imageCheckQDict(result: CheckResult, filename: string, format: string): QDict {
  const dict: Record<string, number | string> = { filename, format, 'check-errors': result.checkErrors };
  const optional: [string, number][] = [
    ['image-end-offset', result.imageEndOffset],
    ['corruptions', result.corruptions],
    ['leaks', result.leaks],
    ['corruptions-fixed', result.corruptionsFixed],
    ['leaks-fixed', result.leaksFixed],
    ['total-clusters', result.totalClusters],
    ['allocated-clusters', result.allocatedClusters],
    ['fragmented-clusters', result.fragmentedClusters],
    ['compressed-clusters', result.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== 0) dict[key] = value;
  return dict;
}

/** The exit status qemu-img check gives a completed check. */
export function checkExitStatus(result: CheckResult): number {
  if (result.failure !== undefined || result.checkErrors > 0) return CHECK_EXIT.failed;
  if (result.corruptions > 0) return CHECK_EXIT.corruptions;
  if (result.leaks > 0) return CHECK_EXIT.leaks;
  return CHECK_EXIT.clean;
}

/**
 * `qcow2 check [-f fmt] [-r leaks|all] [--output=human|json] [-q] [-T cache] [-U] FILE`:
 * qemu-img check, with its messages, output (human or JSON, in qemu's key order) and exit
 * statuses: 0 clean, 1 the check could not complete (or found internal errors), 2 corruptions,
 * 3 leaked clusters only, 63 a format without checks (raw).
 */
export async function checkCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':hf:r:T:qU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'format', hasArg: true, id: 'f' },
        { name: 'repair', hasArg: true, id: 'r' },
        { name: 'output', hasArg: true },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
      ],
    }),
  );
  let format: string | undefined;
  let output: string | undefined;
  let repair: 'none' | 'leaks' | 'all' = 'none';
  let quiet = false;
  let cache: string | undefined;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'f':
        format = arg;
        break;
      case 'r':
        if (arg === 'leaks') repair = 'leaks';
        else if (arg === 'all') repair = 'all';
        else throw usageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${arg}`);
        break;
      case 'output':
        output = arg;
        break;
      case 'T':
        cache = arg;
        break;
      case 'q':
        quiet = true;
        break;
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break; // -U: nothing is locked
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  const filename = parsed.operands[0] as string;
  const ofmt = outputFormat(output);
  if (cache !== undefined && !checkCacheMode(cache)) throw new CliError(`Invalid source cache option: ${cache}`);
  const forced = imageFormat(format, filename);

  let storage: Storage;
  try {
    storage = await createNodeStorage(filename, { readOnly: repair === 'none' });
  } catch (error) {
    throw new CliError(`Could not open '${filename}': Could not open '${filename}': ${describeFileError(error)}`, { cause: error });
  }
  let result: CheckResult;
  try {
    const fmt = forced ?? (await probeAsQemu(storage));
    if (forced === undefined && fmt === 'raw' && repair !== 'none') {
      // qemu warns whenever it opens a probed raw image for writing.
      ctx.err(
        `WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
          '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
          "         Specify the 'raw' format explicitly to remove the restrictions.\n",
      );
    }
    if (fmt === 'qcow') throw new CliError(`Could not open '${filename}': qcow (version 1) images are not supported`);
    if (fmt !== 'qcow2') {
      ctx.report('This image format does not support checks');
      return CHECK_EXIT.unsupported;
    }
    const emit = (m: CheckMessage): void => {
      if (m.report) ctx.report(m.text);
      else ctx.err(`${m.text}\n`);
    };
    try {
      result = await checkImage(storage, { repair, onMessage: emit });
    } catch (error) {
      throw new CliError(`Could not open '${filename}': ${describeError(error)}`, { cause: error });
    }
  } finally {
    await storage.close().catch(() => undefined);
  }

  if (result.repaired !== undefined && ofmt === 'human' && !quiet) {
    ctx.out(
      'The following inconsistencies were found and repaired:\n\n' +
        `    ${result.repaired.leaks} leaked clusters\n` +
        `    ${result.repaired.corruptions} corruptions\n\n` +
        'Double checking the fixed image now...\n',
    );
  }
  if (result.failure === undefined && !quiet) {
    ctx.out(ofmt === 'json' ? `${toJsonPretty(imageCheckQDict(result, filename, 'qcow2'))}\n` : humanImageCheck(result));
  }
  if (result.failure !== undefined) {
    ctx.report(`Check failed: ${result.failure}`);
    return CHECK_EXIT.failed;
  }
  if (result.checkErrors > 0) {
    ctx.report('Check failed');
    return CHECK_EXIT.failed;
  }
  return checkExitStatus(result);
}
