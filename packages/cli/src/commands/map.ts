import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { getopt } from '../getopt.js';
import {
  chainLayers,
  MAP_HUMAN_HEADER,
  MAP_HUMAN_UNMAPPABLE,
  mapEntriesFromExtents,
  renderMap,
} from '../map-entries.js';
import { cvtnum, outputFormat } from '../options.js';
import { checkGetopt, usageError } from '../usage.js';
import { openWithChain, unsupportedOption } from './common.js';

/**
 * `qcow2 map [-f fmt] [--output=human|json] [--start-offset=OFF] [--max-length=LEN] [-U] FILE`:
 * qemu-img map, the same text.
 */
export async function mapCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':f:s:l:hU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'format', hasArg: true, id: 'f' },
        { name: 'output', hasArg: true },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
        { name: 'start-offset', hasArg: true, id: 's' },
        { name: 'max-length', hasArg: true, id: 'l' },
      ],
    }),
  );
  let format: string | undefined;
  let output: string | undefined;
  let startOffset = 0;
  let maxLength: number | undefined;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'f':
        format = arg;
        break;
      case 'output':
        output = arg;
        break;
      case 's':
        startOffset = cvtnum('start offset', arg);
        break;
      case 'l':
        maxLength = cvtnum('max length', arg);
        break;
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break;
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  const ofmt = outputFormat(output);
  const filename = parsed.operands[0] as string;

  const image = await openWithChain(ctx, filename, format);
  try {
    ctx.out(ofmt === 'human' ? MAP_HUMAN_HEADER : '[');
    let length = image.virtualSize;
    if (maxLength !== undefined) length = Math.min(startOffset + maxLength, length);
    let entries: ReturnType<typeof mapEntriesFromExtents> = [];
    if (startOffset < length) {
      let extents;
      try {
        extents = await image.extents(startOffset, length - startOffset);
      } catch (error) {
        throw new CliError(`Could not read file metadata: ${describe(error)}`, { cause: error });
      }
      entries = mapEntriesFromExtents(extents, chainLayers(image, filename));
    }
    const complete = renderMap(entries, startOffset, ofmt === 'json', ctx.out);
    if (!complete) throw new CliError(MAP_HUMAN_UNMAPPABLE);
    if (ofmt === 'json') ctx.out(']\n');
  } finally {
    await image.close();
  }
  return 0;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
