import { spawnSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isQcow2Error } from '@qcow2/format';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openFile } from './helpers.js';

/**
 * Damaged images in the style of qemu's iotest 080: for each, we must take the same decision
 * as `qemu-io -r -f qcow2 -c 'read 0 512'` (read-only, like this engine): open and read, or
 * refuse — with a Qcow2Error, quickly, without allocating what a size field claims.
 */

interface Poke {
  at: number;
  bytes: number[];
}

const be32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const be64 = (hi: number, lo: number): number[] => [...be32(hi), ...be32(lo)];

interface Case {
  name: string;
  base: 'plain' | 'simple' | 'compressed' | 'small';
  pokes?: Poke[];
  /** Applied after the pokes: bytes → bytes. */
  edit?: (bytes: Buffer) => Buffer;
  truncate?: number;
  /**
   * Where we knowingly decide otherwise than qemu, and why: the test then checks that we refuse
   * (CORRUPT) what qemu accepts, so that a change on either side shows.
   */
  knownDifference?: string;
}

/** Header field offsets. */
const H = {
  magic: 0,
  version: 4,
  backingOffset: 8,
  backingSize: 16,
  clusterBits: 20,
  size: 24,
  crypt: 32,
  l1Size: 36,
  l1Offset: 40,
  reftableOffset: 48,
  reftableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatible: 72,
  autoclear: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
};

/** Finds `magic` (a header extension type) in the header cluster; returns the offset of the extension. */
function extensionAt(bytes: Buffer, magic: number): number {
  const at = bytes.indexOf(Buffer.from(be32(magic)), 112);
  if (at < 0 || at > 65536) throw new Error(`no extension ${magic.toString(16)}`);
  return at;
}

const cases: Case[] = [
  { name: 'huge header length', base: 'plain', pokes: [{ at: H.headerLength, bytes: be32(0xffffffff) }] },
  { name: 'header length past the cluster', base: 'plain', pokes: [{ at: H.headerLength, bytes: be32(65536 + 8) }] },
  { name: 'header length below 104', base: 'plain', pokes: [{ at: H.headerLength, bytes: be32(96) }] },
  { name: 'header length not a multiple of 8', base: 'plain', pokes: [{ at: H.headerLength, bytes: be32(108) }] },
  { name: 'header length covering the extensions', base: 'plain', pokes: [{ at: H.headerLength, bytes: be32(4096) }] },
  {
    name: 'header length 4100, past the extensions',
    base: 'plain',
    pokes: [{ at: H.headerLength, bytes: be32(4100) }],
    knownDifference: '@qcow2/format refuses a header_length that is not a multiple of 8; qemu reads the extensions from any length',
  },
  { name: 'bad magic', base: 'plain', pokes: [{ at: H.magic, bytes: be32(0x514649fa) }] },
  { name: 'version 1', base: 'plain', pokes: [{ at: H.version, bytes: be32(1) }] },
  { name: 'version 4', base: 'plain', pokes: [{ at: H.version, bytes: be32(4) }] },
  { name: 'cluster_bits 8', base: 'plain', pokes: [{ at: H.clusterBits, bytes: be32(8) }] },
  { name: 'cluster_bits 22', base: 'plain', pokes: [{ at: H.clusterBits, bytes: be32(22) }] },
  { name: 'cluster_bits 2^31', base: 'plain', pokes: [{ at: H.clusterBits, bytes: be32(0x80000000) }] },
  { name: 'huge refcount table', base: 'plain', pokes: [{ at: H.reftableClusters, bytes: be32(0xffffff) }] },
  { name: 'no refcount table', base: 'plain', pokes: [{ at: H.reftableClusters, bytes: be32(0) }] },
  { name: 'misaligned refcount table', base: 'plain', pokes: [{ at: H.reftableOffset, bytes: be64(0, 0x12345) }] },
  { name: 'huge refcount table offset', base: 'plain', pokes: [{ at: H.reftableOffset, bytes: be64(0xffffffff, 0xfffa0000) }] },
  { name: 'refcount table past the end of the file', base: 'plain', pokes: [{ at: H.reftableOffset, bytes: be64(0x10, 0) }] },
  { name: 'huge snapshot count', base: 'plain', pokes: [{ at: H.nbSnapshots, bytes: be32(0xffffffff) }] },
  { name: '65537 snapshots', base: 'plain', pokes: [{ at: H.nbSnapshots, bytes: be32(65537) }] },
  { name: 'misaligned snapshot table', base: 'plain', pokes: [{ at: H.snapshotsOffset, bytes: be64(0, 0x12345) }] },
  { name: 'huge snapshot table offset', base: 'plain', pokes: [{ at: H.snapshotsOffset, bytes: be64(0xffffffff, 0xfffa0000) }] },
  { name: 'snapshot table past the end of the file', base: 'plain', pokes: [{ at: H.snapshotsOffset, bytes: be64(0x10, 0) }] },
  { name: 'more snapshots than the table holds', base: 'plain', pokes: [{ at: H.nbSnapshots, bytes: be32(3) }] },
  { name: 'huge L1 table', base: 'plain', pokes: [{ at: H.l1Size, bytes: be32(0x7fffffff) }] },
  { name: 'L1 table at the 32 MiB limit, past the end of the file', base: 'plain', pokes: [{ at: H.l1Size, bytes: be32(0x400000) }, { at: H.l1Offset, bytes: be64(0x1, 0) }] },
  { name: 'L1 table too small for the size', base: 'plain', pokes: [{ at: H.l1Size, bytes: be32(0) }] },
  { name: 'misaligned L1 table', base: 'plain', pokes: [{ at: H.l1Offset, bytes: be64(0, 0x30200) }] },
  { name: 'huge L1 table offset', base: 'plain', pokes: [{ at: H.l1Offset, bytes: be64(0xffffffff, 0xfffa0000) }] },
  { name: 'L1 table past the end of the file', base: 'plain', pokes: [{ at: H.l1Offset, bytes: be64(0x10, 0) }] },
  { name: 'huge virtual size', base: 'plain', pokes: [{ at: H.size, bytes: be64(0x1000000, 0) }] },
  { name: 'virtual size above 2^63', base: 'plain', pokes: [{ at: H.size, bytes: be64(0x80000000, 0) }] },
  { name: 'backing file name too long', base: 'plain', pokes: [{ at: H.backingOffset, bytes: be64(0, 0x1000) }, { at: H.backingSize, bytes: be32(1024) }] },
  { name: 'backing file name past the cluster', base: 'plain', pokes: [{ at: H.backingOffset, bytes: be64(0, 0xff00) }, { at: H.backingSize, bytes: be32(0x200) }] },
  { name: 'backing file offset past the cluster', base: 'plain', pokes: [{ at: H.backingOffset, bytes: be64(0, 0x10008) }, { at: H.backingSize, bytes: be32(4) }] },
  { name: 'unknown incompatible feature bit', base: 'plain', pokes: [{ at: H.incompatible + 7, bytes: [0x20] }] },
  { name: 'incompatible bit 63', base: 'plain', pokes: [{ at: H.incompatible, bytes: [0x80] }] },
  { name: 'dirty bit', base: 'plain', pokes: [{ at: H.incompatible + 7, bytes: [0x01] }] },
  { name: 'corrupt bit', base: 'plain', pokes: [{ at: H.incompatible + 7, bytes: [0x02] }] },
  { name: 'external data file bit without a data file name', base: 'plain', pokes: [{ at: H.incompatible + 7, bytes: [0x04] }] },
  { name: 'raw data file bit without a data file', base: 'plain', pokes: [{ at: H.autoclear + 7, bytes: [0x02] }] },
  { name: 'extended L2 with 4 KiB clusters', base: 'small', pokes: [{ at: H.incompatible + 7, bytes: [0x10] }] },
  { name: 'AES encryption', base: 'plain', pokes: [{ at: H.crypt, bytes: be32(1) }] },
  { name: 'unknown encryption method', base: 'plain', pokes: [{ at: H.crypt, bytes: be32(3) }] },
  { name: 'refcount order 7', base: 'plain', pokes: [{ at: H.refcountOrder, bytes: be32(7) }] },
  { name: 'unknown compression type', base: 'plain', pokes: [{ at: H.compressionType, bytes: [2] }, { at: H.incompatible + 7, bytes: [0x08] }] },
  { name: 'zstd without its feature bit', base: 'plain', pokes: [{ at: H.compressionType, bytes: [1] }] },
  { name: 'compression bit with zlib', base: 'plain', pokes: [{ at: H.incompatible + 7, bytes: [0x08] }] },
  {
    name: 'header extension past the cluster',
    base: 'plain',
    edit: (b) => {
      const at = extensionAt(b, 0x6803f857);
      b.writeUInt32BE(0x10000, at + 4);
      return b;
    },
  },
  {
    name: 'backing format name of 16 bytes',
    base: 'plain',
    edit: (b) => {
      b.writeUInt32BE(0xe2792aca, 112);
      b.writeUInt32BE(16, 116);
      return b;
    },
  },
  {
    name: 'unknown incompatible bit named in the feature table',
    base: 'plain',
    edit: (b) => {
      // Rename the table's "corrupt bit" entry to describe bit 9, and set bit 9.
      const at = b.indexOf(Buffer.from('corrupt bit'));
      b[at - 1] = 9;
      b[H.incompatible + 6] = 0x02;
      return b;
    },
  },
  {
    name: 'bitmap directory with reserved flags',
    base: 'plain',
    edit: (b) => {
      const ext = extensionAt(b, 0x23852875);
      const dir = Number(b.readBigUInt64BE(ext + 8 + 16));
      b.writeUInt32BE(0x100, dir + 12);
      return b;
    },
  },
  {
    name: 'bitmaps extension with zero bitmaps',
    base: 'plain',
    edit: (b) => {
      const ext = extensionAt(b, 0x23852875);
      b.writeUInt32BE(0, ext + 8);
      return b;
    },
  },
  {
    name: 'snapshot with too much extra data',
    base: 'plain',
    edit: (b) => {
      const table = Number(b.readBigUInt64BE(H.snapshotsOffset));
      b.writeUInt32BE(1025, table + 36);
      return b;
    },
  },
  {
    name: 'snapshot with a misaligned L1 table (checked only when the snapshot is used)',
    base: 'plain',
    edit: (b) => {
      const table = Number(b.readBigUInt64BE(H.snapshotsOffset));
      b.writeUInt32BE(0x40200, table + 4);
      return b;
    },
  },
  {
    name: 'snapshot with a huge L1 table',
    base: 'plain',
    edit: (b) => {
      const table = Number(b.readBigUInt64BE(H.snapshotsOffset));
      b.writeUInt32BE(0x7fffffff, table + 8);
      return b;
    },
  },
  {
    name: 'snapshot with huge id and name sizes',
    base: 'plain',
    edit: (b) => {
      const table = Number(b.readBigUInt64BE(H.snapshotsOffset));
      b.writeUInt16BE(0xffff, table + 12);
      b.writeUInt16BE(0xffff, table + 14);
      return b;
    },
  },
  {
    name: 'misaligned L2 table offset in the L1 table',
    base: 'plain',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      b.writeUInt32BE(b.readUInt32BE(l1 + 4) + 0x200, l1 + 4);
      return b;
    },
  },
  {
    name: 'misaligned data cluster offset in the L2 table',
    base: 'plain',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00ffffffffffffn & ~0x1ffn);
      b.writeUInt32BE(b.readUInt32BE(l2 + 4) + 0x200, l2 + 4);
      return b;
    },
  },
  {
    name: 'reserved bits in L1 and L2 entries',
    base: 'plain',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00ffffffffffffn & ~0x1ffn);
      b.writeUInt8(b.readUInt8(l1) | 0x01, l1);
      b.writeUInt8(b.readUInt8(l2 + 7) | 0x02, l2 + 7);
      return b;
    },
  },
  {
    name: 'data cluster past the end of the file',
    base: 'plain',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00ffffffffffffn & ~0x1ffn);
      b.writeUInt32BE(0x10, l2 + 2);
      return b;
    },
  },
  {
    name: 'corrupt deflate stream',
    base: 'compressed',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00ffffffffffffn & ~0x1ffn);
      const data = Number(b.readBigUInt64BE(l2) & ((1n << 54n) - 1n));
      b.fill(0xff, data, data + 64);
      return b;
    },
  },
  {
    name: 'compressed cluster descriptor past the end of the file',
    base: 'compressed',
    edit: (b) => {
      const l1 = Number(b.readBigUInt64BE(H.l1Offset));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00ffffffffffffn & ~0x1ffn);
      b.writeUInt32BE(0x10, l2 + 4);
      return b;
    },
  },
  ...[0, 3, 50, 104, 112, 4096, 65536, 0x30000, 0x30004, 0x40000, 0x40010, 0x50000, 0x50000 + 256].map(
    (size): Case => ({ name: `truncated to ${size} bytes`, base: 'simple', truncate: size }),
  ),
  { name: 'image with bitmaps truncated before its bitmap directory', base: 'plain', truncate: 0x60000 },
  { name: 'compressed image truncated after its stream', base: 'compressed', truncate: 0x50000 + 700 },
  {
    name: 'compressed image truncated inside its stream',
    base: 'compressed',
    truncate: 0x50000 + 20,
    knownDifference:
      'the zeros read past the end of the file continue the deflate stream past the end of the cluster: ' +
      'qemu keeps the first cluster of output (inflate Z_BUF_ERROR with a full buffer), @qcow2/compress refuses a stream that overruns the cluster',
  },
];

describeWithQemu('malformed images: the same decision as qemu-io, a Qcow2Error, no hang', () => {
  const tmp = makeTempDir('qcow2-engine-malformed-');
  const bases: Record<Case['base'], Buffer> = {} as never;
  beforeAll(() => {
    const plain = join(tmp.dir, 'plain.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', plain, '64M']);
    qemuIo(['-c', 'write -P 0x11 0 64k', plain]);
    qemuImg(['bitmap', '--add', plain, 'b0']);
    qemuImg(['snapshot', '-c', 's1', plain]);
    bases.plain = readFileSync(plain);
    const simple = join(tmp.dir, 'simple.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', simple, '64M']);
    qemuIo(['-c', 'write -P 0x33 0 64k', '-c', 'write -P 0x34 1M 64k', simple]);
    bases.simple = readFileSync(simple);
    const compressed = join(tmp.dir, 'compressed.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', compressed, '64M']);
    qemuIo(['-c', 'write -c -P 0x22 0 64k', compressed]);
    bases.compressed = readFileSync(compressed);
    const small = join(tmp.dir, 'small.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', small, '1M']);
    bases.small = readFileSync(small);
  });
  afterAll(() => tmp.cleanup());

  it.each(cases)('$name', async (c) => {
    const file = join(tmp.dir, `${c.name.replace(/[^a-z0-9]+/gi, '-')}.qcow2`);
    let bytes: Buffer = Buffer.from(bases[c.base]);
    for (const poke of c.pokes ?? []) Buffer.from(poke.bytes).copy(bytes, poke.at);
    if (c.edit !== undefined) bytes = c.edit(bytes);
    writeFileSync(file, bytes);
    if (c.truncate !== undefined) truncateSync(file, c.truncate);

    const qemu = spawnSync('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read 0 512', file], { encoding: 'utf8', timeout: 20_000 });
    const qemuAccepts = qemu.status === 0 && /read 512\/512 bytes/.test(qemu.stdout);

    const started = performance.now();
    let ours: unknown;
    try {
      const image = await openFile(file, { format: 'qcow2' });
      try {
        await image.read(new Uint8Array(512), 0);
      } finally {
        await image.close();
      }
    } catch (error) {
      ours = error;
    }
    const elapsed = performance.now() - started;
    if (ours !== undefined && !isQcow2Error(ours)) throw ours;
    const qemuSays = qemuAccepts ? 'accepts' : `refuses (${(qemu.stderr || qemu.stdout).trim().split('\n')[0]})`;
    const weSay = ours === undefined ? 'accepts' : `refuses (${(ours as Error).message})`;
    if (c.knownDifference !== undefined) {
      expect(qemuAccepts, c.knownDifference).toBe(true);
      expect(ours, c.knownDifference).toMatchObject({ code: 'CORRUPT' });
    } else {
      expect(weSay.startsWith('accepts'), `qemu ${qemuSays}; we ${weSay}`).toBe(qemuAccepts);
    }
    expect(elapsed).toBeLessThan(2000);
  });

  it('strict mode refuses what qemu reads past: reserved bits, clusters past the end of the file', async () => {
    for (const name of ['reserved bits in L1 and L2 entries', 'data cluster past the end of the file', 'truncated to 262144 bytes']) {
      const file = join(tmp.dir, `${name.replace(/[^a-z0-9]+/gi, '-')}.qcow2`);
      const image = await openFile(file, { strict: true });
      await expect(image.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'CORRUPT' });
      await image.close();
    }
    for (const [name, message] of [
      ['L1 table past the end of the file', /L1 table at 0x1000000000 \(8 bytes\) runs past the end of the file/],
      ['refcount table past the end of the file', /refcount table at 0x1000000000 .* runs past the end of the file/],
      ['snapshot table past the end of the file', /snapshot table at 0x1000000000 .* runs past the end of the file/],
      ['truncated to 196608 bytes', /L1 table at 0x30000 \(8 bytes\) runs past the end of the file/],
    ] as const) {
      const file = join(tmp.dir, `${name.replace(/[^a-z0-9]+/gi, '-')}.qcow2`);
      const error = await openFile(file, { strict: true }).catch((e: unknown) => e);
      expect(error, name).toMatchObject({ code: 'CORRUPT' });
      expect((error as Error).message).toMatch(message);
      // Not strict: read as qemu reads it.
      const image = await openFile(file);
      await image.close();
    }
    const plain = join(tmp.dir, 'plain.qcow2');
    const header = readFileSync(plain);
    header.writeBigUInt64BE(0n, H.l1Offset);
    writeFileSync(join(tmp.dir, 'l1-over-header.qcow2'), header);
    await expect(openFile(join(tmp.dir, 'l1-over-header.qcow2'), { strict: true })).rejects.toThrow(/L1 table at 0x0 overlaps the header cluster/);
  });

  it('a snapshot with a bad L1 table is refused when opened, as qemu-img convert -l refuses it', async () => {
    const file = join(tmp.dir, 'snapshot-with-a-misaligned-L1-table-checked-only-when-the-snapshot-is-used-.qcow2');
    const convert = spawnSync('qemu-img', ['convert', '-l', 'snapshot.name=s1', '-O', 'raw', file, join(tmp.dir, 'x.raw')], { encoding: 'utf8' });
    expect(convert.status).not.toBe(0);
    const image = await openFile(file);
    const error = await image.openSnapshot('s1').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CORRUPT' });
    expect((error as Error).message).toMatch(/snapshot "1" L1 table: offset 0x40200 is invalid/);
    await image.close();
  });

  it('names unknown incompatible features from the image feature table, as qemu does', async () => {
    const file = join(tmp.dir, 'unknown-incompatible-bit-named-in-the-feature-table.qcow2');
    const qemu = spawnSync('qemu-io', ['-r', '-c', 'read 0 512', file], { encoding: 'utf8' });
    expect(qemu.stderr).toMatch(/Unsupported qcow2 feature\(s\): corrupt bit/);
    const error = await openFile(file).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'UNSUPPORTED' });
    expect((error as Error).message).toMatch(/Unsupported qcow2 feature\(s\): corrupt bit/);
    const plain = await openFile(join(tmp.dir, 'AES-encryption.qcow2')).catch((e: unknown) => e);
    expect(plain).toMatchObject({ code: 'UNSUPPORTED' });
    expect((plain as Error).message).toMatch(/encrypted images are not supported/);
  });
});
