import { formatFixed } from './c-format.js';

/**
 * qemu-io's number and report formatting (qemu-io-cmds.c): cvtstr, timestr, print_report,
 * dump_buffer.
 */

const UNITS: readonly [number, string][] = [
  [2 ** 60, ' EiB'],
  [2 ** 50, ' PiB'],
  [2 ** 40, ' TiB'],
  [2 ** 30, ' GiB'],
  [2 ** 20, ' MiB'],
  [2 ** 10, ' KiB'],
];

/** cvtstr: `64 KiB`, `1.500 MiB`, `512 bytes`, `1020.500 MiB` (only a `.000` is trimmed). */
export function cvtstr(value: number): string {
  let text: string | undefined;
  let suffix = ' bytes';
  for (const [unit, name] of UNITS) {
    if (value >= unit) {
      text = formatFixed(value / unit, 3);
      suffix = name;
      break;
    }
  }
  text ??= formatFixed(value, 6);
  const trim = text.indexOf('.000');
  return (trim >= 0 ? text.slice(0, trim) : text) + suffix;
}

/** A duration as qemu-io measures it: whole seconds and nanoseconds. */
export interface Elapsed {
  sec: number;
  nsec: number;
}

export function elapsedFromSeconds(seconds: number): Elapsed {
  const sec = Math.floor(seconds);
  return { sec, nsec: Math.min(999_999_999, Math.round((seconds - sec) * 1e9)) };
}

function two(n: number): string {
  return String(n).padStart(2, '0');
}

/** timestr: `00.00 sec` below a second, else `H:MM:SS.cc`; `verbose` (for -C) always the latter. */
export function timestr(t: Elapsed, verbose: boolean): string {
  const frac = t.nsec / 1e9;
  if (verbose || t.sec !== 0) {
    const hours = Math.floor(t.sec / 3600);
    const minutes = Math.floor((t.sec % 3600) / 60);
    return `${hours}:${two(minutes)}:${two(t.sec % 60)}.${two(Math.floor(frac * 100))}`;
  }
  return `${formatFixed(frac, 2).padStart(5, '0')} sec`;
}

function tdiv(value: number, t: Elapsed): number {
  return value / (t.sec + t.nsec / 1e9);
}

/** `%.4f` / `%.3f` of a rate that may be infinite (a zero-time run): glibc prints `inf`. */
function rate(value: number, digits: number): string {
  if (Number.isNaN(value)) return '-nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  return formatFixed(value, digits);
}

function cvtRate(value: number): string {
  return Number.isFinite(value) ? cvtstr(value) : `${rate(value, 3)} EiB`;
}

/** print_report: the two result lines of read/readv (or the `-C` line). */
export function printReport(
  op: string,
  t: Elapsed,
  offset: number,
  count: number,
  total: number,
  ops: number,
  terse: boolean,
): string {
  const ts = timestr(t, terse);
  if (!terse) {
    return (
      `${op} ${total}/${count} bytes at offset ${offset}\n` +
      `${cvtstr(total)}, ${ops} ops; ${ts} (${cvtRate(tdiv(total, t))}/sec and ${rate(tdiv(ops, t), 4)} ops/sec)\n`
    );
  }
  return `${total},${ops},${ts},${rate(tdiv(total, t), 3)},${rate(tdiv(ops, t), 3)}\n`;
}

function isAlnum(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

/** dump_buffer (`read -v`): 16 bytes a line, `%08x:  ` offset, hex, then alphanumerics or dots. */
export function dumpBuffer(buffer: Uint8Array, offset: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buffer.length; i += 16) {
    const row = buffer.subarray(i, Math.min(i + 16, buffer.length));
    let hexPart = '';
    let textPart = '';
    for (const byte of row) {
      hexPart += byte.toString(16).padStart(2, '0') + ' ';
      textPart += isAlnum(byte) ? String.fromCharCode(byte) : '.';
    }
    lines.push(`${(offset + i).toString(16).padStart(8, '0')}:  ${hexPart} ${textPart}\n`);
  }
  return lines.join('');
}
