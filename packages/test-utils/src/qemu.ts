import { execFileSync, spawnSync } from 'node:child_process';
import { describe } from 'vitest';

/**
 * qemu is the oracle. Tests that need it call `describeWithQemu`: in CI (CI=true) a missing
 * qemu-img is a failure, never a silent skip; elsewhere the tests are skipped with a loud warning.
 */

let cached: boolean | undefined;

export function hasQemu(): boolean {
  if (cached === undefined) {
    const r = spawnSync('qemu-img', ['--version'], { encoding: 'utf8' });
    cached = r.status === 0;
  }
  return cached;
}

export function isCI(): boolean {
  const ci = process.env['CI'];
  return ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0';
}

export function describeWithQemu(name: string, body: () => void): void {
  if (hasQemu()) {
    describe(name, body);
    return;
  }
  if (isCI()) {
    describe(name, () => {
      throw new Error('qemu-img is not installed, and CI=true: tests against qemu cannot be skipped in CI');
    });
    return;
  }
  console.warn(`\n!!! SKIPPED (qemu-img not found; install qemu-utils): ${name}\n`);
  describe.skip(name, body);
}

/** Runs qemu-img with arguments; returns stdout. Throws with stderr on failure. */
export function qemuImg(args: string[], options: { allowExit?: number[] } = {}): string {
  return run('qemu-img', args, options);
}

export function qemuIo(args: string[], options: { allowExit?: number[] } = {}): string {
  return run('qemu-io', args, options);
}

/** `qemu-img info --output=json` parsed. */
export function qemuInfo(file: string, extra: string[] = []): Record<string, unknown> {
  return JSON.parse(qemuImg(['info', '--output=json', ...extra, file])) as Record<string, unknown>;
}

export interface QemuCheckResult {
  exitCode: number;
  json: Record<string, unknown>;
}

export function qemuCheck(file: string, extra: string[] = []): QemuCheckResult {
  const r = spawnSync('qemu-img', ['check', '--output=json', ...extra, file], { encoding: 'utf8' });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    json = { stderr: r.stderr, stdout: r.stdout };
  }
  return { exitCode: r.status ?? -1, json };
}

function run(cmd: string, args: string[], options: { allowExit?: number[] }): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const ok = r.status === 0 || (r.status !== null && (options.allowExit ?? []).includes(r.status));
  if (!ok) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  }
  return r.stdout;
}

/** For quick one-offs where the output is not needed. */
export function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: 'ignore' });
}
