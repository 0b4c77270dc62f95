import type { ImageLike } from './host.js';
import { strtosz } from './strtosz.js';

/** What qemu-io's commands share (qemu-io-cmds.c, qemu 7.2): the session, argument parsing, checks. */

/** BDRV_REQUEST_MAX_BYTES. */
export const REQUEST_MAX = 2147483136;
const INT64_MAX = (1n << 63n) - 1n;
export const SECTOR = 512;

export interface IoSession {
  /** The open image; undefined when qemu-io was started without a file. */
  readonly image: ImageLike | undefined;
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly now: () => number;
  /** Set by `quit`. */
  quit: boolean;
  /** qemu-io's default cache mode, writethrough: every write is followed by a flush. */
  readonly writethrough?: boolean;
  /** Corruption events the engine signalled (qemu's BLOCK_IMAGE_CORRUPTED), counted by `io`. */
  readonly corruption?: { events: number };
}

export interface IoCommand {
  name: string;
  /** Runs without an open file (help, quit). */
  global?: boolean;
  altname?: string;
  /** `undefined` prints nothing; '' prints an extra space, as qemu's help does. */
  args?: string;
  oneline: string;
  argmin: number;
  /** -1: no maximum. */
  argmax: number;
  help?: string;
  run(session: IoSession, argv: readonly string[]): Promise<boolean>;
}

/** cvtnum: a qemu_strtosz size that fits int64, else the negative errno qemu-io passes around. */
export type Cvt = { ok: true; value: number } | { ok: false; error: 'EINVAL' | 'ERANGE' };

export function cvtnum(session: IoSession, text: string): Cvt {
  const r = strtosz(text);
  if (!r.ok) return r;
  if (r.warning !== undefined) session.err(`qcow2: warning: ${r.warning}\n`);
  if (r.value > INT64_MAX) return { ok: false, error: 'ERANGE' };
  return { ok: true, value: Number(r.value) };
}

export function printCvtnumError(session: IoSession, error: 'EINVAL' | 'ERANGE', arg: string): void {
  if (error === 'EINVAL') {
    session.out(`Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${arg}\n`);
  } else {
    session.out(`Parsing error: argument too large -- ${arg}\n`);
  }
}

/** strtol(arg, &end, 0) for 0..255 with nothing after it. */
export function parsePattern(session: IoSession, arg: string): number | undefined {
  const match = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(arg);
  let value = Number.NaN;
  if (match !== null) {
    const digits = match[2] as string;
    value = /^0[xX]/.test(digits)
      ? Number.parseInt(digits.slice(2), 16)
      : digits.length > 1 && digits.startsWith('0')
        ? Number.parseInt(digits, 8)
        : Number(digits);
    if (match[1] === '-') value = -value;
  }
  if (!(value >= 0 && value <= 255)) {
    session.out(`${arg} is not a valid pattern byte\n`);
    return undefined;
  }
  return value;
}

/** POSIX getopt as the commands use it (glibc: permuting, messages on stderr with the command name). */
export function commandGetopt(
  session: IoSession,
  argv: readonly string[],
  spec: string,
): { options: { option: string; arg?: string }[]; operands: string[] } | undefined {
  const options: { option: string; arg?: string }[] = [];
  const operands: string[] = [];
  const name = argv[0] as string;
  for (let i = 1; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    if (arg === '--') {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg.length === 1) {
      operands.push(arg);
      continue;
    }
    for (let j = 1; j < arg.length; j += 1) {
      const c = arg[j] as string;
      const at = spec.indexOf(c);
      if (at < 0 || c === ':') {
        session.err(`${name}: invalid option -- '${c}'\n`);
        return undefined;
      }
      if (spec[at + 1] !== ':') {
        options.push({ option: c });
        continue;
      }
      if (j + 1 < arg.length) {
        options.push({ option: c, arg: arg.slice(j + 1) });
      } else if (i + 1 < argv.length) {
        options.push({ option: c, arg: argv[i + 1] as string });
        i += 1;
      } else {
        session.err(`${name}: option requires an argument -- '${c}'\n`);
        return undefined;
      }
      break;
    }
  }
  return { options, operands };
}

export function usage(session: IoSession, cmd: IoCommand): false {
  session.out(`${cmd.name} ${cmd.args ?? ''} -- ${cmd.oneline}\n`);
  return false;
}

/** The open image (runIoCommand has checked there is one for commands that are not global). */
export function imageOf(session: IoSession): ImageLike {
  if (session.image === undefined) throw new Error('no file open');
  return session.image;
}

/** blk_check_byte_request: inside the image, else EIO. */
export function inRange(image: ImageLike, offset: number, count: number): boolean {
  return offset <= image.virtualSize && image.virtualSize - offset >= count;
}

