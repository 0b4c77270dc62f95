import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { strtosz } from '../src/strtosz.js';

describe('qemu_strtosz', () => {
  it('parses sizes with suffixes, fractions and hex', () => {
    expect(strtosz('0')).toEqual({ ok: true, value: 0n });
    expect(strtosz('64k')).toEqual({ ok: true, value: 65536n });
    expect(strtosz('1M')).toEqual({ ok: true, value: 1048576n });
    expect(strtosz('1.5k')).toEqual({ ok: true, value: 1536n });
    expect(strtosz('512b')).toEqual({ ok: true, value: 512n }); // 'b' is bytes in qemu 7.2
    expect(strtosz('1e')).toEqual({ ok: true, value: 1n << 60n });
    expect(strtosz('0x1000')).toEqual({ ok: true, value: 4096n });
    expect(strtosz('0x10k')).toMatchObject({ ok: true, value: 16384n, warning: expect.stringContaining('deprecated') });
    expect(strtosz('010')).toEqual({ ok: true, value: 10n });
    expect(strtosz('1.')).toEqual({ ok: true, value: 1n });
  });
  it('refuses what qemu refuses', () => {
    for (const text of ['', 'abc', '1kk', '1.5', '.5k', '-1', '0x', '0x1.5', '1.5e3k', 'k', '1 k']) {
      expect(strtosz(text), text).toEqual({ ok: false, error: 'EINVAL' });
    }
    expect(strtosz('16E')).toEqual({ ok: false, error: 'ERANGE' });
    expect(strtosz('18446744073709551616')).toEqual({ ok: false, error: 'ERANGE' });
    expect(strtosz('99999999999999999999k')).toEqual({ ok: false, error: 'EINVAL' });
  });
});

describeWithQemu('qemu_strtosz against qemu-img map --start-offset', () => {
  const tmp = makeTempDir('qcow2-cli-strtosz-');
  afterAll(() => tmp.cleanup());
  const image = join(tmp.dir, 'x.raw');
  writeFileSync(image, new Uint8Array(0));

  const inputs = [
    '0', '1', '512', '4096b', '64k', '64K', '1M', '1G', '2T', '3P', '7E', '7.99E', '1e', '1.5k', '1.k', '1.',
    '1.25M', '1.0001k', '1.0000000000000001k', '0.5M', '0x10', '0X1F', '0x10k', '010', '+12', ' 12', '1.5',
    '.5k', 'abc', '1kk', '0x', '0x1.5', '-1', '9223372036854775807', '9223372036854775808', '8E',
    '99999999999999999999k', '18446744073709551615', '1.5e3k', '0.5b', '1.5B', '3.0000000001k',
  ];

  it.each(inputs)('%j', (text) => {
    const r = spawnSync('qemu-img', ['map', '--output=json', '-f', 'raw', `--start-offset=${text}`, image], {
      encoding: 'utf8',
    });
    const ours = strtosz(text);
    const start = /"start": (\d+)/.exec(r.stdout);
    if (start !== null) {
      expect(ours).toMatchObject({ ok: true, value: BigInt(start[1] as string) });
    } else if (r.stderr.includes('You may use')) {
      expect(ours).toEqual({ ok: false, error: 'EINVAL' });
    } else {
      expect(r.stderr).toContain('Must be between');
      // Out of int64 range: either qemu_strtosz's ERANGE or a value past INT64_MAX.
      expect(!ours.ok ? ours.error : ours.value > (1n << 63n) - 1n ? 'ERANGE' : 'fits').toBe('ERANGE');
    }
  });
});
