import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { isQcow2Error, type Qcow2Error } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    fdatasyncSync: vi.fn(real.fdatasyncSync),
    fsyncSync: vi.fn(real.fsyncSync),
    readvSync: vi.fn(real.readvSync),
  };
});

const tmp = makeTempDir('qcow2-node-storage-');
afterAll(() => tmp.cleanup());
let counter = 0;
const freshPath = (): string => join(tmp.dir, `f-${counter++}.bin`);

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

describe('createNodeStorage: opening', () => {
  it("a missing file rejects 'NOT_FOUND', naming the operation and the path, with the node error as cause", async () => {
    const path = join(tmp.dir, 'missing.bin');
    const e = await rejection(createNodeStorage(path));
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain(`open ${path} failed`);
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(fs.existsSync(path)).toBe(false);
  });

  it("other node:fs errors become 'IO' (a path through a regular file: ENOTDIR)", async () => {
    const file = freshPath();
    fs.writeFileSync(file, 'x');
    const e = await rejection(createNodeStorage(join(file, 'inner.bin'), { create: true }));
    expect(e.code).toBe('IO');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOTDIR');
    expect(e.message).toContain(join(file, 'inner.bin'));
  });

  it("a directory rejects 'IO'", async () => {
    const e = await rejection(createNodeStorage(tmp.dir, { readOnly: true }));
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/is a directory/);
  });

  it('create makes a missing file, keeps an existing one; truncate empties it', async () => {
    const path = freshPath();
    const a = await createNodeStorage(path, { create: true });
    await a.write(Uint8Array.of(1, 2, 3), 0);
    await a.close();
    const b = await createNodeStorage(path, { create: true });
    expect(await b.size()).toBe(3);
    await b.close();
    const c = await createNodeStorage(path, { truncate: true });
    expect(await c.size()).toBe(0);
    await c.close();
    expect(fs.statSync(path).size).toBe(0);
  });

  it("refuses readOnly with create or truncate, and a non-path, with 'INVALID_ARGUMENT'", async () => {
    expect((await rejection(createNodeStorage(freshPath(), { readOnly: true, create: true }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createNodeStorage(freshPath(), { readOnly: true, truncate: true }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createNodeStorage(''))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createNodeStorage('a\0b'))).code).toBe('INVALID_ARGUMENT');
  });

  it('exposes the absolute path, and what it writes is what other readers see', async () => {
    const path = freshPath();
    const s = await createNodeStorage(path, { create: true });
    expect(s.path).toBe(path);
    expect(s.canDiscard).toBe(false);
    await s.write(Uint8Array.of(9, 8, 7), 2);
    expect([...fs.readFileSync(path)]).toEqual([0, 0, 9, 8, 7]);
    fs.writeFileSync(path, Uint8Array.of(5, 5, 5, 5, 5, 5, 5));
    const dst = new Uint8Array(10);
    expect(await s.read(dst, 0)).toBe(7);
    expect(await s.size()).toBe(7);
    await s.close();
  });

  it("write and truncate of a read-only file reject 'READ_ONLY' with the path", async () => {
    const path = freshPath();
    fs.writeFileSync(path, Uint8Array.of(1, 2));
    const s = await createNodeStorage(path, { readOnly: true });
    const e = await rejection(s.write(Uint8Array.of(3), 0));
    expect(e.code).toBe('READ_ONLY');
    expect(e.message).toBe(`node storage ${path}: write: the storage is read-only`);
    expect((await rejection(s.truncate(0))).code).toBe('READ_ONLY');
    await s.close();
  });
});

describe('createNodeStorage: flush', () => {
  const fdatasync = vi.mocked(fs.fdatasyncSync);
  const fsync = vi.mocked(fs.fsyncSync);
  beforeEach(() => {
    fdatasync.mockClear();
    fsync.mockClear();
  });

  it('flush is fdatasync, and the first flush of a created file also fsyncs its directory', async () => {
    const s = await createNodeStorage(freshPath(), { create: true });
    await s.write(Uint8Array.of(1), 0);
    await s.flush();
    expect(fdatasync).toHaveBeenCalledTimes(1);
    expect(fsync).toHaveBeenCalledTimes(1);
    await s.flush();
    expect(fdatasync).toHaveBeenCalledTimes(2);
    expect(fsync).toHaveBeenCalledTimes(1);
    await s.close();
  });

  it('a file that already existed does not need its directory synced', async () => {
    const path = freshPath();
    fs.writeFileSync(path, 'abc');
    const s = await createNodeStorage(path, { create: true });
    await s.flush();
    expect(fdatasync).toHaveBeenCalledTimes(1);
    expect(fsync).not.toHaveBeenCalled();
    await s.close();
  });

  it("an fdatasync failure rejects 'IO' naming the operation and path", async () => {
    const path = freshPath();
    const s = await createNodeStorage(path, { create: true });
    fdatasync.mockImplementationOnce(() => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    });
    const e = await rejection(s.flush());
    expect(e.code).toBe('IO');
    expect(e.message).toBe(`node storage: fdatasync ${path} failed: EIO: i/o error, fdatasync`);
    await s.close();
  });
});

describeWithQemu('createNodeStorage against qemu-io', () => {
  it('reads what qemu-io wrote and qemu-io reads what it wrote', async () => {
    const path = freshPath();
    qemuImg(['create', '-q', '-f', 'raw', path, '1M']);
    qemuIo(['-f', 'raw', '-c', 'write -P 0xab 65536 4096', path]);
    const s = await createNodeStorage(path);
    expect(await s.size()).toBe(1 << 20);
    const dst = new Uint8Array(4098);
    expect(await s.read(dst, 65535)).toBe(4098);
    expect([dst[0], dst[1], dst[4096], dst[4097]]).toEqual([0, 0xab, 0xab, 0]);
    await s.write(new Uint8Array(8192).fill(0x5c), 200_000);
    await s.flush();
    await s.close();
    const out = qemuIo(['-f', 'raw', '-c', 'read -P 0x5c 200000 8192', '-c', 'read -P 0 208192 4096', path]);
    expect(out).not.toMatch(/Pattern verification failed/);
    expect(out.match(/read \d+\/\d+ bytes/g)).toHaveLength(2);
  });
});

describe('createNodeStorage: reads batched per tick', () => {
  it('serves file-contiguous reads issued in one tick with one readv, each getting its own bytes and count', async () => {
    const path = freshPath();
    const bytes = new Uint8Array(10 * 4096 + 100);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 12)) & 0xff;
    fs.writeFileSync(path, bytes);
    const storage = await createNodeStorage(path, { readOnly: true });
    const readv = vi.mocked(fs.readvSync);
    readv.mockClear();
    // 12 contiguous 4 KiB reads: the 11th is short (100 bytes), the 12th is past the end.
    const dsts = Array.from({ length: 12 }, () => new Uint8Array(4096).fill(0xee));
    const counts = await Promise.all(dsts.map((d, i) => storage.read(d, i * 4096)));
    expect(readv).toHaveBeenCalledTimes(1);
    expect(counts).toEqual([...Array(10).fill(4096), 100, 0]);
    for (let i = 0; i < 10; i++) expect(dsts[i]).toEqual(bytes.subarray(i * 4096, (i + 1) * 4096));
    expect(dsts[10]!.subarray(0, 100)).toEqual(bytes.subarray(40960));
    expect(dsts[10]!.subarray(100).every((b) => b === 0xee)).toBe(true); // the rest of dst untouched
    expect(dsts[11]!.every((b) => b === 0xee)).toBe(true);
    await storage.close();
  });

  it('keeps program order: a read issued before a write of the same range sees the old bytes', async () => {
    const path = freshPath();
    fs.writeFileSync(path, new Uint8Array(8192).fill(1));
    const storage = await createNodeStorage(path);
    const before = new Uint8Array(8192);
    const reading = storage.read(before, 0);
    const writing = storage.write(new Uint8Array(8192).fill(2), 0);
    const after = new Uint8Array(8192);
    const readingAfter = storage.read(after, 0);
    await Promise.all([reading, writing, readingAfter]);
    expect(before.every((b) => b === 1)).toBe(true);
    expect(after.every((b) => b === 2)).toBe(true);
    await storage.close();
  });

  it('close serves the reads queued before it; reads after close reject CLOSED', async () => {
    const path = freshPath();
    fs.writeFileSync(path, new Uint8Array(4096));
    const storage = await createNodeStorage(path);
    const dst = new Uint8Array(4096);
    const reading = storage.read(dst, 0);
    const closing = storage.close();
    // close serves the queue first: the read issued before it completes.
    await expect(reading).resolves.toBe(4096);
    await closing;
    expect((await rejection(storage.read(dst, 0))).code).toBe('CLOSED');
  });
});
