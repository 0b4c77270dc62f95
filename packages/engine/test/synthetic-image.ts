import { getCodec } from '@qcow2/compress';
import {
  compressedAdditionalSectorsFor,
  encodeHeaderCluster,
  encodeL1Entry,
  encodeL2Entry,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTENDED_L2,
  QEMU_FEATURE_NAME_TABLE,
  viewOf,
  type L2Entry,
} from '@qcow2/format';

/**
 * What one guest cluster of a synthetic image holds. The builder writes a qcow2 file with this
 * package's sibling encoders (not with the engine), and the model is the guest content the
 * spec says it has, so the engine can be checked without qemu.
 */
export type ClusterSpec =
  | { kind: 'unallocated' }
  | { kind: 'zero' }
  /** ZERO flag with a preallocated host cluster full of junk: reads as zeros all the same. */
  | { kind: 'zero-alloc' }
  | { kind: 'data'; seed: number }
  | { kind: 'compressed'; seed: number }
  /** Extended L2: per subcluster 0 unallocated, 1 zero, 2 data. */
  | { kind: 'subclusters'; seed: number; states: number[] };

export interface SyntheticImage {
  bytes: Uint8Array;
  /** The guest content (zeros where nothing is allocated: there is no backing file). */
  model: Uint8Array;
  virtualSize: number;
}

/** Deterministic bytes that compress (runs and repeats) or not, from a seed. */
function content(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  const compressible = seed % 2 === 0;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = compressible ? ((i >> 6) + (x & 3)) & 0xff : x & 0xff;
  }
  return out;
}

/**
 * Builds a v3 qcow2 image: header cluster, an empty refcount table (the engine does not read
 * refcounts), the L1 table, L2 tables, then data clusters in `hostOrder` (a permutation of the
 * allocated clusters: shuffled means not contiguous), then compressed streams packed at byte
 * offsets as qemu packs them.
 */
export async function buildImage(options: {
  clusterBits: number;
  extendedL2?: boolean;
  compressionType?: 0 | 1;
  clusters: ClusterSpec[];
  /** Virtual size; default: all clusters. May end inside the last cluster (a multiple of 512). */
  virtualSize?: number;
  /** Order in which allocated clusters are laid out in the file (indices into the allocated ones). */
  shuffle?: number;
}): Promise<SyntheticImage> {
  const cb = options.clusterBits;
  const cs = 2 ** cb;
  const extended = options.extendedL2 === true;
  const compressionType = options.compressionType ?? 0;
  const n = options.clusters.length;
  const virtualSize = options.virtualSize ?? n * cs;
  const entriesPerL2 = cs / (extended ? 16 : 8);
  const l1Size = Math.max(1, Math.ceil(n / entriesPerL2));
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  let next = 2 + l1Clusters; // header, refcount table, L1
  const l2Offsets: number[] = [];
  for (let i = 0; i < l1Size; i++) l2Offsets.push((next++) * cs);

  // Host clusters for the allocated guest clusters, in a shuffled order.
  const allocated = options.clusters.map((c, i) => [c, i] as const).filter(([c]) => c.kind === 'data' || c.kind === 'zero-alloc' || c.kind === 'subclusters');
  const order = allocated.map((_, i) => i);
  let s = options.shuffle ?? 0;
  for (let i = order.length - 1; i > 0 && s !== 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const hostOf = new Map<number, number>();
  order.forEach((k, position) => hostOf.set(allocated[k]![1], (next + position) * cs));
  next += order.length;

  const model = new Uint8Array(virtualSize);
  const chunks: [number, Uint8Array][] = [];
  let compressedAt = next * cs + 7; // any byte alignment
  const codec = getCodec(compressionType);
  const entries: L2Entry[] = [];
  for (let i = 0; i < n; i++) {
    const c = options.clusters[i]!;
    const guest = i * cs;
    const inModel = Math.max(0, Math.min(cs, virtualSize - guest));
    switch (c.kind) {
      case 'unallocated':
        entries.push(extended ? { kind: 'unallocated', subclusters: { allocated: 0, zero: 0 } } : { kind: 'unallocated' });
        break;
      case 'zero':
        entries.push(extended ? { kind: 'unallocated', subclusters: { allocated: 0, zero: 0xffff_ffff } } : { kind: 'zero', offset: 0, copied: false });
        break;
      case 'zero-alloc': {
        const host = hostOf.get(i)!;
        chunks.push([host, new Uint8Array(cs).fill(0xee)]);
        entries.push(
          extended
            ? { kind: 'normal', offset: host, copied: true, subclusters: { allocated: 0, zero: 0xffff_ffff } }
            : { kind: 'zero', offset: host, copied: true },
        );
        break;
      }
      case 'data': {
        const host = hostOf.get(i)!;
        const bytes = content(c.seed, cs);
        chunks.push([host, bytes]);
        model.set(bytes.subarray(0, inModel), guest);
        entries.push(extended ? { kind: 'normal', offset: host, copied: true, subclusters: { allocated: 0xffff_ffff, zero: 0 } } : { kind: 'normal', offset: host, copied: true });
        break;
      }
      case 'subclusters': {
        const host = hostOf.get(i)!;
        const bytes = content(c.seed, cs);
        const junk = new Uint8Array(cs).fill(0xdd);
        let allocatedBits = 0;
        let zeroBits = 0;
        const sc = cs / 32;
        for (let k = 0; k < 32; k++) {
          const state = c.states[k] ?? 0;
          if (state === 2) {
            allocatedBits |= 1 << k;
            junk.set(bytes.subarray(k * sc, (k + 1) * sc), k * sc);
            const from = guest + k * sc;
            const len = Math.max(0, Math.min(sc, virtualSize - from));
            if (len > 0) model.set(bytes.subarray(k * sc, k * sc + len), from);
          } else if (state === 1) {
            zeroBits |= 1 << k;
          }
        }
        chunks.push([host, junk]);
        entries.push({ kind: 'normal', offset: host, copied: true, subclusters: { allocated: allocatedBits >>> 0, zero: zeroBits >>> 0 } });
        break;
      }
      case 'compressed': {
        const bytes = content(c.seed, cs);
        const stream = await codec.compress(bytes);
        if (stream === null) {
          // Incompressible: store it as data at the end of the compressed area instead.
          const host = Math.ceil(compressedAt / cs) * cs;
          compressedAt = host + cs;
          chunks.push([host, bytes]);
          entries.push(extended ? { kind: 'normal', offset: host, copied: true, subclusters: { allocated: 0xffff_ffff, zero: 0 } } : { kind: 'normal', offset: host, copied: true });
        } else {
          chunks.push([compressedAt, stream]);
          entries.push({ kind: 'compressed', offset: compressedAt, additionalSectors: compressedAdditionalSectorsFor(compressedAt, stream.length) });
          compressedAt += stream.length;
        }
        model.set(bytes.subarray(0, inModel), guest);
        break;
      }
    }
  }

  const end = Math.max(compressedAt, next * cs);
  const bytes = new Uint8Array(end);
  const header = encodeHeaderCluster({
    header: {
      version: 3,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits: cb,
      size: virtualSize,
      cryptMethod: 0,
      l1Size,
      l1TableOffset: 2 * cs,
      refcountTableOffset: cs,
      refcountTableClusters: 1,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: (extended ? INCOMPAT_EXTENDED_L2 : 0n) | (compressionType === 1 ? INCOMPAT_COMPRESSION : 0n),
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: 4,
      headerLength: 112,
      compressionType,
      trailingBytes: new Uint8Array(7),
    },
    extensions: cs >= 4096 ? [{ kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE] }] : [],
  });
  bytes.set(header);
  const l1 = viewOf(bytes.subarray(2 * cs, 2 * cs + l1Clusters * cs));
  for (let t = 0; t < l1Size; t++) {
    const first = t * entriesPerL2;
    if (first >= n) break;
    encodeL1Entry(l1, t, { l2Offset: l2Offsets[t]!, copied: true });
    const view = viewOf(bytes.subarray(l2Offsets[t]!, l2Offsets[t]! + cs));
    for (let j = 0; j < entriesPerL2 && first + j < n; j++) {
      encodeL2Entry(view, j, entries[first + j]!, { clusterBits: cb, extended });
    }
  }
  for (const [at, chunk] of chunks) bytes.set(chunk, at);
  return { bytes, model, virtualSize };
}
