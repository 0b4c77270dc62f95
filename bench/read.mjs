#!/usr/bin/env node
// Read benchmark of issue 3, side by side with qemu-img in the same run.
//
//   node bench/read.mjs [--size-mib 1024] [--pairs 7] [--depth 64] [--bundle] [--bin CLI.cjs]
//                       [--node-args "FLAGS"] [--only bench,engine]
//
// --bin measures another build's cli.cjs; --node-args gives node flags for the qcow2 runs (e.g.
// an older build run with the settings a newer launcher makes itself:
// `UV_THREADPOOL_SIZE=2 node bench/read.mjs --bin OLD/cli.cjs --node-args --max-inlined-bytecode-size=100`).
//
// 1. qcow2 bench vs qemu-img bench: sequential 64 KiB reads over a fully allocated image (every
//    cluster holds random data), alternating which tool runs first in each pair. Each tool reports
//    "Run completed in X seconds" (first request to last completion, buffers allocated before);
//    prints each pair, its user+sys CPU time of the whole process (from the shell's `times`: on a
//    shared machine less noisy than wall time; qemu's includes its thread pool, ours Node's start
//    and libuv's pool) and the median of (qemu time / our time) = our throughput / qemu's.
// 2. Engine vs raw storage, in process, depth 1: the whole guest disk in 64 KiB reads through the
//    engine vs the same host bytes (the data clusters' runs, from the engine's extents) read in
//    64 KiB pieces from @qcow2/storage-node directly, after one untimed pass of each (JIT warm-up);
//    which goes first alternates per pair. Prints wall and CPU overheads and their medians.
//
// `qcow2` is the built binary (node_modules/.bin/qcow2, and the engine from the packages' dist:
// run `pnpm build` first); with --bundle the CLI and the engine are bundled from the workspace
// sources with esbuild first (no dependence on dist folders another build may be rewriting).
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildCli, workspaceBundler } from './build-cli.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const sizeMiB = Number(opt('size-mib', 1024));
const pairs = Number(opt('pairs', 7));
const depth = Number(opt('depth', 64));
const only = new Set(String(opt('only', 'bench,engine')).split(','));
const reqSize = 65536;
const count = (sizeMiB * 1024 * 1024) / reqSize;

const dir = mkdtempSync(join(tmpdir(), 'qcow2-bench-'));
// The binary's code cache (see packages/cli/src/bin.ts) starts empty in every run of this
// script: the first qcow2 run makes it, the others use it.
process.env.QCOW2_COMPILE_CACHE = join(dir, 'compile-cache');
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

let qcow2Bin = join(root, 'node_modules/.bin/qcow2');
let engineModule = undefined;
if (args.includes('--bundle')) {
  const { esbuild, common } = workspaceBundler('esm');
  qcow2Bin = await buildCli(join(dir, 'bin'));
  engineModule = join(dir, 'engine.mjs');
  await esbuild.build({
    ...common,
    stdin: {
      contents: "export { openImage } from '@qcow2/engine'; export { createNodeStorage } from '@qcow2/storage-node';",
      resolveDir: root,
      loader: 'js',
    },
    outfile: engineModule,
  });
}

if (opt('bin') !== undefined) qcow2Bin = resolve(opt('bin')); // a cli.cjs built elsewhere, to compare builds
const nodeArgs = String(opt('node-args', '')).split(' ').filter(Boolean);

/** Runs `cmd args` through sh, returning its stdout and the user+sys CPU seconds of the process. */
function runTimed(cmd, cmdArgs) {
  // `times` prints the shell's own times, then its children's: "0m0.240s 0m0.180s".
  const r = spawnSync('sh', ['-c', '"$0" "$@"; status=$?; times >&2; exit $status', cmd, ...cmdArgs], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const lines = r.stderr.trim().split('\n');
  const m = /^(\d+)m([0-9.]+)s (\d+)m([0-9.]+)s$/.exec(lines[lines.length - 1] ?? '');
  const cpu = m ? Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]) : NaN;
  return { status: r.status, stdout: r.stdout, stderr: lines.slice(0, -1).join('\n'), cpu };
}

try {
  const raw = join(dir, 'src.raw');
  const image = join(dir, 'image.qcow2');
  const fd = openSync(raw, 'w');
  const chunk = new Uint8Array(16 << 20);
  for (let done = 0; done < sizeMiB * 1024 * 1024; done += chunk.length) {
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, image]);
  rmSync(raw);
  execFileSync('cat', [image], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 0 }); // warm the page cache

  if (only.has('bench')) {
    const benchArgs = ['bench', '-c', String(count), '-d', String(depth), '-s', '64k', '-f', 'qcow2', image];
    const time = (cmd) => {
      const r = cmd.endsWith('.cjs') ? runTimed(process.execPath, [...nodeArgs, cmd, ...benchArgs]) : runTimed(cmd, benchArgs);
      const m = /Run completed in ([0-9.]+) seconds/.exec(r.stdout);
      if (r.status !== 0 || !m) throw new Error(`${cmd} bench failed: ${r.stderr || r.stdout}`);
      return { seconds: Number(m[1]), cpu: r.cpu };
    };
    console.log(`# qcow2 bench vs qemu-img bench: ${count} x 64 KiB sequential reads, depth ${depth}, ${sizeMiB} MiB image`);
    const ratios = [];
    const cpuRatios = [];
    for (let p = 0; p < pairs; p++) {
      let ours, qemu;
      if (p % 2 === 0) {
        qemu = time('qemu-img');
        ours = time(qcow2Bin);
      } else {
        ours = time(qcow2Bin);
        qemu = time('qemu-img');
      }
      ratios.push(qemu.seconds / ours.seconds);
      cpuRatios.push(ours.cpu / qemu.cpu);
      console.log(
        `pair ${p + 1}: qemu-img ${qemu.seconds.toFixed(3)} s (cpu ${qemu.cpu.toFixed(2)} s), ` +
          `qcow2 ${ours.seconds.toFixed(3)} s (cpu ${ours.cpu.toFixed(2)} s), throughput ratio ${(qemu.seconds / ours.seconds).toFixed(2)}x`,
      );
    }
    console.log(`median throughput ratio (ours / qemu-img): ${median(ratios).toFixed(2)}x (target >= 1.5x)`);
    console.log(`median process CPU time ratio (ours / qemu-img, Node's start included): ${median(cpuRatios).toFixed(2)}`);
  }

  if (only.has('engine')) {
    // Engine vs the raw storage adapter, in process.
    const { openImage, createNodeStorage } =
      engineModule === undefined
        ? { ...(await import('@qcow2/engine')), ...(await import('@qcow2/storage-node')) }
        : await import(pathToFileURL(engineModule).href);
    const buf = new Uint8Array(reqSize);
    // The host bytes the engine reads: its data runs, in 64 KiB pieces as the guest reads split them.
    const pieces = [];
    {
      const s = await createNodeStorage(image, { readOnly: true });
      const img = await openImage(s, { readOnly: true });
      for (const e of await img.extents(0, img.virtualSize)) {
        if (e.kind !== 'data' || e.hostOffset === undefined) throw new Error(`unexpected extent ${JSON.stringify(e)}`);
        for (let at = 0; at < e.length; at += reqSize) pieces.push(e.hostOffset + at);
      }
      await img.close();
      await s.close(); // the engine closes only what it opened itself
    }
    const engine = async () => {
      const s = await createNodeStorage(image, { readOnly: true });
      const img = await openImage(s, { readOnly: true });
      const t = performance.now();
      const c = process.cpuUsage();
      for (let off = 0; off < img.virtualSize; off += reqSize) await img.read(buf, off);
      const cpu = process.cpuUsage(c);
      const ms = performance.now() - t;
      await img.close();
      await s.close();
      return { ms, cpu: (cpu.user + cpu.system) / 1000 };
    };
    const rawStorage = async () => {
      const s = await createNodeStorage(image, { readOnly: true });
      const t = performance.now();
      const c = process.cpuUsage();
      for (const at of pieces) await s.read(buf, at);
      const cpu = process.cpuUsage(c);
      const ms = performance.now() - t;
      await s.close();
      return { ms, cpu: (cpu.user + cpu.system) / 1000 };
    };
    console.log(`# engine vs raw storage in process: ${pieces.length} x 64 KiB reads at depth 1`);
    // One untimed pass of each first: the pairs compare compiled code, not the JIT's warm-up.
    await engine();
    await rawStorage();
    const wallRatios = [];
    const cpuRatios = [];
    for (let p = 0; p < pairs; p++) {
      let e, r;
      if (p % 2 === 0) {
        e = await engine();
        r = await rawStorage();
      } else {
        r = await rawStorage();
        e = await engine();
      }
      wallRatios.push(e.ms / r.ms);
      cpuRatios.push(e.cpu / r.cpu);
      console.log(
        `pair ${p + 1}: engine ${e.ms.toFixed(1)} ms (cpu ${e.cpu.toFixed(1)} ms), raw storage ${r.ms.toFixed(1)} ms ` +
          `(cpu ${r.cpu.toFixed(1)} ms), overhead ${((e.ms / r.ms - 1) * 100).toFixed(1)}% (cpu ${((e.cpu / r.cpu - 1) * 100).toFixed(1)}%)`,
      );
    }
    console.log(`median engine overhead vs raw storage: ${((median(wallRatios) - 1) * 100).toFixed(1)}% (target <= 15%)`);
    console.log(`median engine CPU time overhead vs raw storage: ${((median(cpuRatios) - 1) * 100).toFixed(1)}%`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
