import {
  l2SubclusterType,
  SUBCLUSTER_COMPRESSED,
  SUBCLUSTER_NORMAL,
  SUBCLUSTER_UNALLOCATED_ALLOC,
  SUBCLUSTER_UNALLOCATED_PLAIN,
  SUBCLUSTER_ZERO_ALLOC,
  SUBCLUSTER_ZERO_PLAIN,
  type SubclusterType,
} from '@qcow2/format';

/** The L2 entries of consecutive clusters: four 32-bit words each (hi, lo, bitmap hi, bitmap lo). */
export type EntryWords = Uint32Array;

export interface CowGeometry {
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  readonly externalDataFile: boolean;
}

/**
 * What an allocating write must copy (qemu's QCowL2Meta from calculate_l2_meta): the bytes of
 * the new host range `[from, to)` — offsets from the start of the first cluster — that are not
 * written by the request are filled from what the guest sees there now. `skip` (only when the
 * clusters are kept) means every written subcluster is already allocated: write in place, change
 * no entry.
 */
export interface CowBounds {
  skip: boolean;
  from: number;
  to: number;
}

const SUBCLUSTERS = 32;

function trailingZeros(x: number): number {
  return x === 0 ? 32 : 31 - Math.clz32(x & -x);
}

function typeOf(words: EntryWords, i: number, sc: number, g: CowGeometry): SubclusterType {
  return l2SubclusterType(words[i * 4]!, words[i * 4 + 1]!, words[i * 4 + 2]!, words[i * 4 + 3]!, sc, g.extendedL2, g.externalDataFile);
}

/**
 * 2^bits without Math.pow: `2 ** bits` with a run-time exponent is a call into the C library's
 * pow on every write (a visible share of the allocating-write path's main-thread time).
 */
function pow2(bits: number): number {
  return bits < 31 ? 1 << bits : 2 ** bits;
}

function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}

/**
 * The copy-on-write bounds of a write of `bytes` bytes at `inCluster` into the first of `count`
 * clusters whose entries are `words` (qemu's calculate_l2_meta). `keepOld`: the clusters are
 * kept (COPIED), so only unallocated or zero subclusters around the write are filled; otherwise
 * new clusters are allocated and filled from the first allocated subcluster (or the written
 * subcluster, for unallocated and zero clusters) to the last.
 */
export function cowBounds(words: EntryWords, count: number, inCluster: number, bytes: number, keepOld: boolean, g: CowGeometry): CowBounds {
  const cs = pow2(g.clusterBits);
  const scs = g.extendedL2 ? cs / SUBCLUSTERS : cs;
  const writeStart = inCluster;
  const writeEnd = inCluster + bytes;

  if (keepOld) {
    let skip = true;
    for (let i = 0; i < count && skip; i++) {
      const from = Math.max(writeStart, i * cs) - i * cs;
      const to = Math.min(writeEnd, (i + 1) * cs) - i * cs;
      const firstSc = Math.floor(from / scs);
      const lastSc = Math.floor((to - 1) / scs);
      for (let sc = firstSc; sc <= lastSc; sc++) {
        if (typeOf(words, i, sc, g) !== SUBCLUSTER_NORMAL) {
          skip = false;
          break;
        }
      }
    }
    if (skip) return { skip: true, from: writeStart, to: writeEnd };
  }

  // The first cluster.
  const firstSc = Math.floor(writeStart / scs);
  const firstType = typeOf(words, 0, firstSc, g);
  let from: number;
  if (!keepOld) {
    switch (firstType) {
      case SUBCLUSTER_COMPRESSED:
        from = 0;
        break;
      case SUBCLUSTER_NORMAL:
      case SUBCLUSTER_ZERO_ALLOC:
      case SUBCLUSTER_UNALLOCATED_ALLOC:
        // Leading zero and unallocated subclusters stay as they are.
        from = g.extendedL2 ? Math.min(firstSc, trailingZeros(words[3]!)) * scs : 0;
        break;
      default:
        from = firstSc * scs;
    }
  } else {
    from = firstType === SUBCLUSTER_NORMAL ? writeStart : firstSc * scs;
  }

  // The last cluster.
  const lastIndex = count - 1;
  const lastInCluster = writeEnd - 1 - lastIndex * cs;
  const lastSc = Math.floor(lastInCluster / scs);
  const lastType = typeOf(words, lastIndex, lastSc, g);
  let to: number;
  if (!keepOld) {
    switch (lastType) {
      case SUBCLUSTER_COMPRESSED:
        to = roundUp(writeEnd, cs);
        break;
      case SUBCLUSTER_NORMAL:
      case SUBCLUSTER_ZERO_ALLOC:
      case SUBCLUSTER_UNALLOCATED_ALLOC: {
        to = roundUp(writeEnd, cs);
        if (g.extendedL2) {
          // Trailing zero and unallocated subclusters stay as they are.
          const allocated = words[lastIndex * 4 + 3]!;
          to -= Math.min(SUBCLUSTERS - lastSc - 1, Math.clz32(allocated)) * scs;
        }
        break;
      }
      case SUBCLUSTER_ZERO_PLAIN:
      case SUBCLUSTER_UNALLOCATED_PLAIN:
      default:
        to = roundUp(writeEnd, scs);
    }
  } else {
    to = lastType === SUBCLUSTER_NORMAL ? writeEnd : roundUp(writeEnd, scs);
  }
  return { skip: false, from, to };
}

/**
 * The subcluster bitmap of cluster `i` of a write once `[from, to)` (offsets from the first
 * cluster) is written: those subclusters allocated, their zero bits cleared (qemu's
 * qcow2_alloc_cluster_link_l2). Returns [bitmap hi (zero bits), bitmap lo (allocation bits)].
 */
export function writtenBitmap(bitmapHi: number, bitmapLo: number, i: number, from: number, to: number, clusterBits: number): [number, number] {
  const cs = pow2(clusterBits);
  const scs = cs / SUBCLUSTERS;
  const start = Math.max(from, i * cs) - i * cs;
  const end = Math.min(to, (i + 1) * cs) - i * cs;
  const range = subclusterRange(Math.floor(start / scs), Math.floor((end - 1) / scs) + 1);
  return [(bitmapHi & ~range) >>> 0, (bitmapLo | range) >>> 0];
}

/** Bits `first..end-1` set (0 ≤ first < end ≤ 32). */
export function subclusterRange(first: number, end: number): number {
  const upper = end >= 32 ? 0xffff_ffff : (1 << end) - 1;
  const lower = first <= 0 ? 0 : (1 << first) - 1;
  return (upper & ~lower) >>> 0;
}
