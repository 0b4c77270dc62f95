/**
 * qemu 7.2's `qemu_strtosz` (util/cutils.c do_strtosz) on a whole argument: a decimal integer
 * with an optional fraction, or a `0x` hex integer, then an optional suffix B, K, M, G, T, P, E
 * (any case, powers of 1024). A fraction needs a suffix (`1.5k` = 1536; `1.5` is refused); the
 * result is rounded to the nearest byte. `0x10k` is accepted with qemu's deprecation warning.
 */

export type StrtoszResult =
  | { ok: true; value: bigint; warning?: string }
  | { ok: false; error: 'EINVAL' | 'ERANGE' };

const U64_MAX = (1n << 64n) - 1n;

function suffixMultiplier(c: string | undefined): bigint | undefined {
  switch (c?.toUpperCase()) {
    case 'B':
      return 1n;
    case 'K':
      return 1n << 10n;
    case 'M':
      return 1n << 20n;
    case 'G':
      return 1n << 30n;
    case 'T':
      return 1n << 40n;
    case 'P':
      return 1n << 50n;
    case 'E':
      return 1n << 60n;
    default:
      return undefined;
  }
}

/** glibc strtoull's accepted prefix: blanks, a sign, then digits of `base` (with 0x for 16). */
function strtou64(text: string, base: 10 | 16): { value: bigint; end: number; error?: 'EINVAL' | 'ERANGE' } {
  let i = 0;
  while (i < text.length && ' \t\n\v\f\r'.includes(text[i] as string)) i += 1;
  let negative = false;
  if (text[i] === '+' || text[i] === '-') {
    negative = text[i] === '-';
    i += 1;
  }
  const digitPattern = base === 10 ? /[0-9]/ : /[0-9a-fA-F]/;
  if (base === 16 && text[i] === '0' && (text[i + 1] === 'x' || text[i + 1] === 'X') && digitPattern.test(text[i + 2] ?? '')) {
    i += 2;
  }
  const start = i;
  while (i < text.length && digitPattern.test(text[i] as string)) i += 1;
  if (i === start) return { value: 0n, end: 0, error: 'EINVAL' };
  let value = BigInt((base === 16 ? '0x' : '') + text.slice(start, i));
  if (value > U64_MAX) return { value: U64_MAX, end: i, error: 'ERANGE' };
  if (negative) value = (U64_MAX + 1n - value) & U64_MAX;
  return { value, end: i };
}

/** strtod on a text that starts with '.': the length it consumes, 0 when it is not a number. */
function fractionLength(text: string): number {
  const match = /^\.(?:[0-9]+(?:[eE][+-]?[0-9]+)?|(?=[0-9]))/.exec(text);
  return match === null ? 0 : match[0].length;
}

export function strtosz(text: string): StrtoszResult {
  const integral = strtou64(text, 10);
  // qemu reports trailing text after an out-of-range number as EINVAL, not ERANGE.
  if (integral.error !== undefined) return { ok: false, error: integral.end === text.length ? integral.error : 'EINVAL' };
  let value = integral.value;
  let end = integral.end;
  if (text.slice(0, end).includes('-')) return { ok: false, error: 'EINVAL' };
  let fraction = 0n; // 64-bit fixed point
  let hex = false;
  if (value === 0n && (text[end] === 'x' || text[end] === 'X')) {
    const reparsed = strtou64(text, 16);
    if (reparsed.error !== undefined) {
      return { ok: false, error: reparsed.end === text.length ? reparsed.error : 'EINVAL' };
    }
    value = reparsed.value;
    end = reparsed.end;
    if (text[end] === '.') return { ok: false, error: 'EINVAL' };
    hex = true;
  } else if (text[end] === '.') {
    const length = fractionLength(text.slice(end));
    if (length === 0) {
      end += 1; // "1.k": no fraction digits
    } else {
      const part = text.slice(end, end + length);
      if (/[eE]/.test(part)) return { ok: false, error: 'EINVAL' };
      const f = Number(`0${part}`);
      // (uint64_t)(fraction * 0x1p64), exact: f is a double below 1.
      fraction = BigInt(Math.floor(Math.min(f * 2 ** 64, 2 ** 64 - 2048)));
      end += length;
    }
  }
  let multiplier = suffixMultiplier(text[end]);
  let warning: string | undefined;
  if (multiplier !== undefined) {
    if (hex) warning = `Using a multiplier suffix on hex numbers is deprecated: ${text}`;
    end += 1;
  } else {
    multiplier = 1n;
  }
  if (end !== text.length) return { ok: false, error: 'EINVAL' };
  if (multiplier === 1n) {
    if (fraction !== 0n) return { ok: false, error: 'EINVAL' };
  } else {
    const product = fraction * multiplier;
    value = value * multiplier + (product >> 64n) + ((product >> 63n) & 1n);
    if (value > U64_MAX) return { ok: false, error: 'ERANGE' };
  }
  return warning === undefined ? { ok: true, value } : { ok: true, value, warning };
}
