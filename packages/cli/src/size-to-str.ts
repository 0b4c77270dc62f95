import { formatGeneral } from './c-format.js';

const SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;

/** frexp's exponent: the e with 2^(e-1) ≤ |value| < 2^e, 0 for 0. */
function frexpExponent(value: number): number {
  if (value === 0) return 0;
  let e = Math.floor(Math.log2(value)) + 1;
  // log2 can be off by one next to a power of two.
  while (2 ** (e - 1) > value) e -= 1;
  while (2 ** e <= value) e += 1;
  return e;
}

/**
 * qemu's `size_to_str` (util/cutils.c), used by `qemu-img info` and qemu-io's `length`: the
 * binary unit in which the value is below 1000 (not 1024), printed with `%0.3g`:
 * `1 GiB`, `196 KiB`, `1.5 MiB`, `0 B`, `1e+03 KiB` (999.5 KiB rounds up to 3 digits).
 */
export function sizeToStr(value: number): string {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`sizeToStr: ${value} is not a byte count`);
  const e = frexpExponent(value / (1000 / 1024));
  // C integer division truncates toward zero: (0 - 1) / 10 is 0.
  const index = Math.trunc((e - 1) / 10);
  const divisor = 2 ** (index * 10);
  return `${formatGeneral(value / divisor, 3)} ${SUFFIXES[index] ?? ''}B`;
}
