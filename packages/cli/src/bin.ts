#!/usr/bin/env node
/**
 * The `qcow2` binary. Runs the CLI bundle next to it (qcow2.cjs: the CLI with the engine and
 * everything it uses) from V8's code cache when there is one: the bytecode of the functions a
 * command ran last time, so that V8 neither parses the bundle nor compiles those functions again
 * (`qcow2 info`: ~60 M fewer instructions at start, ~20 ms). qemu-img starts in ~10 ms; Node
 * alone takes ~35 ms, and our code ~50 ms more without the cache.
 *
 * The cache is one file per Node version and command, in a directory of the user's own
 * ($QCOW2_COMPILE_CACHE, else $XDG_CACHE_HOME/qcow2 or ~/.cache/qcow2; %LOCALAPPDATA%\qcow2 on
 * Windows), made with mode 0700 and used only when it belongs to the user and nobody else can
 * write to it. A cache file names the bundle (size and modification time) and carries a CRC-32 of
 * its bytes; one that does not match, or that V8 rejects, is made again at exit. Written to a
 * temporary name and renamed, so a reader never sees half a file. QCOW2_COMPILE_CACHE=0 turns it
 * off. Any failure to read or write it only means running without it.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';

const MAGIC = 0x31434351; // "QCC1"
const HEADER = 32;

interface CliBundle {
  runCli(argv?: readonly string[]): Promise<void>;
}

function cacheDirectory(): string | undefined {
  const env = process.env;
  const chosen = env['QCOW2_COMPILE_CACHE'];
  if (chosen !== undefined && chosen !== '') {
    return ['0', 'off', 'false', 'no'].includes(chosen.toLowerCase()) ? undefined : chosen;
  }
  if (process.platform === 'win32') {
    const local = env['LOCALAPPDATA'];
    return local ? join(local, 'qcow2', 'compile-cache') : undefined;
  }
  const base = env['XDG_CACHE_HOME'] || (env['HOME'] ? join(env['HOME'], '.cache') : undefined);
  return base ? join(base, 'qcow2', 'compile-cache') : undefined;
}

/** The directory, made if missing, when it is the user's own and writable by nobody else. */
function usableDirectory(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = statSync(dir);
    if (!st.isDirectory()) return false;
    if (process.platform === 'win32') return true;
    return st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** The command (first operand), as a file name part: the cache holds what that command ran. */
function commandName(argv: readonly string[]): string {
  const first = argv.find((a) => !a.startsWith('-'));
  return first !== undefined && /^[a-z]{1,16}$/.test(first) ? first : 'other';
}

function crc32(bytes: Uint8Array): number | undefined {
  // node:zlib's crc32 (Node >= 20.15); without it there is no check, so no cache.
  const zlib = require('node:zlib') as { crc32?: (data: Uint8Array) => number };
  return typeof zlib.crc32 === 'function' ? zlib.crc32(bytes) >>> 0 : undefined;
}

/** The cached bytecode in `file` for a bundle of `size` bytes modified at `mtime`, if it checks out. */
function readCache(file: string, size: number, mtime: number): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (process.platform !== 'win32' && st.uid !== process.getuid?.()) return undefined;
    if (st.size < HEADER || st.size > 64 << 20) return undefined;
    const bytes = new Uint8Array(st.size);
    if (readSync(fd, bytes, 0, bytes.length, 0) !== bytes.length) return undefined;
    const view = new DataView(bytes.buffer);
    if (view.getUint32(0, true) !== MAGIC) return undefined;
    if (view.getFloat64(8, true) !== size || view.getFloat64(16, true) !== mtime) return undefined;
    const length = view.getUint32(24, true);
    if (length !== bytes.length - HEADER) return undefined;
    const payload = bytes.subarray(HEADER);
    const crc = crc32(payload);
    return crc !== undefined && crc === view.getUint32(28, true) ? payload : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function writeCache(file: string, size: number, mtime: number, payload: Uint8Array): void {
  const crc = crc32(payload);
  if (crc === undefined) return;
  const bytes = new Uint8Array(HEADER + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MAGIC, true);
  view.setFloat64(8, size, true);
  view.setFloat64(16, mtime, true);
  view.setUint32(24, payload.length, true);
  view.setUint32(28, crc, true);
  bytes.set(payload, HEADER);
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, bytes, { mode: 0o600 });
    renameSync(temporary, file);
  } catch {
    try {
      unlinkSync(temporary);
    } catch {
      // nothing was written
    }
  }
}

function load(): CliBundle {
  const bundle = join(__dirname, 'qcow2.cjs');
  const dir = cacheDirectory();
  if (dir === undefined || typeof Script !== 'function' || !usableDirectory(dir)) return require(bundle) as CliBundle;
  const st = statSync(bundle);
  const file = join(dir, `${process.version}-${process.arch}-${commandName(process.argv.slice(2))}.bin`);
  const cached = readCache(file, st.size, st.mtimeMs);
  const source = readFileSync(bundle, 'utf8').replace(/^#!.*/, '');
  const wrapper = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new Script(wrapper, { filename: bundle, ...(cached === undefined ? {} : { cachedData: cached }) });
  if (cached === undefined || script.cachedDataRejected === true) {
    // At exit, the bytecode of every function this run compiled goes to the cache.
    process.once('exit', () => {
      try {
        writeCache(file, st.size, st.mtimeMs, script.createCachedData());
      } catch {
        // no cache this time
      }
    });
  }
  const module = { exports: {} as unknown };
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run(module.exports, createRequire(bundle), module, bundle, __dirname);
  return module.exports as CliBundle;
}

/**
 * Sizes the process for what the CLI does: streaming guest data through libuv's thread pool while
 * V8 optimizes our code, on machines that may have only a couple of cores.
 *
 * - libuv's thread pool (Node's default: 4 threads) gets one thread per core the process may use,
 *   2 to 4, unless UV_THREADPOOL_SIZE is set. The pool starts at the first asynchronous file
 *   operation, after this. With fewer threads than reads in flight, a thread that finishes a read
 *   takes the next queued one at once instead of sleeping until it is woken for it, and the
 *   page-cache copies leave the event loop a core.
 * - TurboFan inlines functions of at most 100 bytes of bytecode (V8's default: 460). The hot
 *   functions of a request are then optimized once each, not again inside every caller (the
 *   bench loop, the image's read and the storage's read each carried the whole chain), and those
 *   compiles share the cores with the I/O during the first ~80 ms of a run.
 *
 * `node bench/read.mjs --pairs 7 --only bench` (qcow2 bench vs qemu-img bench, 1 GiB image,
 * median throughput ratio), 2 cores at load ~3, two runs each: the previous binary (`--bin`, built
 * at 3b31cbc) 1.30x and 1.16x; that binary given both settings by hand (`UV_THREADPOOL_SIZE=2 ...
 * --node-args --max-inlined-bytecode-size=100`) 1.60x and 1.54x; this launcher (`--bundle`) 1.56x
 * and 1.46x. `node bench/write.mjs --bin` old vs new: unchanged within noise.
 */
function tuneRuntime(): void {
  if (process.env['UV_THREADPOOL_SIZE'] === undefined) {
    process.env['UV_THREADPOOL_SIZE'] = String(Math.min(4, Math.max(2, availableParallelism())));
  }
  setFlagsFromString('--max-inlined-bytecode-size=100');
}

let cli: CliBundle;
try {
  tuneRuntime();
  cli = load();
} catch (error) {
  // The bundle is missing or broken (an installation problem): one line, as for any failure.
  process.stderr.write(`qcow2: ${error instanceof Error ? error.message.replace(/\s*\n\s*/g, ' ') : String(error)}\n`);
  process.exit(1);
}
void cli.runCli();
