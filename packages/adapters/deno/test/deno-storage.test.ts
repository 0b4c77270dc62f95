import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isQcow2Error, storageConformanceCases, type ConformanceContext, type Qcow2Error, type Storage } from '@qcow2/storage';
import { createDenoStorage, type DenoStorage } from '@qcow2/storage-deno';
import { directoryOf } from '../src/deno-storage.js';
import { FakeDeno, FakeDenoError } from './fake-deno.js';

// Under Node, with an in-memory stand-in for globalThis.Deno: what real files rarely do — short
// reads and writes, failing calls. The real binary runs the suite in deno-conformance.test.ts.

const scope = globalThis as { Deno?: unknown };
let deno: FakeDeno;
beforeEach(() => {
  deno = new FakeDeno();
  scope.Deno = deno;
});
afterEach(() => {
  delete scope.Deno;
});

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error), String(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

let counter = 0;
const fresh = (): string => `/dir/f-${counter++}.bin`;

/** Chunk sizes from 1 to 5000 bytes, in a fixed pseudo-random order. */
function shortTransfers(): () => number {
  let x = 12345;
  return () => {
    x = (x * 1103515245 + 12345) >>> 0;
    return 1 + (x % 5000);
  };
}

describe('deno storage over a fake Deno with short reads and writes: conformance', () => {
  const ctx: ConformanceContext = {
    create: () => createDenoStorage(fresh(), { create: true }),
    createReadOnly: async (bytes) => {
      const path = fresh();
      const file = deno.openSync(path, { write: true, create: true });
      let done = 0;
      while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
      file.close();
      return createDenoStorage(path, { readOnly: true });
    },
    reopen: async (storage: Storage) => {
      await storage.close();
      return createDenoStorage((storage as DenoStorage).path);
    },
    sparse: false,
  };
  for (const c of storageConformanceCases) {
    it.skipIf(!c.applies(ctx))(c.name, async () => {
      deno.chunk = shortTransfers();
      await c.run(ctx);
    });
  }
});

describe('createDenoStorage: opening', () => {
  it("outside Deno rejects 'UNSUPPORTED'", async () => {
    delete scope.Deno;
    const e = await rejection(createDenoStorage('/dir/a.bin', { create: true }));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toContain('not Deno');
  });

  it("a missing file rejects 'NOT_FOUND' with the Deno error as cause; create makes it", async () => {
    const e = await rejection(createDenoStorage('/dir/missing.bin'));
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('deno storage: open /dir/missing.bin failed: NotFound: No such file or directory');
    expect((e.cause as Error).name).toBe('NotFound');
    const s = await createDenoStorage('/dir/missing.bin', { create: true });
    expect(await s.size()).toBe(0);
    expect(s.path).toBe('/dir/missing.bin');
    await s.close();
  });

  it('create keeps an existing file; truncate empties it', async () => {
    const a = await createDenoStorage('/dir/keep.bin', { create: true });
    await a.write(Uint8Array.of(1, 2, 3), 0);
    await a.close();
    const b = await createDenoStorage('/dir/keep.bin', { create: true });
    expect(await b.size()).toBe(3);
    await b.close();
    const c = await createDenoStorage('/dir/keep.bin', { create: true, truncate: true });
    expect(await c.size()).toBe(0);
    await c.close();
  });

  it("a directory rejects 'IO'; readOnly with create or truncate and bad paths reject 'INVALID_ARGUMENT'", async () => {
    const dir = await rejection(createDenoStorage('/dir', { readOnly: true }));
    expect(dir.code).toBe('IO');
    expect(dir.message).toContain('it is a directory');
    expect(deno.calls).toEqual(['close /dir']);
    for (const options of [{ readOnly: true, create: true }, { readOnly: true, truncate: true }]) {
      expect((await rejection(createDenoStorage('/dir/x.bin', options))).code).toBe('INVALID_ARGUMENT');
    }
    for (const path of ['', 'a\0b', 42 as unknown as string]) {
      expect((await rejection(createDenoStorage(path))).code).toBe('INVALID_ARGUMENT');
    }
  });

  it("other Deno errors become 'IO'", async () => {
    deno.failNext.statSync = new FakeDenoError('PermissionDenied', 'Permission denied (os error 13)');
    const e = await rejection(createDenoStorage('/dir/s.bin', { create: true }));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('deno storage: stat /dir/s.bin failed: PermissionDenied');
  });
});

describe('createDenoStorage: I/O', () => {
  it('reads and writes loop over short transfers; a read stops only at the end of the file', async () => {
    deno.chunk = () => 3;
    const s = await createDenoStorage(fresh(), { create: true });
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    await s.write(data, 10);
    const dst = new Uint8Array(2000).fill(0xee);
    expect(await s.read(dst, 5)).toBe(1005);
    expect(dst.subarray(5, 1005)).toEqual(data);
    expect(dst.subarray(0, 5)).toEqual(new Uint8Array(5));
    expect(dst[1005]).toBe(0xee);
    await s.close();
  });

  it("a writeSync that writes nothing rejects 'IO' instead of looping", async () => {
    const s = await createDenoStorage(fresh(), { create: true });
    deno.writeZero = true;
    const e = await rejection(s.write(new Uint8Array(10), 0));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('write of 10 bytes at 0x0 to');
    await s.close();
  });

  it('a read beyond what a seek may reach (EINVAL) is a read past the end: 0', async () => {
    const s = await createDenoStorage(fresh(), { create: true });
    await s.write(new Uint8Array(10).fill(1), 0);
    expect(await s.read(new Uint8Array(8), 2 ** 50)).toBe(0);
    const e = await rejection(s.write(new Uint8Array(8), 2 ** 50));
    expect(e.code).toBe('IO');
    await s.close();
  });

  it("failing Deno calls reject 'IO', naming the operation, the offset and the path, with the cause kept", async () => {
    const path = fresh();
    const s = await createDenoStorage(path, { create: true });
    await s.write(new Uint8Array(100), 0);
    const cases: [keyof FakeDeno['failNext'], () => Promise<unknown>, string][] = [
      ['readSync', () => s.read(new Uint8Array(10), 0x20), `read of 10 bytes at 0x20 from ${path}`],
      ['writeSync', () => s.write(new Uint8Array(10), 0x30), `write of 10 bytes at 0x30 to ${path}`],
      ['truncateSync', () => s.truncate(5), `truncate to 5 bytes of ${path}`],
      ['statSync', () => s.size(), `stat ${path}`],
      ['syncDataSync', () => s.flush(), `fdatasync ${path}`],
    ];
    for (const [method, call, message] of cases) {
      const cause = new FakeDenoError('Interrupted', `boom in ${method}`);
      deno.failNext[method] = cause;
      const e = await rejection(call());
      expect(e.code).toBe('IO');
      expect(e.message).toContain(`deno storage: ${message} failed: Interrupted: boom in ${method}`);
      expect(e.cause).toBe(cause);
    }
    await s.close();
  });

  it('flush is syncDataSync; the first flush after creating the file also syncs its directory', async () => {
    const s = await createDenoStorage('/dir/new.bin', { create: true });
    await s.write(Uint8Array.of(1), 0);
    await s.flush();
    await s.flush();
    expect(deno.calls).toEqual(['syncData /dir/new.bin', 'sync /dir', 'close /dir', 'syncData /dir/new.bin']);
    await s.close();
    deno.calls.length = 0;
    const again = await createDenoStorage('/dir/new.bin', { create: true });
    await again.flush();
    expect(deno.calls).toEqual(['syncData /dir/new.bin']); // it existed: no directory sync
    await again.close();
  });

  it('a directory sync that the platform refuses is ignored; another failure rejects', async () => {
    const a = await createDenoStorage('/dir/p.bin', { create: true });
    deno.failNext.syncSync = new FakeDenoError('PermissionDenied', 'no');
    await a.flush();
    await a.close();
    const b = await createDenoStorage('/dir/q.bin', { create: true });
    deno.failNext.syncSync = new FakeDenoError('Interrupted', 'EIO');
    const e = await rejection(b.flush());
    expect(e.code).toBe('IO');
    expect(e.message).toContain('sync directory /dir failed');
    await b.close();
  });

  it("read-only: write and truncate reject 'READ_ONLY'; after close everything rejects 'CLOSED'", async () => {
    const path = fresh();
    await (await createDenoStorage(path, { create: true })).close();
    const s = await createDenoStorage(path, { readOnly: true });
    expect(s.readOnly).toBe(true);
    expect(s.canDiscard).toBe(false);
    expect((await rejection(s.write(new Uint8Array(1), 0))).code).toBe('READ_ONLY');
    expect((await rejection(s.truncate(0))).code).toBe('READ_ONLY');
    await s.close();
    await s.close();
    expect((await rejection(s.read(new Uint8Array(1), 0))).code).toBe('CLOSED');
  });
});

describe('directoryOf', () => {
  it('is the directory part of a path', () => {
    expect(directoryOf('/dir/a.bin', false)).toBe('/dir');
    expect(directoryOf('/a.bin', false)).toBe('/');
    expect(directoryOf('a.bin', false)).toBe('.');
    expect(directoryOf('x/y//a.bin', false)).toBe('x/y');
    expect(directoryOf('C:\\images\\a.qcow2', true)).toBe('C:\\images');
  });
});
