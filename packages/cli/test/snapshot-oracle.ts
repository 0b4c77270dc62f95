/**
 * Shared by the snapshot tests: running qemu's tools and ours in one directory, and patching
 * the fields of a snapshot table entry qemu-img cannot set (VM state size, VM clock, icount).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, type RunResult } from './helpers.js';

export function sh(cwd: string, cmd: string, args: readonly string[]): RunResult {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

/** Runs a qemu tool that must succeed; returns its stdout. */
export function ok(cwd: string, cmd: string, ...args: string[]): string {
  const r = sh(cwd, cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Our `qcow2 ARGS` with `cwd` as the working directory, as qemu's run. */
export async function ours(cwd: string, args: readonly string[]): Promise<RunResult> {
  const before = process.cwd();
  process.chdir(cwd);
  try {
    return await run(args);
  } finally {
    process.chdir(before);
  }
}

/** qemu's stderr with our program name. */
export function asOurs(text: string): string {
  return text.replaceAll('qemu-img:', 'qcow2:').replaceAll("Try 'qemu-img --help'", "Try 'qcow2 --help'");
}

/** The DATE column of a snapshot table (creation times differ between two runs). */
export function withoutDates(text: string): string {
  return text.replace(/ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d /g, ' YYYY-MM-DD hh:mm:ss ');
}

export interface EntryPatch {
  vmStateSize?: number;
  vmClockNsec?: bigint;
  /** -1 for "no icount" (all ones), as qemu stores it. */
  icount?: bigint;
}

/** Rewrites fields of snapshot table entry `index` of a qcow2 file (extra data as qemu 7.2 writes it: 24 bytes). */
export function patchSnapshotEntry(file: string, index: number, patch: EntryPatch): void {
  const bytes = readFileSync(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(60);
  if (index >= count) throw new Error(`${file}: no snapshot entry ${index} (of ${count})`);
  let at = Number(view.getBigUint64(64));
  for (let i = 0; i < index; i += 1) at = entryEnd(view, at);
  const extra = view.getUint32(at + 36);
  if (extra < 24) throw new Error(`${file}: snapshot entry ${index} has ${extra} bytes of extra data, not 24`);
  if (patch.vmStateSize !== undefined) {
    view.setUint32(at + 32, patch.vmStateSize);
    view.setBigUint64(at + 40, BigInt(patch.vmStateSize));
  }
  if (patch.vmClockNsec !== undefined) view.setBigUint64(at + 24, patch.vmClockNsec);
  if (patch.icount !== undefined) view.setBigUint64(at + 56, BigInt.asUintN(64, patch.icount));
  writeFileSync(file, bytes);
}

function entryEnd(view: DataView, at: number): number {
  const size = 40 + view.getUint32(at + 36) + view.getUint16(at + 12) + view.getUint16(at + 14);
  return at + Math.ceil(size / 8) * 8;
}

export function fileBytes(dir: string, name: string): Buffer {
  return readFileSync(join(dir, name));
}
