/**
 * Randomized write workloads with their flat model, for the power-cut and I/O-error suites:
 * the ops of the write-path model (write, zero, discard, compressed write, flush, read), seeded
 * with random-ops.ts's prng so every run replays from its seed, and the checks that a file a
 * crash (or a failed call) left behind must pass.
 */
import { isQcow2Error, Qcow2Error } from '@qcow2/format';
import { createMemoryStorage, type MemoryStorage, type Storage } from '@qcow2/storage';
import { checkImage, openImage, type CheckResult, type Image, type OpenOptions } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';
import { prng } from './random-ops.js';

export interface WorkloadConfig {
  seed: number;
  clusterBits: number;
  refcountOrder: number;
  version: 2 | 3;
  lazy: boolean;
  extendedL2: boolean;
  backing: 'none' | 'raw' | 'qcow2';
  /** Virtual size in clusters (the last one may be short by `cut` sectors). */
  clusters: number;
  cut: number;
  /** A small L2 cache (1 KiB of 512-byte entries): tables are evicted, written between flushes. */
  l2Small: boolean;
  ops: number;
  /** Longest write, zero or discard in clusters (default 3). */
  span?: number;
  /** Concurrent batches of ops (default true). */
  batches?: boolean;
  /** Internal snapshots created, applied and deleted among the ops (default false). */
  snapshots?: boolean;
}

export type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; offset: number; length: number; seed: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'flush' }
  /** Concurrent ops on distinct clusters, with a flush started among them when `flush`. */
  | { kind: 'batch'; ops: Op[]; flush: boolean }
  | { kind: 'snapshot'; action: 'create' | 'apply' | 'delete'; name: string };

export function describeConfig(c: WorkloadConfig): string {
  return (
    `seed ${c.seed}, ${2 ** c.clusterBits} B clusters, refcount ${2 ** c.refcountOrder} bits, v${c.version}` +
    `${c.lazy ? ', lazy refcounts' : ''}${c.extendedL2 ? ', extended L2' : ''}` +
    `${c.backing === 'none' ? '' : `, ${c.backing} backing`}${c.l2Small ? ', small L2 cache' : ''}, ${c.ops} ops${c.span === undefined ? "" : ` of up to ${c.span} clusters`}${c.snapshots === true ? ", snapshots" : ""}`
  );
}

export function sizeOf(c: WorkloadConfig): number {
  return c.clusters * 2 ** c.clusterBits - c.cut * 512;
}

/** Deterministic bytes from a seed (as write-model.test.ts); `compressible` ones are runs. */
export function bytesOf(seed: number, length: number, compressible = false): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (compressible) {
      out[i] = (seed + (i >> 7)) & 0xff;
    } else {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
  }
  return out;
}

/** The op list of a config: mostly writes, with zero writes, discards, compressed writes, reads and flushes. */
export function workloadOps(c: WorkloadConfig): Op[] {
  const rand = prng(c.seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const cs = 2 ** c.clusterBits;
  const size = sizeOf(c);
  const clusters = Math.ceil(size / cs);
  const range = (maxClusters: number): { offset: number; length: number } => {
    const align = int(4);
    const unit = align === 0 ? 1 : align === 1 ? 512 : cs;
    const offset = Math.floor(int(size) / unit) * unit;
    const length = Math.max(1, Math.min(size - offset, Math.max(unit, Math.round((1 + int(maxClusters * cs)) / unit) * unit)));
    return { offset, length };
  };
  const ops: Op[] = [];
  const live: string[] = [];
  for (let i = 0; i < c.ops; i++) {
    if (c.snapshots === true && rand() < 0.08) {
      const k = int(10);
      if (live.length === 0 || (k < 4 && live.length < 3)) {
        live.push(`snap-${i}`);
        ops.push({ kind: 'snapshot', action: 'create', name: `snap-${i}` });
      } else if (k < 7) {
        ops.push({ kind: 'snapshot', action: 'apply', name: live[int(live.length)]! });
      } else {
        ops.push({ kind: 'snapshot', action: 'delete', name: live.splice(int(live.length), 1)[0]! });
      }
      continue;
    }
    const k = int(100);
    const span = c.span ?? 3;
    if (k < 38) ops.push({ kind: 'write', ...range(span), seed: int(2 ** 30) });
    else if (k < 52) ops.push({ kind: 'zero', ...range(span), unmap: rand() < 0.5 });
    else if (k < 62) ops.push({ kind: 'discard', ...range(span) });
    else if (k < 72) {
      const offset = int(clusters) * cs;
      ops.push({ kind: 'compressed', offset, length: Math.min(cs, size - offset), seed: int(2 ** 30) });
    } else if (k < 80) ops.push({ kind: 'read', ...range(2) });
    else if (k < 88 && c.batches !== false) {
      // 2..4 ops on distinct clusters, run together.
      const batch: Op[] = [];
      const used: [number, number][] = [];
      for (let tries = 0; tries < 12 && batch.length < 4; tries++) {
        const r = range(2);
        const from = Math.floor(r.offset / cs);
        const to = Math.ceil((r.offset + r.length) / cs);
        if (used.some(([a, b]) => from < b && a < to)) continue;
        used.push([from, to]);
        const j = int(5);
        if (j < 2) batch.push({ kind: 'write', ...r, seed: int(2 ** 30) });
        else if (j < 3) batch.push({ kind: 'zero', ...r, unmap: rand() < 0.5 });
        else if (j < 4) batch.push({ kind: 'discard', ...r });
        else batch.push({ kind: 'read', ...r });
      }
      ops.push({ kind: 'batch', ops: batch, flush: rand() < 0.4 });
    } else ops.push({ kind: 'flush' });
  }
  return ops;
}

/** A fresh image for the config (and its backing file's bytes), before any op. */
export async function freshWorkloadImage(c: WorkloadConfig): Promise<{ image: Uint8Array; backing: Uint8Array | undefined; base: Uint8Array }> {
  const size = sizeOf(c);
  const base = new Uint8Array(size);
  let backing: Uint8Array | undefined;
  const backingSize = Math.floor((size - 2 ** c.clusterBits / 2) / 512) * 512;
  if (c.backing === 'raw') {
    backing = bytesOf(c.seed + 7, backingSize);
    base.set(backing);
  } else if (c.backing === 'qcow2') {
    const s = createMemoryStorage();
    await writeFreshImage(s, { size: backingSize, clusterBits: 12 });
    const b = await openImage(s, { readOnly: false });
    for (let at = 0; at < backingSize; at += 3 * 4096 + 1000) {
      const n = Math.min(5000, backingSize - at);
      const bytes = bytesOf(at + c.seed, n);
      await b.write(bytes, at);
      base.set(bytes, at);
    }
    await b.close();
    backing = s.snapshot();
  }
  const s = createMemoryStorage();
  await writeFreshImage(s, {
    size,
    clusterBits: c.clusterBits,
    version: c.version,
    refcountOrder: c.refcountOrder,
    extendedL2: c.extendedL2,
    lazyRefcounts: c.lazy,
    ...(c.backing === 'none' ? {} : { backingFile: 'base', backingFormat: c.backing }),
  });
  return { image: s.snapshot(), backing, base };
}

export function openOptions(c: WorkloadConfig, backing: Uint8Array | undefined, readOnly = false): OpenOptions {
  return {
    readOnly,
    discard: 'unmap',
    resolver: async () => {
      if (backing === undefined) throw new Qcow2Error('NOT_FOUND', 'no backing file');
      return createMemoryStorage({ initial: backing, readOnly: true });
    },
    ...(c.l2Small ? { l2CacheSize: 1024, l2CacheEntrySize: 512 } : {}),
  };
}

/** The flat model of the guest disk, with the guest ranges every op may have changed. */
export class Model {
  readonly bytes: Uint8Array;
  readonly cs: number;
  /** The content of every snapshot ever created (names are never reused), and the ones that exist. */
  readonly snapshotContents = new Map<string, Uint8Array>();
  readonly liveSnapshots = new Set<string>();
  constructor(
    readonly config: WorkloadConfig,
    base: Uint8Array,
  ) {
    this.bytes = base.slice();
    this.cs = 2 ** config.clusterBits;
  }

  /** The guest ranges `op` may change (none for reads and flushes). */
  touched(op: Op): [number, number][] {
    if (op.kind === 'read' || op.kind === 'flush') return [];
    if (op.kind === 'batch') return op.ops.flatMap((o) => this.touched(o));
    if (op.kind === 'snapshot') return op.action === 'apply' ? [[0, this.bytes.length]] : [];
    return [[op.offset, op.offset + op.length]];
  }

  apply(op: Op): void {
    const size = this.bytes.length;
    switch (op.kind) {
      case 'write':
        this.bytes.set(bytesOf(op.seed, op.length), op.offset);
        break;
      case 'compressed':
        this.bytes.set(bytesOf(op.seed, op.length, true), op.offset);
        break;
      case 'zero':
        this.bytes.fill(0, op.offset, op.offset + op.length);
        break;
      case 'discard': {
        if (this.config.version < 3 && this.config.backing !== 'none') break;
        const from = Math.ceil(op.offset / this.cs) * this.cs;
        let to = Math.floor((op.offset + op.length) / this.cs) * this.cs;
        if (op.offset + op.length === size && size % this.cs !== 0) to = size;
        if (from < to) this.bytes.fill(0, from, to);
        break;
      }
      case 'snapshot':
        if (op.action === 'create') {
          this.snapshotContents.set(op.name, this.bytes.slice());
          this.liveSnapshots.add(op.name);
        } else if (op.action === 'apply') {
          this.bytes.set(this.snapshotContents.get(op.name)!);
        } else {
          this.liveSnapshots.delete(op.name);
        }
        break;
      default:
        break;
    }
  }
}

/** qemu refuses a compressed write over an allocated cluster (IO, "already allocated"). */
export function isAlreadyAllocated(error: unknown): boolean {
  return isQcow2Error(error) && error.code === 'IO' && /already allocated/.test(error.message);
}

export interface RunOptions {
  /** Compare what reads return with the model (default true). */
  checkReads?: boolean;
  /** Called when the flush of a batch resolves, with the model as it was before the batch. */
  onBatchFlush?: (before: Uint8Array) => void;
}

/**
 * Runs one op on the image and applies what it did to the model (nothing for a compressed write
 * refused as qemu refuses it). A batch runs its ops together; when one rejects, the others still
 * finish (and are applied) before the first rejection is rethrown.
 */
export async function runOp(image: Image, op: Op, model: Model, options: RunOptions = {}): Promise<void> {
  switch (op.kind) {
    case 'write':
      await image.write(bytesOf(op.seed, op.length), op.offset);
      break;
    case 'zero':
      await image.writeZeroes(op.offset, op.length, { mayUnmap: op.unmap });
      break;
    case 'discard':
      await image.discard(op.offset, op.length);
      break;
    case 'compressed':
      try {
        await image.writeCompressed(bytesOf(op.seed, op.length, true), op.offset);
      } catch (error) {
        if (isAlreadyAllocated(error)) return;
        throw error;
      }
      break;
    case 'read': {
      const dst = await image.readBytes(op.offset, op.length);
      if (options.checkReads !== false) {
        const want = model.bytes.subarray(op.offset, op.offset + op.length);
        if (!equalBytes(dst, want)) throw new Error(`read ${op.length} at ${op.offset}: differs from the model`);
      }
      break;
    }
    case 'flush':
      await image.flush();
      break;
    case 'snapshot':
      // The content a snapshot made now would hold, recorded first: a failed create may still leave it.
      if (op.action === 'create') model.snapshotContents.set(op.name, model.bytes.slice());
      if (op.action === 'create') await image.createSnapshot(op.name, { dateSec: 1, dateNsec: 0 });
      else if (op.action === 'apply') await image.applySnapshot(op.name);
      else await image.deleteSnapshot(op.name);
      break;
    case 'batch': {
      const before = model.bytes.slice();
      const runs = op.ops.map((o) => runOp(image, o, model, options));
      if (op.flush) {
        runs.push(
          image.flush().then(() => {
            options.onBatchFlush?.(before);
          }),
        );
      }
      const settled = await Promise.allSettled(runs);
      const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (rejected !== undefined) throw rejected.reason;
      return;
    }
  }
  model.apply(op);
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** The guest content the last completed flush made durable, and the ranges changed since. */
export interface Durable {
  model: Uint8Array;
  /**
   * Snapshots: every one present must hold what it held when created; those live at the flush
   * and not deleted since (nor a delete failed) must be present.
   */
  snapshots?: { contents: ReadonlyMap<string, Uint8Array>; mustExist: readonly string[] };
  /** Guest ranges ops after that flush may have changed (up to the crash). */
  since: [number, number][];
}

/** Bytes of `durable.model` outside `durable.since` that `content` does not hold. */
export function lostBytes(content: Uint8Array, durable: Durable): { lost: number; first: number } {
  let lost = 0;
  let first = -1;
  const since = durable.since.filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  // Compare the gaps between the changed ranges.
  let at = 0;
  const gaps: [number, number][] = [];
  for (const [a, b] of since) {
    if (a > at) gaps.push([at, a]);
    at = Math.max(at, b);
  }
  if (at < content.length) gaps.push([at, content.length]);
  for (const [a, b] of gaps) {
    if (equalBytes(content.subarray(a, b), durable.model.subarray(a, b))) continue;
    for (let x = a; x < b; x++) {
      if (content[x] !== durable.model[x]) {
        lost += 1;
        if (first < 0) first = x;
      }
    }
  }
  return { lost, first };
}

export interface AfterCrash {
  /** The file's dirty bit was set (lazy refcounts in use at the crash). */
  dirty: boolean;
  /** Our check of the file as the crash left it (not dirty only). */
  check: CheckResult | undefined;
  /** Leaks a check found (as left, or after the open repaired a dirty image). */
  leaks: number;
  /** Corruptions and check errors found anywhere (safe COPIED errors not counted). */
  corruptions: number;
  /** OFLAG_COPIED errors that cannot lose data (see safeCopiedErrors), all fixed by -r all. */
  safeCopied: number;
  lost: number;
  firstLost: number;
  /** The file after opening it for writing (repairs a dirty one) and closing it. */
  reopened: Uint8Array;
  problems: string[];
}

const INCOMPAT_DIRTY_BIT = 1;

export function isDirty(file: Uint8Array): boolean {
  if (file.length < 80) return false;
  const view = new DataView(file.buffer, file.byteOffset);
  // Version 3 only: a version 2 header ends at 72.
  return view.getUint32(4) >= 3 && (view.getUint32(76) & INCOMPAT_DIRTY_BIT) !== 0;
}

/**
 * OFLAG_COPIED errors that cannot lose data: COPIED set on a cluster whose refcount is above 1
 * only because of a leak (one reference: a snapshot not yet in the table), or COPIED clear on a
 * cluster with refcount 1 (the next write copies it). A cut inside createSnapshot or
 * deleteSnapshot leaves them, as in qemu 7.2 (qcow2_update_snapshot_refcount makes the refcount
 * change durable before the L2/L1 COPIED updates); qemu-img check counts them as corruptions
 * and -r all fixes them.
 */
export function safeCopiedErrors(r: CheckResult, clusterBits: number): number {
  const references = new Map<number, number>();
  for (const m of r.messages) {
    const leak = /^Leaked cluster (\d+) refcount=\d+ reference=(\d+)/.exec(m.text);
    if (leak !== null) references.set(Number(leak[1]), Number(leak[2]));
  }
  let safe = 0;
  for (const m of r.messages) {
    const e = /^ERROR OFLAG_COPIED (?:data|L2) cluster: .*(?:l2_entry|l1_entry)=([0-9a-f]+) refcount=(\d+)$/.exec(m.text);
    if (e === null) continue;
    const entry = BigInt(`0x${e[1]}`);
    const refcount = Number(e[2]);
    const copied = (entry >> 63n) === 1n;
    const cluster = Number((entry & 0x00ff_ffff_ffff_fe00n) >> BigInt(clusterBits));
    if (copied ? refcount > 1 && references.get(cluster) === 1 : refcount === 1) safe += 1;
  }
  return safe;
}

function verdict(r: CheckResult, safeCopied = 0): string | undefined {
  if (r.failure !== undefined) return `check failed: ${r.failure}`;
  if (r.corruptions - safeCopied !== 0 || r.checkErrors !== 0) {
    const errors = r.messages.filter((m) => !/^Leaked cluster/.test(m.text));
    return `${r.corruptions} corruptions, ${r.checkErrors} check errors: ${errors.slice(0, 4).map((m) => m.text).join('; ')}`;
  }
  return undefined;
}

/**
 * Everything a file left by a crash must pass: our check finds no corruption (a dirty
 * lazy-refcounts file excepted: its refcounts may lag), a leaks repair leaves it clean, it opens
 * for writing (repairing a dirty one), the durable content reads back, and after closing, the
 * check is clean but for leaks.
 */
export async function checkCrashedFile(
  file: Uint8Array,
  config: WorkloadConfig,
  backing: Uint8Array | undefined,
  durable: Durable | undefined,
): Promise<AfterCrash> {
  const problems: string[] = [];
  const dirty = isDirty(file);
  let check: CheckResult | undefined;
  let leaks = 0;
  let corruptions = 0;
  if (dirty && !config.lazy) problems.push('dirty bit set without lazy refcounts');
  let safeCopied = 0;
  if (!dirty) {
    check = await checkImage(createMemoryStorage({ initial: file, readOnly: true }));
    safeCopied = safeCopiedErrors(check, config.clusterBits);
    const bad = verdict(check, safeCopied);
    if (bad !== undefined) {
      problems.push(`as left: ${bad}`);
      corruptions += check.corruptions - safeCopied + check.checkErrors;
    }
    leaks += check.leaks;
    if (safeCopied > 0 && bad === undefined) {
      const copy = createMemoryStorage({ initial: file });
      const fixed = await checkImage(copy, { repair: 'all' });
      if (verdict(fixed) !== undefined || fixed.leaks !== 0) {
        problems.push(`repair all of ${safeCopied} COPIED errors: ${verdict(fixed) ?? `${fixed.leaks} leaks left`}`);
      }
    } else if (check.leaks > 0 && bad === undefined) {
      const copy = createMemoryStorage({ initial: file });
      const fixed = await checkImage(copy, { repair: 'leaks' });
      if (verdict(fixed) !== undefined || fixed.leaks !== 0 || fixed.leaksFixed !== check.leaks) {
        problems.push(`repair leaks: ${verdict(fixed) ?? `${fixed.leaks} leaks left, ${fixed.leaksFixed} fixed of ${check.leaks}`}`);
      }
    }
  }
  const storage = createMemoryStorage({ initial: file });
  let lost = 0;
  let firstLost = -1;
  let image: Image | undefined;
  try {
    image = await openImage(storage, openOptions(config, backing));
    if (image.dirty) problems.push('still dirty after opening for writing');
    const content = new Uint8Array(image.virtualSize).fill(0xa5);
    await image.read(content, 0);
    if (durable !== undefined) {
      ({ lost, first: firstLost } = lostBytes(content, durable));
      if (lost > 0) problems.push(`${lost} flushed bytes lost, first at guest offset ${firstLost}`);
    }
    const snaps = durable?.snapshots;
    if (snaps !== undefined) {
      const names = image.snapshots.map((x) => x.name);
      for (const name of snaps.mustExist) if (!names.includes(name)) problems.push(`snapshot ${name} lost`);
      for (const name of names) {
        const want = snaps.contents.get(name);
        if (want === undefined) {
          problems.push(`unknown snapshot ${name}`);
          continue;
        }
        const view = await image.openSnapshot(name);
        const got = await view.readBytes(0, view.virtualSize);
        await view.close();
        if (!equalBytes(got, want)) problems.push(`snapshot ${name}: content differs from when it was created`);
      }
    }
  } catch (error) {
    problems.push(`open/read for writing: ${String(error)}`);
  } finally {
    await image?.close().catch((error: unknown) => problems.push(`close: ${String(error)}`));
  }
  const reopened = storage.snapshot();
  if (dirty) {
    const after = await checkImage(createMemoryStorage({ initial: reopened, readOnly: true }));
    const bad = verdict(after);
    if (bad !== undefined) {
      problems.push(`after the open's repair: ${bad}`);
      corruptions += after.corruptions + after.checkErrors;
    }
    leaks += after.leaks;
  }
  return { dirty, check, leaks, corruptions, safeCopied, lost, firstLost, reopened, problems };
}

/** A Storage over a memory storage whose close keeps the bytes (for reopening what an engine left). */
export function keepOpen(inner: MemoryStorage): Storage {
  return {
    get readOnly() {
      return inner.readOnly;
    },
    canDiscard: true,
    read: (dst, offset) => inner.read(dst, offset),
    write: (src, offset) => inner.write(src, offset),
    size: () => inner.size(),
    truncate: (n) => inner.truncate(n),
    flush: () => inner.flush(),
    close: async () => undefined,
    discard: (offset, length) => inner.discard(offset, length),
  };
}
