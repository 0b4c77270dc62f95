import { ioBuffer } from './aligned-buffers.js';
import { describeError } from './errors.js';
import type { ImageLike } from './host.js';
import { cvtstr, dumpBuffer, elapsedFromSeconds, printReport } from './io-format.js';
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
import { WRITE_COMMANDS } from './qemu-io-write.js';

export type { IoSession } from './qemu-io-args.js';

/**
 * qemu-io's command language (qemu-io-cmds.c, qemu 7.2): read, readv, length, map, alloc, help,
 * quit, and on a writable image write, writev, discard, flush — same arguments, same output,
 * same failures. On an image open read-only the write commands fail as under `qemu-io -r`.
 */

/** Reads for qemu-io: the engine's errors become "Input/output error" lines, as EIO in qemu. */
async function pread(session: IoSession, dst: Uint8Array, offset: number): Promise<string | undefined> {
  const image = imageOf(session);
  if (!inRange(image, offset, dst.length)) return 'Input/output error';
  if (dst.length === 0) return undefined;
  try {
    await image.read(dst, offset);
    return undefined;
  } catch (error) {
    return `Input/output error (${describeError(error)})`;
  }
}

const READ_HELP = `
 reads a range of bytes from the given offset

 Example:
 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 -b, -- read from the VM state rather than the virtual disk
 -C, -- report statistics in a machine parsable format
 -l, -- length for pattern verification (only with -P)
 -p, -- ignored for backwards compatibility
 -P, -- use a pattern to verify read data
 -q, -- quiet mode, do not show I/O statistics
 -s, -- start offset for pattern verification (only with -P)
 -v, -- dump buffer to standard output

`;

const READV_HELP = `
 reads a range of bytes from the given offset into multiple buffers

 Example:
 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 Uses multiple iovec buffers if more than one byte range is specified.
 -C, -- report statistics in a machine parsable format
 -P, -- use a pattern to verify read data
 -v, -- dump buffer to standard output
 -q, -- quiet mode, do not show I/O statistics

`;

const readCommand: IoCommand = {
  name: 'read',
  altname: 'r',
  args: '[-abCqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  help: READ_HELP,
  async run(session, argv) {
    const parsed = commandGetopt(session, argv, 'bCl:pP:qs:v');
    if (parsed === undefined) return usage(session, readCommand);
    let vmState = false;
    let terse = false;
    let quiet = false;
    let verbose = false;
    let pattern: number | undefined;
    let patternOffset = 0;
    let patternCount: number | undefined;
    let sflag = false;
    for (const { option, arg = '' } of parsed.options) {
      switch (option) {
        case 'b':
          vmState = true;
          break;
        case 'C':
          terse = true;
          break;
        case 'l': {
          const r = cvtnum(session, arg);
          if (!r.ok) {
            printCvtnumError(session, r.error, arg);
            return false;
          }
          patternCount = r.value;
          break;
        }
        case 'P':
          pattern = parsePattern(session, arg);
          if (pattern === undefined) return false;
          break;
        case 'q':
          quiet = true;
          break;
        case 's': {
          sflag = true;
          const r = cvtnum(session, arg);
          if (!r.ok) {
            printCvtnumError(session, r.error, arg);
            return false;
          }
          patternOffset = r.value;
          break;
        }
        case 'v':
          verbose = true;
          break;
        default:
          break; // -p
      }
    }
    if (parsed.operands.length !== 2) return usage(session, readCommand);
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
    if (count.value > REQUEST_MAX) {
      session.out(`length cannot exceed ${REQUEST_MAX}, given ${countArg}\n`);
      return false;
    }
    if (pattern === undefined && (patternCount !== undefined || sflag)) return usage(session, readCommand);
    const patternLength = patternCount ?? count.value - patternOffset;
    if (patternLength < 0 || patternLength + patternOffset > count.value) {
      session.out('pattern verification range exceeds end of read data\n');
      return false;
    }
    if (vmState) {
      if (offset.value % SECTOR !== 0) {
        session.out(`${offset.value} is not a sector-aligned value for 'offset'\n`);
        return false;
      }
      if (count.value % SECTOR !== 0) {
        session.out(`${count.value} is not a sector-aligned value for 'count'\n`);
        return false;
      }
      session.out('read failed: Operation not supported\n');
      return false;
    }
    const buffer = ioBuffer(count.value).fill(0xab);
    const t1 = session.now();
    const failure = await pread(session, buffer, offset.value);
    const t2 = session.now();
    if (failure !== undefined) {
      session.out(`read failed: ${failure}\n`);
      return false;
    }
    let ok = true;
    if (pattern !== undefined) {
      const region = buffer.subarray(patternOffset, patternOffset + patternLength);
      if (region.some((b) => b !== pattern)) {
        session.out(`Pattern verification failed at offset ${offset.value + patternOffset}, ${patternLength} bytes\n`);
        ok = false;
      }
    }
    if (quiet) return ok;
    if (verbose) session.out(dumpBuffer(buffer, offset.value));
    session.out(printReport('read', elapsedFromSeconds(t2 - t1), offset.value, count.value, count.value, 1, terse));
    return ok;
  },
};

const readvCommand: IoCommand = {
  name: 'readv',
  args: '[-Cqv] [-P pattern] off len [len..]',
  oneline: 'reads a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  help: READV_HELP,
  async run(session, argv) {
    const parsed = commandGetopt(session, argv, 'CP:qv');
    if (parsed === undefined) return usage(session, readvCommand);
    let terse = false;
    let quiet = false;
    let verbose = false;
    let pattern: number | undefined;
    for (const { option, arg = '' } of parsed.options) {
      if (option === 'C') terse = true;
      else if (option === 'q') quiet = true;
      else if (option === 'v') verbose = true;
      else if (option === 'P') {
        pattern = parsePattern(session, arg);
        if (pattern === undefined) return false;
      }
    }
    if (parsed.operands.length < 2) return usage(session, readvCommand);
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
      if (len.value > REQUEST_MAX) {
        session.out(`Argument '${arg}' exceeds maximum size ${REQUEST_MAX}\n`);
        return false;
      }
      if (total > REQUEST_MAX - len.value) {
        session.out(`The total number of bytes exceed the maximum size ${REQUEST_MAX}\n`);
        return false;
      }
      total += len.value;
    }
    const buffer = ioBuffer(total).fill(0xab);
    const t1 = session.now();
    const failure = await pread(session, buffer, offset.value);
    const t2 = session.now();
    if (failure !== undefined) {
      session.out(`readv failed: ${failure}\n`);
      return false;
    }
    let ok = true;
    if (pattern !== undefined && buffer.some((b) => b !== pattern)) {
      session.out(`Pattern verification failed at offset ${offset.value}, ${total} bytes\n`);
      ok = false;
    }
    if (quiet) return ok;
    if (verbose) session.out(dumpBuffer(buffer, offset.value));
    session.out(printReport('read', elapsedFromSeconds(t2 - t1), offset.value, total, total, 1, terse));
    return ok;
  },
};

const lengthCommand: IoCommand = {
  name: 'length',
  oneline: 'gets the length of the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    session.out(`${cvtstr(imageOf(session).virtualSize)}\n`);
    return true;
  },
};

/** Runs of "allocated in the top image" (bdrv_is_allocated) over [offset, offset + length). */
async function allocationRuns(image: ImageLike, offset: number, length: number): Promise<{ allocated: boolean; length: number }[]> {
  const runs: { allocated: boolean; length: number }[] = [];
  if (length <= 0) return runs;
  let pos = offset;
  for (const e of await image.extents(offset, length)) {
    if (e.offset > pos) push(runs, false, e.offset - pos);
    const start = Math.max(e.offset, pos);
    const end = Math.min(e.offset + e.length, offset + length);
    if (end > start) push(runs, e.kind !== 'unallocated' && e.depth === 0, end - start);
    pos = Math.max(pos, end);
  }
  if (pos < offset + length) push(runs, false, offset + length - pos);
  return runs;
}

function push(runs: { allocated: boolean; length: number }[], allocated: boolean, length: number): void {
  const last = runs[runs.length - 1];
  if (last !== undefined && last.allocated === allocated) last.length += length;
  else runs.push({ allocated, length });
}

const mapCommand: IoCommand = {
  name: 'map',
  args: '',
  oneline: 'prints the allocated areas of a file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    let runs;
    try {
      const image = imageOf(session);
      runs = await allocationRuns(image, 0, image.virtualSize);
    } catch (error) {
      session.err(`qcow2: Failed to get allocation status: ${describeError(error)}\n`);
      return false;
    }
    let offset = 0;
    for (const run of runs) {
      session.out(
        `${cvtstr(run.length)} (0x${run.length.toString(16)}) bytes ${run.allocated ? '    allocated' : 'not allocated'} ` +
          `at offset ${cvtstr(offset)} (0x${offset.toString(16)})\n`,
      );
      offset += run.length;
    }
    return true;
  },
};

const allocCommand: IoCommand = {
  name: 'alloc',
  args: 'offset [count]',
  oneline: 'checks if offset is allocated in the file',
  argmin: 1,
  argmax: 2,
  async run(session, argv) {
    const offsetArg = argv[1] as string;
    const offset = cvtnum(session, offsetArg);
    if (!offset.ok) {
      printCvtnumError(session, offset.error, offsetArg);
      return false;
    }
    let count = SECTOR;
    if (argv.length === 3) {
      const countArg = argv[2] as string;
      const c = cvtnum(session, countArg);
      if (!c.ok) {
        printCvtnumError(session, c.error, countArg);
        return false;
      }
      count = c.value;
    }
    // Past the end of the image nothing is counted, as bdrv_is_allocated's 0-length answer there.
    const image = imageOf(session);
    const size = image.virtualSize;
    const inside = Math.max(0, Math.min(count, size - offset.value));
    let runs;
    try {
      runs = await allocationRuns(image, offset.value, inside);
    } catch (error) {
      session.out(`is_allocated failed: ${describeError(error)}\n`);
      return false;
    }
    const allocated = runs.filter((r) => r.allocated).reduce((sum, r) => sum + r.length, 0);
    session.out(`${allocated}/${inside} bytes allocated at offset ${cvtstr(offset.value)}\n`);
    return true;
  },
};

const quitCommand: IoCommand = {
  name: 'quit',
  global: true,
  altname: 'q',
  oneline: 'exit the program',
  argmin: 0,
  argmax: 0,
  async run(session) {
    session.quit = true;
    return true;
  },
};

const helpCommand: IoCommand = {
  name: 'help',
  global: true,
  altname: '?',
  args: '[command]',
  oneline: 'help for one or all commands',
  argmin: 0,
  argmax: 1,
  async run(session, argv) {
    if (argv.length < 2) {
      for (const cmd of COMMANDS) session.out(helpOneline(cmd.name, cmd));
      session.out("\nUse 'help commandname' for extended help.\n");
      return true;
    }
    const cmd = findCommand(argv[1] as string);
    if (cmd === undefined) {
      session.out(`command ${argv[1]} not found\n`);
      return false;
    }
    session.out(helpOneline(argv[1] as string, cmd) + (cmd.help ?? ''));
    return true;
  },
};

/**
 * qemu-io commands this tool does not run: on an image opened read-only they fail after the
 * argument count check as under qemu-io -r; on a writable one they say they are not supported.
 * They are not listed by `help`.
 */
const UNSUPPORTED: readonly (readonly [string, number, number])[] = [
  ['aio_write', 2, -1],
  ['truncate', 1, 3],
];

function unsupportedCommand(name: string, argmin: number, argmax: number): IoCommand {
  return {
    name,
    oneline: '',
    argmin,
    argmax,
    async run(session) {
      const image = imageOf(session);
      if (image.readOnly !== false || typeof image.write !== 'function') session.err('qcow2: Block node is read-only\n');
      else session.err(`qcow2: ${name} is not supported by qcow2 io\n`);
      return false;
    },
  };
}

const HIDDEN: readonly IoCommand[] = UNSUPPORTED.map(([name, min, max]) => unsupportedCommand(name, min, max));

/** Sorted by name, as qemu-io's table. */
const COMMANDS: readonly IoCommand[] = [
  allocCommand,
  helpCommand,
  lengthCommand,
  mapCommand,
  quitCommand,
  readCommand,
  readvCommand,
  ...WRITE_COMMANDS,
].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

function helpOneline(name: string, cmd: IoCommand): string {
  return `${name} ${cmd.args === undefined ? '' : `${cmd.args} `}-- ${cmd.oneline}\n`;
}

function findCommand(name: string): IoCommand | undefined {
  return COMMANDS.find((c) => c.name === name || c.altname === name) ?? HIDDEN.find((c) => c.name === name);
}

/** qemu-io's breakline: split on single spaces, empty words dropped (no quoting). */
export function breakline(input: string): string[] {
  return input.split(' ').filter((w) => w !== '');
}

/** qemuio_command: runs one command line; false when it failed (qemu-io then exits 1). */
export async function runIoCommand(session: IoSession, line: string): Promise<boolean> {
  const argv = breakline(line);
  if (argv.length === 0) return true;
  const name = argv[0] as string;
  const cmd = findCommand(name);
  if (cmd === undefined) {
    session.err(`command "${name}" not found\n`);
    return false;
  }
  if (cmd.global !== true && session.image === undefined) {
    session.err("no file open, try 'help open'\n");
    return false;
  }
  const argc = argv.length - 1;
  if (argc < cmd.argmin || (cmd.argmax !== -1 && argc > cmd.argmax)) {
    if (cmd.argmax === -1) {
      session.err(`bad argument count ${argc} to ${name}, expected at least ${cmd.argmin} arguments\n`);
    } else if (cmd.argmin === cmd.argmax) {
      session.err(`bad argument count ${argc} to ${name}, expected ${cmd.argmin} arguments\n`);
    } else {
      session.err(`bad argument count ${argc} to ${name}, expected between ${cmd.argmin} and ${cmd.argmax} arguments\n`);
    }
    return false;
  }
  return cmd.run(session, argv);
}
