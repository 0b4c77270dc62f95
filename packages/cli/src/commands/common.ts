import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import type { ImageLike } from '../host.js';
import { imageFormat } from '../options.js';

export function unsupportedOption(name: string): CliError {
  return new CliError(`--${name} is not supported by qcow2`);
}

/** Opens `filename` with its backing chain, `-f` checked first. */
export async function openWithChain(ctx: Context, filename: string, format: string | undefined): Promise<ImageLike> {
  const fmt = imageFormat(format, filename);
  return ctx.host.openImage(filename, fmt === undefined ? { backing: true } : { backing: true, format: fmt });
}

/** The images of a chain, top first. */
export function chainOf(image: ImageLike): ImageLike[] {
  const chain: ImageLike[] = [];
  for (let layer: ImageLike | undefined = image; layer !== undefined; layer = layer.backing) chain.push(layer);
  return chain;
}
