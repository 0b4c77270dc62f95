#!/usr/bin/env node
// Write benchmark of issue 4, side by side with qemu-img in the same run.
//
//   node bench/write.mjs [--pairs 5] [--raw-mib 512] [--only seq,step,convert,convert-c] [--dir DIR] [--bundle | --bin CLI.cjs]
//
// `qcow2` is the built binary (node_modules/.bin/qcow2: run `pnpm build` first); with --bundle,
// it is built from the workspace sources first as the published one is (bench/build-cli.mjs), so
// nothing depends on dist folders another build may be rewriting.
//
// Wall time of whole commands (process start to exit), `-t unsafe` everywhere, each pair run in
// alternating order (qemu first in odd pairs); before every run (not timed) the previous output
// is removed, the page cache written back (`sync`) and a second left for the file system to
// settle (with the `discard` mount option, freeing a gigabyte file sends discards that would
// otherwise slow down whichever run comes next). Reports each pair and the median of
// (our time / qemu's time); the target is <= 1.0 for each. --dir puts the files elsewhere
// (e.g. /dev/shm to leave the disk out). With /usr/bin/time present, each run's user+sys CPU time
// is printed too (less noisy than wall time on a shared machine), with the median CPU ratio.
//
// 1. seq: allocating sequential 64 KiB writes over a fresh 1 GiB image
//    (bench -w -c 16384 -s 64k; images from qemu-img create).
// 2. step: 100 000 4 KiB writes 1 MiB apart over a fresh 100 GiB image (bench -w -c 100000 -s 4k
//    -S 1M), each one allocating a cluster.
// 3. convert: convert -O qcow2 of a raw file of --raw-mib MiB, a third of it zeros (every third
//    MiB), the rest half random, half compressible.
// 4. convert-c: the same with -c.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCli } from './build-cli.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const pairs = Number(opt('pairs', 5));
const rawMiB = Number(opt('raw-mib', 512));
const only = new Set(String(opt('only', 'seq,step,convert,convert-c')).split(','));
const base = String(opt('dir', tmpdir()));

const dir = mkdtempSync(join(base, 'qcow2-bench-write-'));
let qcow2Bin = join(root, 'node_modules/.bin/qcow2');
if (args.includes('--bundle')) qcow2Bin = await buildCli(join(dir, 'bundle'));
if (opt('bin') !== undefined) qcow2Bin = resolve(opt('bin')); // a cli.cjs built elsewhere, to compare builds
// The binary's code cache (see packages/cli/src/bin.ts) starts empty in every run of this
// script: the first qcow2 run of each command makes it, the others use it.
process.env.QCOW2_COMPILE_CACHE = join(dir, 'compile-cache');
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const TIME = '/usr/bin/time';
const hasTime = existsSync(TIME);
const cpuFile = join(dir, 'cpu.txt');

/**
 * Wall time in seconds of one command, after `prepare` (not timed) and a sync, and its user+sys
 * CPU seconds (NaN without /usr/bin/time).
 */
function timed(cmd, cmdArgs, prepare) {
  prepare();
  execFileSync('sync');
  execFileSync('sleep', ['1']);
  const [file, argv] = hasTime ? [TIME, ['-f', '%U %S', '-o', cpuFile, cmd, ...cmdArgs]] : [cmd, cmdArgs];
  const t = performance.now();
  const r = spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')} failed: ${r.stderr || r.stdout}`);
  let cpu = NaN;
  if (hasTime) {
    const [user, sys] = readFileSync(cpuFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
    cpu = user + sys;
  }
  return { seconds, cpu };
}

/** Runs `pairs` alternating pairs of (qemu-img, qcow2) with the same arguments; prints and returns the median ratio. */
function compare(title, makeArgs, prepare) {
  console.log(`# ${title}`);
  const ratios = [];
  const cpuRatios = [];
  for (let p = 0; p < pairs; p++) {
    const run = (cmd) =>
      cmd === qcow2Bin && cmd.endsWith('.cjs')
        ? timed(process.execPath, [cmd, ...makeArgs(cmd)], () => prepare(cmd))
        : timed(cmd, makeArgs(cmd), () => prepare(cmd));
    let qemu, ours;
    if (p % 2 === 0) {
      qemu = run('qemu-img');
      ours = run(qcow2Bin);
    } else {
      ours = run(qcow2Bin);
      qemu = run('qemu-img');
    }
    ratios.push(ours.seconds / qemu.seconds);
    cpuRatios.push(ours.cpu / qemu.cpu);
    const cpu = hasTime ? ` (cpu: qemu-img ${qemu.cpu.toFixed(2)} s, qcow2 ${ours.cpu.toFixed(2)} s, ${(ours.cpu / qemu.cpu).toFixed(2)})` : '';
    console.log(
      `pair ${p + 1}: qemu-img ${qemu.seconds.toFixed(3)} s, qcow2 ${ours.seconds.toFixed(3)} s, ours/qemu ${(ours.seconds / qemu.seconds).toFixed(2)}${cpu}`,
    );
  }
  const m = median(ratios);
  console.log(`median ours/qemu wall-time ratio: ${m.toFixed(2)} (target <= 1.0)`);
  if (hasTime) console.log(`median ours/qemu user+sys CPU ratio: ${median(cpuRatios).toFixed(2)}`);
  console.log('');
  return m;
}

if (process.env.NODE_EXTRA_CA_CERTS) {
  // Node parses the certificates at every start (~0.07 s CPU here), before any of our code runs.
  console.log(`note: NODE_EXTRA_CA_CERTS is set (${process.env.NODE_EXTRA_CA_CERTS}): each node start parses it, which our runs pay and qemu-img's do not\n`);
}
const summary = [];
try {
  const image = join(dir, 'image.qcow2');
  const fresh = (size) => () => {
    rmSync(image, { force: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, size]);
  };

  if (only.has('seq')) {
    const m = compare(
      'bench -w -c 16384 -s 64k -t unsafe: allocating sequential 64 KiB writes over a fresh 1 GiB image',
      () => ['bench', '-w', '-c', '16384', '-s', '64k', '-t', 'unsafe', '-f', 'qcow2', image],
      fresh('1G'),
    );
    summary.push(['sequential 64 KiB writes, 1 GiB', m]);
  }
  if (only.has('step')) {
    const m = compare(
      'bench -w -c 100000 -s 4k -S 1M -t unsafe: 4 KiB writes 1 MiB apart over a fresh 100 GiB image',
      () => ['bench', '-w', '-c', '100000', '-s', '4k', '-S', '1M', '-t', 'unsafe', '-f', 'qcow2', image],
      fresh('100G'),
    );
    summary.push(['100 000 4 KiB writes, 1 MiB step', m]);
  }
  rmSync(image, { force: true });

  if (only.has('convert') || only.has('convert-c')) {
    const raw = join(dir, 'src.raw');
    const fd = openSync(raw, 'w');
    const mib = new Uint8Array(1 << 20);
    for (let i = 0; i < rawMiB; i++) {
      if (i % 3 === 1) {
        mib.fill(0);
      } else {
        randomFillSync(mib);
        for (let j = 0; j < mib.length; j += 4096) mib.fill(0x41 + ((j >> 12) & 3), j, j + 2048);
      }
      writeSync(fd, mib, 0, mib.length, i * mib.length);
    }
    closeSync(fd);
    const out = join(dir, 'out.qcow2');
    const clean = () => rmSync(out, { force: true });
    if (only.has('convert')) {
      const m = compare(
        `convert -t unsafe -O qcow2 of a ${rawMiB} MiB raw file (a third zeros)`,
        () => ['convert', '-t', 'unsafe', '-f', 'raw', '-O', 'qcow2', raw, out],
        clean,
      );
      summary.push([`convert -O qcow2, ${rawMiB} MiB raw`, m]);
    }
    if (only.has('convert-c')) {
      const m = compare(
        `convert -c -t unsafe -O qcow2 of the same file`,
        () => ['convert', '-c', '-t', 'unsafe', '-f', 'raw', '-O', 'qcow2', raw, out],
        clean,
      );
      summary.push([`convert -c -O qcow2, ${rawMiB} MiB raw`, m]);
    }
  }
  console.log('# summary: median ours/qemu wall-time ratios (target <= 1.0)');
  for (const [name, m] of summary) console.log(`${name.padEnd(40)} ${m.toFixed(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
