import { readFileSync } from 'node:fs';
import { isQcow2Error } from '@qcow2/format';
import { ioBuffer } from './aligned-buffers.js';
import { describeError, errnoOf, strerror } from './errors.js';
import type { ImageLike } from './host.js';
import { elapsedFromSeconds, printReport } from './io-format.js';
import {
  commandGetopt,
  cvtnum,
  imageOf,
  inRange,
  parsePattern,
  printCvtnumError,
  REQUEST_MAX,
  SECTOR,
  usage,
  type IoCommand,
  type IoSession,
} from './qemu-io-args.js';

/**
 * qemu-io's write side (qemu-io-cmds.c, qemu 7.2): write (-P, -z, -u, -c, -f, -s, -q, -C),
 * writev, discard, flush, aio_flush. They need an image opened writable; on one opened read-only
 * they fail after the argument count check with "Block node is read-only", as under qemu-io -r.
 */

type Writable = ImageLike & Required<Pick<ImageLike, 'write' | 'writeZeroes' | 'discard' | 'writeCompressed' | 'flush'>>;

function writableImage(session: IoSession): Writable | undefined {
  const image = imageOf(session);
  if (image.readOnly !== false || typeof image.write !== 'function') return undefined;
  return image as Writable;
}

function readOnly(session: IoSession): false {
  session.err('qcow2: Block node is read-only\n');
  return false;
}

/** The errno text qemu-io prints for a failed request. */
function failure(error: unknown): string {
  const errno = errnoOf(error);
  if (errno !== undefined) return strerror(errno);
  if (isQcow2Error(error)) {
    switch (error.code) {
      case 'INVALID_ARGUMENT':
        return 'Invalid argument';
      case 'UNSUPPORTED':
        return 'Operation not supported';
      case 'READ_ONLY':
        return 'Operation not permitted';
      default:
        return `Input/output error (${describeError(error)})`;
    }
  }
  return `Input/output error (${describeError(error)})`;
}

/** Runs a request, then (writethrough, or FUA) a flush; the failure text or undefined. */
async function request(session: IoSession, image: Writable, fua: boolean, run: () => Promise<void>): Promise<string | undefined> {
  const eventsBefore = session.corruption?.events ?? 0;
  try {
    await run();
    if (fua || session.writethrough === true) await image.flush();
    return undefined;
  } catch (error) {
    if (isQcow2Error(error) && error.code === 'CORRUPT' && eventsBefore > 0) {
      // qemu drops the driver of an image marked corrupt (bs->drv = NULL): later requests fail
      // with ENOMEDIUM; the request that raised the event fails with EIO.
      return 'No medium found';
    }
    if (isQcow2Error(error) && error.code === 'CORRUPT' && (session.corruption?.events ?? 0) > eventsBefore) {
      return 'Input/output error';
    }
    return failure(error);
  }
}

/** qemu_io_alloc_from_file: the file's bytes repeated to fill `length`; undefined (after perror) when unusable. */
function bufferFromFile(session: IoSession, name: string, length: number): Uint8Array | undefined {
  let pattern: Uint8Array;
  try {
    pattern = new Uint8Array(readFileSync(name).subarray(0, Math.max(length, 1)));
  } catch (error) {
    session.err(`${name}: ${strerror(errnoOf(error) ?? 'EIO')}\n`);
    return undefined;
  }
  if (pattern.length === 0) {
    session.err(`${name}: file is empty\n`);
    return undefined;
  }
  const buffer = ioBuffer(length);
  for (let at = 0; at < length; at += pattern.length) buffer.set(pattern.subarray(0, Math.min(pattern.length, length - at)), at);
  return buffer;
}

const WRITE_HELP = `
 writes a range of bytes from the given offset

 Example:
 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 -b, -- write to the VM state rather than the virtual disk
 -c, -- write compressed data with blk_write_compressed
 -f, -- use Force Unit Access semantics
 -n, -- with -z, don't allow slow fallback
 -p, -- ignored for backwards compatibility
 -P, -- use different pattern to fill file
 -s, -- use a pattern file to fill the write buffer
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics
 -u, -- with -z, allow unmapping
 -z, -- write zeroes using blk_co_pwrite_zeroes

`;

const WRITEV_HELP = `
 writes a range of bytes from the given offset source from multiple buffers

 Example:
 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 -P, -- use different pattern to fill file
 -C, -- report statistics in a machine parsable format
 -f, -- use Force Unit Access semantics
 -q, -- quiet mode, do not show I/O statistics

`;

const DISCARD_HELP = `
 discards a range of bytes from the given offset

 Example:
 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file

 Discards a segment of the currently open file.
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics

`;

export const writeCommand: IoCommand = {
  name: 'write',
  altname: 'w',
  args: '[-bcCfnquz] [-P pattern | -s source_file] off len',
  oneline: 'writes a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  help: WRITE_HELP,
  async run(session, argv) {
    const image = writableImage(session);
    if (image === undefined) return readOnly(session);
    const parsed = commandGetopt(session, argv, 'bcCfnpP:qs:uz');
    if (parsed === undefined) return usage(session, writeCommand);
    let vmState = false;
    let compressed = false;
    let terse = false;
    let fua = false;
    let noFallback = false;
    let quiet = false;
    let mayUnmap = false;
    let zeroes = false;
    let pattern: number | undefined;
    let source: string | undefined;
    for (const { option, arg = '' } of parsed.options) {
      switch (option) {
        case 'b':
          vmState = true;
          break;
        case 'c':
          compressed = true;
          break;
        case 'C':
          terse = true;
          break;
        case 'f':
          fua = true;
          break;
        case 'n':
          noFallback = true;
          break;
        case 'P':
          pattern = parsePattern(session, arg);
          if (pattern === undefined) return false;
          break;
        case 'q':
          quiet = true;
          break;
        case 's':
          source = arg;
          break;
        case 'u':
          mayUnmap = true;
          break;
        case 'z':
          zeroes = true;
          break;
        default:
          break; // -p
      }
    }
    if (parsed.operands.length !== 2) return usage(session, writeCommand);
    if (vmState && zeroes) return fail(session, '-b and -z cannot be specified at the same time');
    if (fua && (vmState || compressed)) return fail(session, '-f and -b or -c cannot be specified at the same time');
    if (noFallback && !zeroes) return fail(session, '-n requires -z to be specified');
    if (mayUnmap && !zeroes) return fail(session, '-u requires -z to be specified');
    if (Number(zeroes) + Number(pattern !== undefined) + Number(source !== undefined) > 1) {
      return fail(session, 'Only one of -z, -P, and -s can be specified at the same time');
    }
    const [offsetArg, countArg] = parsed.operands as [string, string];
    const offset = cvtnum(session, offsetArg);
    if (!offset.ok) {
      printCvtnumError(session, offset.error, offsetArg);
      return false;
    }
    const count = cvtnum(session, countArg);
    if (!count.ok) {
      printCvtnumError(session, count.error, countArg);
      return false;
    }
    if (count.value > REQUEST_MAX && !noFallback) {
      return fail(session, `length cannot exceed ${REQUEST_MAX} without -n, given ${countArg}`);
    }
    if (vmState || compressed) {
      if (offset.value % SECTOR !== 0) return fail(session, `${offset.value} is not a sector-aligned value for 'offset'`);
      if (count.value % SECTOR !== 0) return fail(session, `${count.value} is not a sector-aligned value for 'count'`);
    }
    let buffer: Uint8Array | undefined;
    if (!zeroes) {
      if (source !== undefined) {
        buffer = bufferFromFile(session, source, count.value);
        if (buffer === undefined) return false;
      } else {
        buffer = ioBuffer(count.value).fill(pattern ?? 0xcd);
      }
    }
    const t1 = session.now();
    let error: string | undefined;
    if (vmState) {
      error = 'Operation not supported';
    } else if (!inRange(image, offset.value, count.value)) {
      error = 'Input/output error';
    } else if (count.value === 0) {
      error = undefined;
    } else if (zeroes) {
      error = await request(session, image, fua, () => image.writeZeroes(offset.value, count.value, { mayUnmap }));
    } else if (compressed) {
      error = await request(session, image, false, () => image.writeCompressed(buffer as Uint8Array, offset.value));
    } else {
      error = await request(session, image, fua, () => image.write(buffer as Uint8Array, offset.value));
    }
    const t2 = session.now();
    if (error !== undefined) return fail(session, `write failed: ${error}`);
    if (!quiet) session.out(printReport('wrote', elapsedFromSeconds(t2 - t1), offset.value, count.value, count.value, 1, terse));
    return true;
  },
};

function fail(session: IoSession, message: string): false {
  session.out(`${message}\n`);
  return false;
}

export const writevCommand: IoCommand = {
  name: 'writev',
  args: '[-Cfq] [-P pattern] off len [len..]',
  oneline: 'writes a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  help: WRITEV_HELP,
  async run(session, argv) {
    const image = writableImage(session);
    if (image === undefined) return readOnly(session);
    const parsed = commandGetopt(session, argv, 'CfqP:');
    if (parsed === undefined) return usage(session, writevCommand);
    let terse = false;
    let quiet = false;
    let fua = false;
    let pattern = 0xcd;
    for (const { option, arg = '' } of parsed.options) {
      if (option === 'C') terse = true;
      else if (option === 'q') quiet = true;
      else if (option === 'f') fua = true;
      else if (option === 'P') {
        const p = parsePattern(session, arg);
        if (p === undefined) return false;
        pattern = p;
      }
    }
    if (parsed.operands.length < 2) return usage(session, writevCommand);
    const [offsetArg, ...lengthArgs] = parsed.operands as [string, ...string[]];
    const offset = cvtnum(session, offsetArg);
    if (!offset.ok) {
      printCvtnumError(session, offset.error, offsetArg);
      return false;
    }
    let total = 0;
    for (const arg of lengthArgs) {
      const len = cvtnum(session, arg);
      if (!len.ok) {
        printCvtnumError(session, len.error, arg);
        return false;
      }
      if (len.value > REQUEST_MAX) return fail(session, `Argument '${arg}' exceeds maximum size ${REQUEST_MAX}`);
      if (total > REQUEST_MAX - len.value) return fail(session, `The total number of bytes exceed the maximum size ${REQUEST_MAX}`);
      total += len.value;
    }
    const buffer = ioBuffer(total).fill(pattern);
    const t1 = session.now();
    const error = !inRange(image, offset.value, total)
      ? 'Input/output error'
      : total === 0
        ? undefined
        : await request(session, image, fua, () => image.write(buffer, offset.value));
    const t2 = session.now();
    if (error !== undefined) return fail(session, `writev failed: ${error}`);
    if (!quiet) session.out(printReport('wrote', elapsedFromSeconds(t2 - t1), offset.value, total, total, 1, terse));
    return true;
  },
};

export const discardCommand: IoCommand = {
  name: 'discard',
  altname: 'd',
  args: '[-Cq] off len',
  oneline: 'discards a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  help: DISCARD_HELP,
  async run(session, argv) {
    const image = writableImage(session);
    if (image === undefined) return readOnly(session);
    const parsed = commandGetopt(session, argv, 'Cq');
    if (parsed === undefined) return usage(session, discardCommand);
    const terse = parsed.options.some((o) => o.option === 'C');
    const quiet = parsed.options.some((o) => o.option === 'q');
    if (parsed.operands.length !== 2) return usage(session, discardCommand);
    const [offsetArg, countArg] = parsed.operands as [string, string];
    const offset = cvtnum(session, offsetArg);
    if (!offset.ok) {
      printCvtnumError(session, offset.error, offsetArg);
      return false;
    }
    const count = cvtnum(session, countArg);
    if (!count.ok) {
      printCvtnumError(session, count.error, countArg);
      return false;
    }
    if (count.value > REQUEST_MAX) return fail(session, `length cannot exceed ${REQUEST_MAX}, given ${countArg}`);
    const t1 = session.now();
    const error = !inRange(image, offset.value, count.value)
      ? 'Input/output error'
      : count.value === 0
        ? undefined
        : await request(session, image, false, () => image.discard(offset.value, count.value));
    const t2 = session.now();
    if (error !== undefined) return fail(session, `discard failed: ${error}`);
    if (!quiet) session.out(printReport('discard', elapsedFromSeconds(t2 - t1), offset.value, count.value, count.value, 1, terse));
    return true;
  },
};

export const flushCommand: IoCommand = {
  name: 'flush',
  oneline: 'flush all in-core file state to disk',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const image = writableImage(session);
    if (image === undefined) return true;
    try {
      await image.flush();
      return true;
    } catch (error) {
      // qemu's bdrv_co_flush succeeds on a node without a driver (an image marked corrupt).
      if (isQcow2Error(error) && error.code === 'CORRUPT' && (session.corruption?.events ?? 0) > 0) return true;
      session.err(`qcow2: flush failed: ${describeError(error)}\n`);
      return false;
    }
  },
};

/** Requests complete before each command returns: nothing is outstanding. */
export const aioFlushCommand: IoCommand = {
  name: 'aio_flush',
  oneline: 'completes all outstanding aio requests',
  argmin: 0,
  argmax: 0,
  run: async () => true,
};

export const WRITE_COMMANDS: readonly IoCommand[] = [aioFlushCommand, discardCommand, flushCommand, writeCommand, writevCommand];
