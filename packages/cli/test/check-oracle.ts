import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, openSync, readFileSync, writeSync } from 'node:fs';
import { expect, it } from 'vitest';
import { decodeHeader, getRefcount } from '@qcow2/format';
import { run, type RunResult } from './helpers.js';

/** `qemu-img check ARGS`, its output with qemu-img's program name written as ours. */
export function qemuImgCheck(args: readonly string[]): RunResult {
  const r = spawnSync('qemu-img', ['check', ...args], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return {
    code: r.status ?? -1,
    stdout: r.stdout,
    stderr: r.stderr.replaceAll('qemu-img: ', 'qcow2: ').replaceAll("Try 'qemu-img --help'", "Try 'qcow2 --help'"),
  };
}

/** `qcow2 check ARGS` in-process. */
export function ourCheck(args: readonly string[]): Promise<RunResult> {
  return run(['check', ...args]);
}

/** Writes `hexBytes` at `offset` of `file`. */
export function poke(file: string, offset: number, hexBytes: string): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.from(hexBytes, 'hex'), 0, hexBytes.length / 2, offset);
  } finally {
    closeSync(fd);
  }
}

/** A 64-bit big-endian value as 16 hex digits. */
export function be64(value: number | bigint): string {
  return BigInt(value).toString(16).padStart(16, '0');
}

export function be16(value: number): string {
  return value.toString(16).padStart(4, '0');
}

export function copy(from: string, to: string): string {
  copyFileSync(from, to);
  return to;
}

/** Where an image's tables are, read from the file. */
export interface Layout {
  clusterSize: number;
  l1Offset: number;
  /** Raw L1 entries. */
  l1: bigint[];
  /** Offset of the L2 table L1 entry `i` points to. */
  l2Offset(i: number): number;
  /** Raw entry `j` of the L2 table at `l2`. */
  l2Entry(l2: number, j: number): bigint;
  entrySize: number;
  refcountTableOffset: number;
  refblock0: number;
  refcountBits: number;
  snapshotsOffset: number;
  /** Each snapshot entry's offset in the file and its L1 table offset. */
  snapshots: { at: number; l1Offset: number; l1Size: number }[];
}

export function layoutOf(file: string): Layout {
  const bytes = readFileSync(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = decodeHeader(new Uint8Array(bytes.buffer, bytes.byteOffset, 512));
  const cs = 2 ** header.clusterBits;
  const u64 = (at: number): bigint => (at + 8 <= bytes.length ? view.getBigUint64(at) : 0n);
  const l1: bigint[] = [];
  for (let i = 0; i < header.l1Size; i++) l1.push(u64(header.l1TableOffset + i * 8));
  const entrySize = (header.incompatibleFeatures & (1n << 4n)) !== 0n ? 16 : 8;
  const snapshots: Layout['snapshots'] = [];
  let at = header.snapshotsOffset;
  for (let i = 0; i < header.nbSnapshots; i++) {
    at = Math.ceil(at / 8) * 8;
    const extra = view.getUint32(at + 36);
    const idSize = view.getUint16(at + 12);
    const nameSize = view.getUint16(at + 14);
    snapshots.push({ at, l1Offset: Number(u64(at)), l1Size: view.getUint32(at + 8) });
    at += 40 + extra + idSize + nameSize;
  }
  return {
    clusterSize: cs,
    l1Offset: header.l1TableOffset,
    l1,
    l2Offset: (i) => Number((l1[i] ?? 0n) & 0x00ff_ffff_ffff_fe00n),
    l2Entry: (l2, j) => u64(l2 + j * entrySize),
    entrySize,
    refcountTableOffset: header.refcountTableOffset,
    refblock0: Number(u64(header.refcountTableOffset) & ~0x1ffn),
    refcountBits: 2 ** header.refcountOrder,
    snapshotsOffset: header.snapshotsOffset,
    snapshots,
  };
}

/**
 * The file's bytes with every cluster whose refcount is 0 zeroed (qemu punches holes where a
 * repair frees clusters; a storage without discard keeps their old bytes): what must be equal
 * between two images repaired the same way.
 */
export function normalizedBytes(file: string): Buffer {
  const bytes = Buffer.from(readFileSync(file));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = decodeHeader(new Uint8Array(bytes.buffer, bytes.byteOffset, 512));
  const cs = 2 ** header.clusterBits;
  const order = header.refcountOrder;
  const perBlock = (cs * 8) / 2 ** order;
  const clusters = Math.ceil(bytes.length / cs);
  const refcount = (c: number): number => {
    const index = Math.floor(c / perBlock);
    const entryAt = header.refcountTableOffset + index * 8;
    if (index * 8 >= header.refcountTableClusters * cs || entryAt + 8 > bytes.length) return 0;
    const block = Number(view.getBigUint64(entryAt) & ~0x1ffn);
    if (block === 0 || block + cs > bytes.length) return 0;
    return getRefcount(new Uint8Array(bytes.buffer, bytes.byteOffset + block, cs), c % perBlock, order);
  };
  for (let c = 1; c < clusters; c++) if (refcount(c) === 0) bytes.fill(0, c * cs, Math.min(bytes.length, (c + 1) * cs));
  return bytes;
}

/** One image damaged one way, and how far qemu and we are expected to agree on it. */
export interface Scenario {
  readonly name: string;
  /** The undamaged image to copy. */
  readonly base: () => string;
  readonly damage: (file: string, layout: Layout) => void;
  /**
   * Why the files qemu and we leave after a repair (`-r leaks`, `-r all`) may differ outside
   * their free clusters; when absent they must be equal there.
   */
  readonly bytesDiffer?: { readonly leaks?: string; readonly all?: string };
  /**
   * qemu 7.2 fails this `-r all` (exit 1) where we repair: the reason. Then our repaired image
   * must pass qemu-img check and hold the undamaged image's guest data.
   */
  readonly qemuCannotRepair?: string;
}

export interface ModeOutcome {
  readonly args: readonly string[];
  readonly qemu: RunResult;
  readonly ours: RunResult;
  /** The files after qemu's and after our run. */
  readonly qemuFile: string;
  readonly ourFile: string;
}

/**
 * Damages two copies of the base image, runs `qemu-img check ARGS` on one and `qcow2 check ARGS`
 * on the other, with the file names made equal in the output.
 */
export async function runBoth(dir: string, scenario: Scenario, args: readonly string[], tag: string): Promise<ModeOutcome> {
  const base = scenario.base();
  const qemuFile = copy(base, `${dir}/${scenario.name}-${tag}-q.qcow2`);
  const ourFile = copy(base, `${dir}/${scenario.name}-${tag}-o.qcow2`);
  scenario.damage(qemuFile, layoutOf(qemuFile));
  scenario.damage(ourFile, layoutOf(ourFile));
  const qemu = qemuImgCheck([...args, qemuFile]);
  const ours = await ourCheck([...args, ourFile]);
  return { args, qemu: renamed(qemu, qemuFile), ours: renamed(ours, ourFile), qemuFile, ourFile };
}

/** The output with `file` written as FILE. */
export function renamed(r: RunResult, file: string): RunResult {
  return { code: r.code, stdout: r.stdout.replaceAll(file, 'FILE'), stderr: r.stderr.replaceAll(file, 'FILE') };
}

/** `qemu-img compare A B`: 0 when the guest contents are equal. */
export function qemuCompare(a: string, b: string): number {
  return spawnSync('qemu-img', ['compare', '-q', a, b]).status ?? -1;
}

/**
 * Registers one test per scenario: for no repair (human and JSON output), `-r leaks` and
 * `-r all`, our output, messages and exit status equal qemu-img's; after a repair both files are
 * equal outside their free clusters; after `-r all` each tool's check of the other's repaired
 * image equals its own, and a repair qemu completes leaves both images clean with the same guest
 * data.
 */
export function scenarioTests(dir: () => string, scenarios: readonly Scenario[]): void {
  for (const scenario of scenarios) {
    it(scenario.name, async () => {
      const modes: [string, string[]][] = [
        ['n', []],
        ['j', ['--output=json']],
        ['l', ['-r', 'leaks']],
        ['a', ['-r', 'all']],
      ];
      for (const [tag, args] of modes) {
        const r = await runBoth(dir(), scenario, args, tag);
        const what = `${scenario.name} ${args.join(' ')}`;
        if (tag === 'a' && scenario.qemuCannotRepair !== undefined) {
          expect(r.qemu.code, what).toBe(1);
          expect(r.qemu.stderr, what).toContain('Check failed');
          expect(r.ours.code, `${what}: ${r.ours.stderr}`).toBe(0);
          expect(r.ours.stdout, what).toContain('The following inconsistencies were found and repaired');
          expect(qemuImgCheck([r.ourFile]).code, what).toBe(0);
          expect(qemuCompare(scenario.base(), r.ourFile), what).toBe(0);
          continue;
        }
        expect(r.ours, what).toEqual(r.qemu);
        const differ = tag === 'l' ? scenario.bytesDiffer?.leaks : tag === 'a' ? scenario.bytesDiffer?.all : 'not repaired';
        if (differ === undefined) {
          expect(normalizedBytes(r.ourFile).equals(normalizedBytes(r.qemuFile)), `${what}: files differ`).toBe(true);
        }
        if (tag !== 'a') continue;
        const qemuOnOurs = renamed(qemuImgCheck([r.ourFile]), r.ourFile);
        const oursOnOurs = renamed(await ourCheck([r.ourFile]), r.ourFile);
        expect(oursOnOurs, `${what}: checks of our repaired image`).toEqual(qemuOnOurs);
        const qemuOnQemus = renamed(qemuImgCheck([r.qemuFile]), r.qemuFile);
        const oursOnQemus = renamed(await ourCheck([r.qemuFile]), r.qemuFile);
        expect(oursOnQemus, `${what}: checks of qemu's repaired image`).toEqual(qemuOnQemus);
        if (r.qemu.code === 0) {
          expect(qemuOnOurs.code, what).toBe(0);
          expect(qemuCompare(r.ourFile, r.qemuFile), `${what}: guest data`).toBe(0);
        }
      }
    });
  }
}
