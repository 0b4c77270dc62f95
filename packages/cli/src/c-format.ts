/**
 * The few printf conversions qemu-img and qemu-io print numbers with, reproduced exactly: glibc
 * rounds the exact binary value of a double, ties to even, and JavaScript's toFixed/toPrecision
 * do not (they round ties away from zero), so the digits are computed here with BigInt.
 */

/** The exact decimal value of a finite double ≥ 0: `digits` × 10^`exponent`, digits without leading zeros. */
interface ExactDecimal {
  digits: bigint;
  exponent: number;
}

const F64 = new DataView(new ArrayBuffer(8));

function exactDecimal(value: number): ExactDecimal {
  F64.setFloat64(0, value);
  const hi = F64.getUint32(0);
  const lo = F64.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let shift: number;
  if (biased === 0) {
    shift = -1074;
  } else {
    mantissa |= 1n << 52n;
    shift = biased - 1075;
  }
  if (shift >= 0) return { digits: mantissa << BigInt(shift), exponent: 0 };
  // mantissa / 2^-shift = mantissa * 5^-shift / 10^-shift
  return { digits: mantissa * 5n ** BigInt(-shift), exponent: shift };
}

/** Divides by 10^places with round-half-even on the exact value. */
function roundDiv(value: bigint, places: number): bigint {
  if (places <= 0) return value * 10n ** BigInt(-places);
  const divisor = 10n ** BigInt(places);
  const quotient = value / divisor;
  const twice = (value % divisor) * 2n;
  if (twice > divisor || (twice === divisor && quotient % 2n === 1n)) return quotient + 1n;
  return quotient;
}

function checkFinite(value: number): void {
  if (!Number.isFinite(value)) throw new RangeError(`c-format: ${value} is not finite`);
}

/** `%.Nf` */
export function formatFixed(value: number, precision: number): string {
  checkFinite(value);
  const negative = value < 0 || Object.is(value, -0);
  const { digits, exponent } = exactDecimal(Math.abs(value));
  const scaled = roundDiv(digits, -exponent - precision);
  let text = scaled.toString();
  if (precision > 0) {
    text = text.padStart(precision + 1, '0');
    text = `${text.slice(0, -precision)}.${text.slice(-precision)}`;
  }
  return negative ? `-${text}` : text;
}

/** The decimal exponent X and the P significant digits of `value` rounded as `%.{P-1}e` does. */
function scientific(value: number, precision: number): { mantissa: string; exponent: number } {
  const p = Math.max(precision, 1);
  if (value === 0) return { mantissa: '0'.repeat(p), exponent: 0 };
  const { digits, exponent } = exactDecimal(value);
  const length = digits.toString().length;
  let rounded = roundDiv(digits, length - p);
  let x = exponent + length - 1;
  if (rounded.toString().length > p) {
    // 9.99… rounded up to 10.0…
    rounded /= 10n;
    x += 1;
  }
  return { mantissa: rounded.toString(), exponent: x };
}

function exponentText(x: number): string {
  const sign = x < 0 ? '-' : '+';
  return `e${sign}${String(Math.abs(x)).padStart(2, '0')}`;
}

/** `%.Ne` */
export function formatExponent(value: number, precision: number): string {
  checkFinite(value);
  const negative = value < 0 || Object.is(value, -0);
  const { mantissa, exponent } = scientific(Math.abs(value), precision + 1);
  const body = precision > 0 ? `${mantissa[0]}.${mantissa.slice(1)}` : mantissa;
  return `${negative ? '-' : ''}${body}${exponentText(exponent)}`;
}

/** `%.Ng` (no `#` flag: trailing zeros and a trailing point are removed). */
export function formatGeneral(value: number, precision: number): string {
  checkFinite(value);
  const p = precision === 0 ? 1 : precision;
  const negative = value < 0 || Object.is(value, -0);
  const magnitude = Math.abs(value);
  const { exponent } = scientific(magnitude, p);
  let text: string;
  if (exponent < -4 || exponent >= p) {
    const { mantissa } = scientific(magnitude, p);
    const fraction = mantissa.slice(1).replace(/0+$/, '');
    text = `${mantissa[0]}${fraction === '' ? '' : `.${fraction}`}${exponentText(exponent)}`;
  } else {
    text = formatFixed(magnitude, p - 1 - exponent);
    if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  }
  return negative ? `-${text}` : text;
}

/** `%-Ns` / `%Ns`: pads with spaces to `width`; never truncates. */
export function padRight(text: string, width: number): string {
  return text.length >= width ? text : text + ' '.repeat(width - text.length);
}

export function padLeft(text: string, width: number): string {
  return text.length >= width ? text : ' '.repeat(width - text.length) + text;
}

/** `%#x`: `0x1f`, but `0` for zero (C's alternate form adds no prefix to 0). */
export function alternateHex(value: number): string {
  return value === 0 ? '0' : `0x${value.toString(16)}`;
}
