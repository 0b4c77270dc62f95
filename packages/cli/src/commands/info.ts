import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { getopt } from '../getopt.js';
import { collectImageInfo, humanImageInfo, imageInfoQDict, type ImageInfo } from '../image-info.js';
import { imageFormat, outputFormat } from '../options.js';
import { toJsonPretty } from '../qobject.js';
import { checkGetopt, usageError } from '../usage.js';
import { unsupportedOption } from './common.js';

/**
 * `qcow2 info [-f fmt] [--output=human|json] [--backing-chain] [-U] FILE`: qemu-img info. Each
 * file is opened alone (no backing), as qemu-img does; with --backing-chain the backing files
 * are followed by their full names.
 */
export async function infoCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':f:hU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'format', hasArg: true, id: 'f' },
        { name: 'output', hasArg: true },
        { name: 'backing-chain', hasArg: false },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
      ],
    }),
  );
  let format: string | undefined;
  let output: string | undefined;
  let chain = false;
  for (const { option, arg } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'f':
        format = arg;
        break;
      case 'output':
        output = arg;
        break;
      case 'backing-chain':
        chain = true;
        break;
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break; // -U: nothing is locked
    }
  }
  if (parsed.operands.length !== 1) throw usageError('Expecting one image file name');
  const ofmt = outputFormat(output);

  const infos: ImageInfo[] = [];
  const seen = new Set<string>();
  let filename: string | undefined = parsed.operands[0] as string;
  let fmt = format;
  while (filename !== undefined) {
    if (seen.has(filename)) throw new CliError(`Backing file '${filename}' creates an infinite loop.`);
    seen.add(filename);
    const image = await ctx.host.openImage(filename, {
      backing: false,
      metadataOnly: true,
      ...(fmt === undefined ? {} : { format: imageFormat(fmt, filename) ?? 'raw' }),
    });
    let info: ImageInfo;
    try {
      info = collectImageInfo(image, filename, await ctx.host.allocatedSize(filename));
    } finally {
      await image.close();
    }
    infos.push(info);
    if (!chain) break;
    filename = info.fullBackingFilename ?? info.backingFilename;
    fmt = info.backingFilenameFormat;
  }

  if (ofmt === 'json') {
    const value = chain ? infos.map(imageInfoQDict) : imageInfoQDict(infos[0] as ImageInfo);
    ctx.out(`${toJsonPretty(value)}\n`);
  } else {
    ctx.out(infos.map(humanImageInfo).join('\n'));
  }
  return 0;
}
