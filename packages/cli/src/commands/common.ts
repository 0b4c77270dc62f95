import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import type { HostOpenOptions, ImageLike } from '../host.js';
import { imageFormat } from '../options.js';

export function unsupportedOption(name: string): CliError {
  return new CliError(`--${name} is not supported by qcow2`);
}

/** Opens `filename` with its backing chain, `-f` checked first (read-only unless `extra` says writable). */
export async function openWithChain(
  ctx: Context,
  filename: string,
  format: string | undefined,
  extra: Omit<HostOpenOptions, 'format' | 'backing'> = {},
): Promise<ImageLike> {
  const fmt = imageFormat(format, filename);
  return ctx.host.openImage(filename, fmt === undefined ? { backing: true, ...extra } : { backing: true, format: fmt, ...extra });
}

/** The images of a chain, top first. */
export function chainOf(image: ImageLike): ImageLike[] {
  const chain: ImageLike[] = [];
  for (let layer: ImageLike | undefined = image; layer !== undefined; layer = layer.backing) chain.push(layer);
  return chain;
}
