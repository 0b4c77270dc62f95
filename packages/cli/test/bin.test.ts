/**
 * The built `qcow2` binary (dist/cli.cjs running dist/qcow2.cjs): the same output with and
 * without V8's code cache, the cache made once per command in a private directory, a damaged or
 * foreign cache ignored and made again, the cache off with QCOW2_COMPILE_CACHE=0, stdin read
 * through the bundle, errors as one line, and the process settings the launcher makes (libuv's
 * pool size, TurboFan's inlining limit). Needs the build (`pnpm build`, which the test
 * command runs first); under CI=true a missing build is a failure.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { isCI, makeTempDir } from '@qcow2/test-utils';
import { afterAll, describe, expect, it } from 'vitest';

const bin = join(__dirname, '../dist/cli.cjs');
const built = existsSync(bin) && existsSync(join(__dirname, '../dist/qcow2.cjs'));
if (!built && isCI()) throw new Error(`${bin} is missing: the test command builds before testing`);
if (!built) console.warn(`bin.test.ts: skipped, ${bin} is not built (run pnpm build)`);

const tmp = makeTempDir('qcow2-bin-');
afterAll(() => tmp.cleanup());

const image = join(tmp.dir, 'disk.raw');
const bytes = new Uint8Array(1 << 20);
bytes.fill(0x5a, 4096, 8192);
writeFileSync(image, bytes);

function qcow2(args: string[], cache: string, input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { ...process.env, QCOW2_COMPILE_CACHE: cache },
    ...(input === undefined ? {} : { input }),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const cacheFile = (dir: string, command: string): string => join(dir, `${process.version}-${process.arch}-${command}.bin`);

describe.skipIf(!built)('the qcow2 binary', () => {
  it('makes the cache on the first run of a command, uses it on the next, with the same output', () => {
    const dir = join(tmp.dir, 'cache-a');
    const first = qcow2(['map', '-f', 'raw', '--output=json', image], dir);
    expect(first.stderr).toBe('');
    expect(first.status).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual([
      { start: 0, length: 1 << 20, depth: 0, present: true, zero: false, data: true, offset: 0 },
    ]);
    const file = cacheFile(dir, 'map');
    expect(existsSync(file)).toBe(true);
    if (process.platform !== 'win32') {
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(file).mode & 0o777).toBe(0o600);
    }
    const made = readFileSync(file);
    const second = qcow2(['map', '-f', 'raw', '--output=json', image], dir);
    expect(second).toEqual(first);
    // Accepted as it was: not made again.
    expect(Buffer.compare(readFileSync(file), made)).toBe(0);
    // One file per command.
    expect(qcow2(['info', '-f', 'raw', image], dir).status).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([`${process.version}-${process.arch}-info.bin`, `${process.version}-${process.arch}-map.bin`]);
  });

  it('ignores a damaged cache file and makes it again', () => {
    const dir = join(tmp.dir, 'cache-b');
    const clean = qcow2(['info', '-f', 'raw', image], dir);
    expect(clean.status).toBe(0);
    const file = cacheFile(dir, 'info');
    const damaged = readFileSync(file);
    damaged[damaged.length - 100] = (damaged[damaged.length - 100]! ^ 0xff) & 0xff; // in the bytecode, past the header
    writeFileSync(file, damaged);
    const again = qcow2(['info', '-f', 'raw', image], dir);
    expect(again).toEqual(clean);
    expect(Buffer.compare(readFileSync(file), damaged)).not.toBe(0);
    // Truncated and foreign files too.
    writeFileSync(file, damaged.subarray(0, 40));
    expect(qcow2(['info', '-f', 'raw', image], dir)).toEqual(clean);
    writeFileSync(file, 'not a cache');
    expect(qcow2(['info', '-f', 'raw', image], dir)).toEqual(clean);
    expect(readFileSync(file).subarray(0, 4).toString('latin1')).toBe('QCC1');
  });

  it('writes no cache with QCOW2_COMPILE_CACHE=0, nor into a directory others may write to', () => {
    const off = join(tmp.dir, 'cache-off');
    expect(qcow2(['info', '-f', 'raw', image], '0').status).toBe(0);
    expect(existsSync(off)).toBe(false);
    if (process.platform === 'win32') return;
    const shared = join(tmp.dir, 'cache-shared');
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    const r = qcow2(['info', '-f', 'raw', image], shared);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('file format: raw');
    expect(readdirSync(shared)).toEqual([]);
  });

  it('reads qemu-io commands from stdin through the bundle', () => {
    const dir = join(tmp.dir, 'cache-c');
    for (let run = 0; run < 2; run++) {
      const r = qcow2(['io', '-f', 'raw', image], dir, 'read -P 0x5a 4096 4096\nread -P 0 0 4096\n');
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout.match(/read 4096\/4096 bytes at offset/g)).toHaveLength(2);
    }
  });

  it('reports a failure on one line with exit status 1', () => {
    const r = qcow2(['info', join(tmp.dir, 'missing.qcow2')], join(tmp.dir, 'cache-d'));
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('missing.qcow2');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('sizes libuv\'s pool to the cores (2 to 4) unless UV_THREADPOOL_SIZE is set, and limits inlining', () => {
    // A module loaded before the launcher reports, at exit, what the launcher left in the process:
    // the pool size it set and V8's code-cache tag, which covers every V8 flag.
    const probe = join(tmp.dir, 'probe.cjs');
    const report = join(tmp.dir, 'probe.txt');
    writeFileSync(
      probe,
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, ` +
        `String(process.env.UV_THREADPOOL_SIZE) + ' ' + require('node:v8').cachedDataVersionTag()));`,
    );
    const tagWith = (flags: string[]): string =>
      spawnSync(process.execPath, [...flags, '-p', "require('node:v8').cachedDataVersionTag()"], { encoding: 'utf8' }).stdout.trim();
    const tuned = tagWith(['--max-inlined-bytecode-size=100']);
    expect(tuned).not.toBe(tagWith([]));
    const run = (env: Record<string, string | undefined>): string[] => {
      const { UV_THREADPOOL_SIZE: _unset, ...rest } = process.env;
      const r = spawnSync(process.execPath, ['--require', probe, bin, 'info', '-f', 'raw', image], {
        encoding: 'utf8',
        env: { ...rest, QCOW2_COMPILE_CACHE: '0', ...env },
      });
      expect(r.status).toBe(0);
      return readFileSync(report, 'utf8').split(' ');
    };
    expect(run({})).toEqual([String(Math.min(4, Math.max(2, availableParallelism()))), tuned]);
    expect(run({ UV_THREADPOOL_SIZE: '7' })).toEqual(['7', tuned]);
  });
});
