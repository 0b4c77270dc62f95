import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * Runs scripts in the real Deno binary (from the pinned `deno` npm package) against the BUILT
 * ESM files of the workspace packages, offline: an import map sends every `@qcow2/*` specifier
 * to its package's dist/index.js; `--no-remote`, `--no-npm` and `--no-config` keep Deno from
 * fetching or resolving anything else, and file permissions are limited to the directories given.
 *
 * Reusable by any test that wants to run code in Deno (the conformance run here; an end-to-end
 * image test later): `await runDenoScript({ script, allow: [dir], packages: ['@qcow2/engine'] })`.
 */

const here = dirname(fileURLToPath(import.meta.url));
/** The monorepo root (packages/adapters/deno/test → ../../../..). */
export const repoRoot: string = resolve(here, '../../../..');

/** The path of the Deno executable: `DENO_BIN`, else the binary inside the pinned npm package. */
export function denoBinary(): string {
  const fromEnv = process.env['DENO_BIN'];
  if (fromEnv) return fromEnv;
  const require = createRequire(join(here, '..', 'package.json'));
  const packageDir = dirname(require.resolve('deno/package.json'));
  const exe = platform() === 'win32' ? 'deno.exe' : 'deno';
  // The package's postinstall would hard-link the binary here; pnpm does not run it (allowBuilds).
  const linked = join(packageDir, exe);
  if (existsSync(linked)) return linked;
  const target = platform() === 'linux' ? `linux-${arch()}-glibc` : `${platform()}-${arch()}`;
  const platformPackage = dirname(createRequire(join(packageDir, 'package.json')).resolve(`@deno/${target}/package.json`));
  return join(platformPackage, exe);
}

interface WorkspacePackage {
  readonly name: string;
  readonly dir: string;
  readonly workspaceDeps: readonly string[];
}

let workspace: Map<string, WorkspacePackage> | undefined;

/** Every package of the workspace (packages/* and packages/adapters/*), by name. */
export function workspacePackages(): Map<string, WorkspacePackage> {
  if (workspace !== undefined) return workspace;
  workspace = new Map();
  for (const parent of [join(repoRoot, 'packages'), join(repoRoot, 'packages', 'adapters')]) {
    for (const entry of readdirSync(parent, { withFileTypes: true })) {
      const manifest = join(parent, entry.name, 'package.json');
      if (!entry.isDirectory() || !existsSync(manifest)) continue;
      const json = JSON.parse(readFileSync(manifest, 'utf8')) as {
        name?: string;
        dependencies?: Record<string, string>;
      };
      if (json.name === undefined) continue;
      const workspaceDeps = Object.entries(json.dependencies ?? {})
        .filter(([, version]) => version.startsWith('workspace:'))
        .map(([name]) => name);
      workspace.set(json.name, { name: json.name, dir: join(parent, entry.name), workspaceDeps });
    }
  }
  return workspace;
}

/** `names` and the workspace packages they depend on, transitively. */
function withDependencies(names: readonly string[]): string[] {
  const all = workspacePackages();
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    const pkg = all.get(name);
    if (pkg === undefined) throw new Error(`deno harness: no workspace package named ${name}`);
    seen.add(name);
    pkg.workspaceDeps.forEach(visit);
  };
  names.forEach(visit);
  return [...seen];
}

const distEntry = (pkg: WorkspacePackage): string => join(pkg.dir, 'dist', 'index.js');

/** The newest modification time of the files under `dir`. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/** True when dist/index.js is missing or older than a file of src/. */
function needsBuild(pkg: WorkspacePackage): boolean {
  const entry = distEntry(pkg);
  if (!existsSync(entry)) return true;
  const src = join(pkg.dir, 'src');
  return existsSync(src) && newestMtime(src) > statSync(entry).mtimeMs;
}

/**
 * Builds the packages (and their workspace dependencies) whose dist/index.js is missing or older
 * than their sources. The test command builds everything before the tests, so in CI this finds
 * nothing to do; locally it keeps Deno from running stale code.
 */
export function ensureBuilt(names: readonly string[]): void {
  const all = workspacePackages();
  const missing = withDependencies(names).filter((name) => needsBuild(all.get(name) as WorkspacePackage));
  if (missing.length === 0) return;
  // Test files run in parallel processes: one builds while the others wait, then look again.
  const lock = join(repoRoot, 'node_modules', '.cache', 'qcow2-deno-harness-build.lock');
  mkdirSync(dirname(lock), { recursive: true });
  const deadline = Date.now() + 600_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw error;
      if (Date.now() > deadline) throw new Error(`deno harness: ${lock} held for 10 minutes; remove it if stale`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
  try {
    const stale = withDependencies(names).filter((name) => needsBuild(all.get(name) as WorkspacePackage));
    if (stale.length > 0) build(stale);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function build(names: readonly string[]): void {
  const bin = join(repoRoot, 'node_modules', '.bin');
  const turbo = join(bin, platform() === 'win32' ? 'turbo.cmd' : 'turbo');
  execFileSync(turbo, ['run', 'build', '--output-logs=errors-only', ...names.map((name) => `--filter=${name}`)], {
    cwd: repoRoot,
    stdio: 'pipe',
    // turbo looks for pnpm (the workspace's package manager) on PATH.
    env: { ...process.env, PATH: `${bin}${delimiter}${process.env['PATH'] ?? ''}`, TURBO_TELEMETRY_DISABLED: '1' },
  });
}

/** An import map sending each of `names` (and their workspace dependencies) to its built ESM entry. */
export function workspaceImportMap(names: readonly string[]): Record<string, string> {
  const all = workspacePackages();
  return Object.fromEntries(
    withDependencies(names).map((name) => [name, pathToFileURL(distEntry(all.get(name) as WorkspacePackage)).href]),
  );
}

/** The path of pako's ESM build (what @qcow2/compress imports for deflate), for the import map of a script that imports the engine. */
export function pakoModule(): string {
  const require = createRequire(join(repoRoot, 'packages', 'compress', 'package.json'));
  return join(dirname(require.resolve('pako/package.json')), 'dist', 'pako.mjs');
}

export interface RunDenoOptions {
  /** An ES module's source. Its last line of output must be the JSON result. */
  script: string;
  /** Workspace packages the script imports; default `@qcow2/storage` and `@qcow2/storage-deno`. */
  packages?: readonly string[];
  /** More import map entries (specifier → URL or absolute path). */
  imports?: Record<string, string>;
  /** Directories Deno may read and write (`--allow-read`, `--allow-write`); none by default. */
  allow?: readonly string[];
  /** `Deno.args`. */
  args?: readonly string[];
  /** Kill Deno after this long; default 60 s. */
  timeoutMs?: number;
}

export interface DenoRun<T> {
  /** The JSON value of the last line of standard output. */
  readonly result: T;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `script` in Deno with the built workspace packages importable by name and resolves to the
 * JSON its last output line holds. Rejects with Deno's stderr when it exits non-zero or prints
 * no JSON.
 */
export async function runDenoScript<T>(options: RunDenoOptions): Promise<DenoRun<T>> {
  const packages = options.packages ?? ['@qcow2/storage', '@qcow2/storage-deno'];
  ensureBuilt(packages);
  const work = mkdtempSync(join(tmpdir(), 'qcow2-deno-run-'));
  try {
    const script = join(work, 'main.js');
    const importMap = join(work, 'import-map.json');
    writeFileSync(script, options.script);
    const imports: Record<string, string> = { ...workspaceImportMap(packages) };
    for (const [specifier, target] of Object.entries(options.imports ?? {})) {
      imports[specifier] = /^[a-z][a-z0-9+.-]*:/i.test(target) ? target : pathToFileURL(target).href;
    }
    writeFileSync(importMap, JSON.stringify({ imports }, null, 2));
    const allow = options.allow ?? [];
    const args = [
      'run',
      '--quiet',
      '--no-config',
      '--no-lock',
      '--no-remote',
      '--no-npm',
      `--import-map=${importMap}`,
      ...(allow.length > 0 ? [`--allow-read=${allow.join(',')}`, `--allow-write=${allow.join(',')}`] : []),
      script,
      ...(options.args ?? []),
    ];
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? work,
      DENO_DIR: join(work, 'deno-dir'),
      DENO_NO_UPDATE_CHECK: '1',
      DENO_NO_PROMPT: '1',
      NO_COLOR: '1',
    };
    const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolveRun, reject) => {
      execFile(
        denoBinary(),
        args,
        { cwd: work, env, timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
        (error, out, err) => {
          if (error) reject(new Error(`deno exited with ${String(error.code ?? error.signal)}: ${err || error.message}`));
          else resolveRun({ stdout: out, stderr: err });
        },
      );
    });
    const last = stdout.trimEnd().split('\n').pop() ?? '';
    let result: T;
    try {
      result = JSON.parse(last) as T;
    } catch {
      throw new Error(`deno printed no JSON on its last line.\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    }
    return { result, stdout, stderr };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
