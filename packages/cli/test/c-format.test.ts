import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { alternateHex, formatExponent, formatFixed, formatGeneral } from '../src/c-format.js';

describe('printf conversions as glibc prints them', () => {
  it('%.Nf rounds exact binary ties to even, unlike toFixed', () => {
    expect(formatFixed(1.0625, 3)).toBe('1.062'); // 1088 bytes in KiB: qemu-io prints 1.062 KiB
    expect((1.0625).toFixed(3)).toBe('1.063');
    expect(formatFixed(0.125, 2)).toBe('0.12');
    expect(formatFixed(0.375, 2)).toBe('0.38');
    expect(formatFixed(2.5, 0)).toBe('2');
    expect(formatFixed(3.5, 0)).toBe('4');
    expect(formatFixed(2.675, 2)).toBe('2.67'); // the double is below 2.675
    expect(formatFixed(0, 6)).toBe('0.000000');
    expect(formatFixed(1e21, 1)).toBe('1000000000000000000000.0');
    expect(formatFixed(-1.5, 0)).toBe('-2');
  });

  it('%.Ng picks fixed or exponent form and drops trailing zeros', () => {
    expect(formatGeneral(1, 3)).toBe('1');
    expect(formatGeneral(1.5, 3)).toBe('1.5');
    expect(formatGeneral(196, 3)).toBe('196');
    expect(formatGeneral(1.82421875, 3)).toBe('1.82');
    expect(formatGeneral(999.5, 3)).toBe('1e+03'); // a tie, to even: 1000
    expect(formatGeneral(999.4, 3)).toBe('999');
    expect(formatGeneral(0.0001234, 3)).toBe('0.000123');
    expect(formatGeneral(0.00001234, 3)).toBe('1.23e-05');
    expect(formatGeneral(0, 3)).toBe('0');
    expect(formatGeneral(100, 3)).toBe('100');
    expect(formatGeneral(12345678, 3)).toBe('1.23e+07');
  });

  it('%e', () => {
    expect(formatExponent(12345, 2)).toBe('1.23e+04');
    expect(formatExponent(9.995, 2)).toBe('9.99e+00'); // 9.995 is below the tie as a double
    expect(formatExponent(0, 3)).toBe('0.000e+00');
  });

  it('agrees with toFixed/toPrecision wherever the decimal value is not an exact tie', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 0, max: 6 }), (n, d, p) => {
        const x = n / d;
        const fixed = formatFixed(x, p);
        // An exact tie has a terminating expansion ending in 5 right after the last digit.
        const exact = x.toFixed(Math.min(100, p + 60)).replace(/0+$/, '');
        const tie = exact.length === exact.indexOf('.') + p + 2 && exact.endsWith('5');
        if (!tie) expect(fixed).toBe(x.toFixed(p));
      }),
    );
  });

  it('%#x prints 0 without a prefix', () => {
    expect(alternateHex(0)).toBe('0');
    expect(alternateHex(0x50000)).toBe('0x50000');
  });
});
