import type { Context } from '../context.js';
import { CliError, describeError, isCliError } from '../errors.js';
import { getopt } from '../getopt.js';
import type { ImageLike } from '../host.js';
import { splitAtSlices, statusEqual, StatusCursor } from '../block-status.js';
import { checkCacheMode } from '../options.js';
import { firstDifferingSector, firstNonzeroSector } from '../zero-scan.js';
import { Progress } from '../progress.js';
import { pageAlignedBuffers } from '../aligned-buffers.js';
import { checkGetopt, usageError } from '../usage.js';
import { openWithChain, unsupportedOption } from './common.js';

const SECTOR = 512;
const IO_BUF_SIZE = 2 * 1024 * 1024;

/**
 * `qcow2 compare [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] A B`: qemu-img compare. Exit 0 identical,
 * 1 different (`Content mismatch at offset N!`, the first differing 512-byte sector), 2 open
 * errors, 3 block status errors, 4 read errors; without -s a size difference is a warning and the
 * longer image must be zero past the shorter one's end.
 */
export async function compareCommand(ctx: Context, argv: readonly string[]): Promise<number> {
  const parsed = checkGetopt(
    getopt(argv, {
      short: ':hf:F:T:pqsU',
      long: [
        { name: 'help', hasArg: false, id: 'h' },
        { name: 'object', hasArg: true },
        { name: 'image-opts', hasArg: false },
        { name: 'force-share', hasArg: false, id: 'U' },
      ],
    }),
  );
  let fmt1: string | undefined;
  let fmt2: string | undefined;
  let progressWanted = false;
  let quiet = false;
  let strict = false;
  let cache: string | undefined;
  for (const { option, arg = '' } of parsed.options) {
    switch (option) {
      case 'h':
        return ctx.help();
      case 'f':
        fmt1 = arg;
        break;
      case 'F':
        fmt2 = arg;
        break;
      case 'T':
        cache = arg;
        break;
      case 'p':
        progressWanted = true;
        break;
      case 'q':
        quiet = true;
        break;
      case 's':
        strict = true;
        break;
      case 'object':
      case 'image-opts':
        throw unsupportedOption(option);
      default:
        break;
    }
  }
  if (quiet) progressWanted = false;
  if (parsed.operands.length !== 2) throw usageError('Expecting two image file names');
  const [file1, file2] = parsed.operands as [string, string];
  if (cache !== undefined && !checkCacheMode(cache)) throw new CliError(`Invalid source cache option: ${cache}`, { exitCode: 2 });

  const say = (text: string): void => {
    if (!quiet) ctx.out(text);
  };
  const progress = new Progress(ctx.out, progressWanted, 2);
  const opened: ImageLike[] = [];
  try {
    const open = async (file: string, fmt: string | undefined): Promise<ImageLike> => {
      try {
        const image = await openWithChain(ctx, file, fmt);
        opened.push(image);
        return image;
      } catch (error) {
        throw new CliError(isCliError(error) ? error.message : `Could not open '${file}': ${describeError(error)}`, {
          exitCode: 2,
          cause: error,
        });
      }
    };
    const image1 = await open(file1, fmt1);
    const image2 = await open(file2, fmt2);
    return await compareImages(image1, image2, file1, file2, strict, say, progress);
  } finally {
    for (const image of opened.reverse()) await image.close().catch(() => undefined);
    progress.end();
  }
}

async function compareImages(
  image1: ImageLike,
  image2: ImageLike,
  file1: string,
  file2: string,
  strict: boolean,
  say: (text: string) => void,
  progress: Progress,
): Promise<number> {
  const size1 = image1.virtualSize;
  const size2 = image2.virtualSize;
  const total = Math.min(size1, size2);
  const progressBase = Math.max(size1, size2);
  progress.set(0);
  if (strict && size1 !== size2) {
    say('Strict mode: Image size mismatch!\n');
    return 1;
  }
  const cursor1 = new StatusCursor(await statusExtents(image1, file1), size1);
  const cursor2 = new StatusCursor(await statusExtents(image2, file2), size2);
  // Page-aligned, as qemu-img's blk_blockalign buffers: the kernel fills malloc'd ones far more
  // slowly (see pageAlignedBuffers).
  const [buf1, buf2] = pageAlignedBuffers(2, IO_BUF_SIZE) as [Uint8Array, Uint8Array];
  let offset = 0;
  let done = 0;
  const advance = (chunk: number): void => {
    done += chunk;
    progress.set((done / progressBase) * 100);
  };
  while (offset < total) {
    const s1 = cursor1.at(offset);
    const s2 = cursor2.at(offset);
    let chunk = Math.min(s1.end, s2.end) - offset;
    if (strict && !statusEqual(s1, s2)) {
      say(`Strict mode: Offset ${offset} block status mismatch!\n`);
      return 1;
    }
    if (s1.zero && s2.zero) {
      // nothing to compare
    } else if (s1.allocated === s2.allocated) {
      if (s1.allocated) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const a = buf1.subarray(0, chunk);
        const b = buf2.subarray(0, chunk);
        // Both reads at once (the copies run on two pool threads); a failure is reported for the
        // first image first, as when they are read one after the other.
        const [r1, r2] = await Promise.allSettled([readOrFail(image1, a, offset, file1), readOrFail(image2, b, offset, file2)]);
        if (r1.status === 'rejected') throw r1.reason;
        if (r2.status === 'rejected') throw r2.reason;
        const at = firstDifferingSector(a, b);
        if (at >= 0) {
          say(`Content mismatch at offset ${offset + at}!\n`);
          return 1;
        }
      }
    } else {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      const [image, file] = s1.allocated ? [image1, file1] : [image2, file2];
      const code = await checkEmptySectors(image, file, offset, chunk, buf1, say);
      if (code !== 0) return code;
    }
    offset += chunk;
    advance(chunk);
  }
  if (size1 !== size2) {
    say('Warning: Image size mismatch!\n');
    const [image, file] = size1 > size2 ? [image1, file1] : [image2, file2];
    const cursor = size1 > size2 ? cursor1 : cursor2;
    while (offset < progressBase) {
      const s = cursor.at(offset);
      let chunk = s.end - offset;
      if (s.allocated && !s.zero) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const code = await checkEmptySectors(image, file, offset, chunk, buf1, say);
        if (code !== 0) return code;
      }
      offset += chunk;
      advance(chunk);
    }
  }
  say('Images are identical.\n');
  return 0;
}

async function statusExtents(image: ImageLike, file: string): Promise<Awaited<ReturnType<ImageLike['extents']>>> {
  if (image.virtualSize === 0) return [];
  try {
    return splitAtSlices(await image.extents(0, image.virtualSize), image);
  } catch (error) {
    throw new CliError(`Sector allocation test failed for ${file}`, { exitCode: 3, cause: error });
  }
}

async function readOrFail(image: ImageLike, dst: Uint8Array, offset: number, file: string): Promise<void> {
  try {
    await image.read(dst, offset);
  } catch (error) {
    throw new CliError(`Error while reading offset ${offset} of ${file}: ${describeError(error)}`, {
      exitCode: 4,
      cause: error,
    });
  }
}

async function checkEmptySectors(
  image: ImageLike,
  file: string,
  offset: number,
  length: number,
  buffer: Uint8Array,
  say: (text: string) => void,
): Promise<number> {
  const view = buffer.subarray(0, length);
  await readOrFail(image, view, offset, file);
  const at = firstNonzeroSector(view);
  if (at >= 0) {
    say(`Content mismatch at offset ${offset + at}!\n`);
    return 1;
  }
  return 0;
}
