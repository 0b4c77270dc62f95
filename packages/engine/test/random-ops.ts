/** Deterministic pseudo-random qemu-io scripts for the differential tests. */

/** mulberry32: a small seeded PRNG, so a failing case can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface OpsOptions {
  seed: number;
  virtualSize: number;
  clusterSize: number;
  count: number;
  /** Include compressed writes (whole clusters). */
  compressed?: boolean;
  /** Include zero writes and discards. */
  zeroes?: boolean;
  /** Subcluster-sized writes (extended L2). */
  subclusters?: boolean;
}

/**
 * qemu-io commands: pattern writes at partial and unaligned offsets, zero writes (aligned and
 * not, with and without unmap), discards, compressed whole-cluster writes.
 */
export function randomOps(o: OpsOptions): string[] {
  const rand = prng(o.seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const cs = o.clusterSize;
  const clusters = Math.floor(o.virtualSize / cs);
  const ops: string[] = [];
  for (let i = 0; i < o.count; i++) {
    const pattern = 1 + int(254);
    const kind = int(10);
    if (kind < 4) {
      // Pattern write at a byte offset, up to ~3 clusters long.
      const offset = int(o.virtualSize - 1);
      const length = Math.max(1, Math.min(o.virtualSize - offset, 1 + int(3 * cs)));
      ops.push(`write -P ${pattern} ${offset} ${length}`);
    } else if (kind < 5 && o.subclusters === true) {
      const sc = cs / 32;
      const offset = int(o.virtualSize / sc) * sc;
      const length = Math.min(o.virtualSize - offset, sc * (1 + int(5)));
      ops.push(`write -P ${pattern} ${offset} ${length}`);
    } else if (kind < 7 && o.zeroes === true) {
      const aligned = rand() < 0.6;
      const offset = aligned ? int(clusters) * cs : int(o.virtualSize - 1);
      const length = Math.max(1, Math.min(o.virtualSize - offset, aligned ? cs * (1 + int(3)) : 1 + int(2 * cs)));
      ops.push(`write -z${rand() < 0.5 ? ' -u' : ''} ${offset} ${length}`);
    } else if (kind < 8 && o.zeroes === true) {
      const offset = int(clusters) * cs;
      const length = Math.min(o.virtualSize - offset, cs * (1 + int(3)));
      ops.push(`discard ${offset} ${length}`);
    } else if (kind < 9 && o.compressed === true && clusters > 0) {
      const offset = int(clusters) * cs;
      ops.push(`write -c -P ${pattern} ${offset} ${cs}`);
    } else {
      // Aligned whole-cluster write.
      const offset = int(clusters) * cs;
      const length = Math.min(o.virtualSize - offset, cs * (1 + int(4)));
      ops.push(`write -P ${pattern} ${offset} ${length}`);
    }
  }
  return ops;
}

/** qemu-io arguments running `ops` on `file` (one process). */
export function qemuIoArgs(file: string, ops: readonly string[], extra: string[] = []): string[] {
  return [...extra, ...ops.flatMap((op) => ['-c', op]), file];
}
