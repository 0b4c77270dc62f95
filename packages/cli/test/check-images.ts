import { spawnSync } from 'node:child_process';
import { statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { be16, poke, type Layout } from './check-oracle.js';

/** Images made by qemu-img/qemu-io, each built once per test file, on first use. */
export function imageFactory(): { dir: () => string; image: (name: keyof typeof RECIPES) => () => string; cleanup: () => void } {
  let tmp: { dir: string; cleanup: () => void } | undefined;
  const dir = (): string => (tmp ??= makeTempDir('qcow2-check-')).dir;
  const built = new Map<string, string>();
  return {
    dir,
    image: (name) => () => {
      let file = built.get(name);
      if (file === undefined) {
        file = join(dir(), `${name}.qcow2`);
        RECIPES[name](file);
        built.set(name, file);
      }
      return file;
    },
    cleanup: () => tmp?.cleanup(),
  };
}

const create = (file: string, size: string, options: string[] = []): void => {
  qemuImg(['create', '-q', '-f', 'qcow2', ...(options.length > 0 ? ['-o', options.join(',')] : []), file, size]);
};
const io = (file: string, ...commands: string[]): void => {
  qemuIo(commands.flatMap((c) => ['-c', c]).concat(file));
};

const RECIPES = {
  /** 64 MiB, 64 KiB clusters: 1 MiB of data, a compressed cluster, a zero cluster. */
  std: (f: string) => {
    create(f, '64M');
    io(f, 'write -P 1 0 1M', 'write -c -P 2 2M 64k', 'write -z 4M 64k');
  },
  /** Two internal snapshots with a copy-on-write in between (shared clusters, refcount 2 and 3). */
  snap: (f: string) => {
    create(f, '32M');
    io(f, 'write -P 1 0 256k');
    qemuImg(['snapshot', '-c', 's1', f]);
    io(f, 'write -P 5 64k 64k');
    qemuImg(['snapshot', '-c', 's2', f]);
  },
  /** preallocation=metadata: every cluster allocated, zero flag set. */
  prealloc: (f: string) => create(f, '1M', ['preallocation=metadata']),
  /** Extended L2 entries: subclusters, a zero subcluster, a compressed cluster. */
  ext: (f: string) => {
    create(f, '16M', ['extended_l2=on']);
    io(f, 'write -P 1 0 4k', 'write -P 2 64k 64k', 'write -z 128k 4k', 'write -c -P 3 256k 64k');
  },
  /** 1-bit refcounts, 4 KiB clusters. */
  rc1: (f: string) => {
    create(f, '4M', ['cluster_size=4k', 'refcount_bits=1']);
    io(f, 'write -P 1 0 64k');
  },
  /** 512-byte clusters. */
  c512: (f: string) => {
    create(f, '4M', ['cluster_size=512']);
    io(f, 'write -P 1 0 64k', 'write -P 2 1M 4k');
  },
  /** compat=0.10 (no feature bits, 16-bit refcounts). */
  v2: (f: string) => {
    create(f, '8M', ['compat=0.10']);
    io(f, 'write -P 1 0 192k');
  },
  /** lazy_refcounts=on, killed after a write: dirty bit set, refcounts not written. */
  lazy: (f: string) => {
    create(f, '8M', ['lazy_refcounts=on']);
    spawnSync('qemu-io', ['-c', 'write -P 3 0 128k', '-c', 'sigraise 9', f]);
  },
  /** A persistent dirty bitmap with data (qemu-io stores it when it closes). */
  bitmap: (f: string) => {
    create(f, '8M');
    qemuImg(['bitmap', '--add', f, 'b0']);
    io(f, 'write -P 1 0 1M');
  },
} as const;

/** Sets the 16-bit refcount of `cluster` in the first refcount block. */
export function setRefcount(file: string, layout: Layout, cluster: number, value: number): void {
  if (layout.refcountBits !== 16) throw new Error('setRefcount: 16-bit refcounts only');
  poke(file, layout.refblock0 + cluster * 2, be16(value));
}

/** The host cluster of data entry `j` of the first L2 table. */
export function dataCluster(layout: Layout, j = 0): number {
  return Number(layout.l2Entry(layout.l2Offset(0), j) & 0x00ff_ffff_ffff_fe00n) / layout.clusterSize;
}

/** Grows the file by one cluster and gives that cluster refcount 1: a leak. */
export function appendLeakedCluster(file: string, layout: Layout): void {
  const n = Math.ceil(statSync(file).size / layout.clusterSize);
  truncateSync(file, (n + 1) * layout.clusterSize);
  setRefcount(file, layout, n, 1);
}
