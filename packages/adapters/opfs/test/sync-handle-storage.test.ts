import { describe, expect, it } from 'vitest';
import { isQcow2Error, storageConformanceCases, type ConformanceContext, type Storage } from '@qcow2/storage';
import { wrapSyncAccessHandle, type OpfsStorage } from '../src/sync-handle-storage.js';
import { FakeFile, FakeSyncHandle } from './fake-sync-handle.js';

// The adapter's logic over a fake sync access handle, in Node: the conformance suite, and the
// checks for Chromium's quota behaviour (short writes, truncates that do nothing), which a real
// browser shows only near 1 GiB. The real handle is exercised in opfs-browser.test.ts.

const files = new Map<string, FakeFile>();
let counter = 0;
const open = (path: string, readOnly = false): OpfsStorage => {
  let file = files.get(path);
  if (file === undefined) files.set(path, (file = new FakeFile()));
  return wrapSyncAccessHandle(new FakeSyncHandle(file), path, readOnly, readOnly ? 'read-only' : 'readwrite');
};

const ctx: ConformanceContext = {
  create: async () => open(`file-${counter++}`),
  createReadOnly: async (bytes) => {
    const path = `file-${counter++}`;
    const file = new FakeFile();
    file.bytes = bytes.slice();
    files.set(path, file);
    return open(path, true);
  },
  reopen: async (storage: Storage) => {
    await storage.close();
    return open((storage as OpfsStorage).path);
  },
  sparse: false,
};

describe('sync handle storage: conformance over a fake sync access handle', () => {
  for (const c of storageConformanceCases) {
    it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx));
  }
});

async function rejection(promise: Promise<unknown>): Promise<{ code: string; message: string; cause: unknown }> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    const e = error as { code: string; message: string; cause: unknown };
    return { code: e.code, message: e.message, cause: e.cause };
  }
  throw new Error('expected a rejection');
}

describe('sync handle storage: the quota behaviour of Chromium', () => {
  it('a write the handle takes only in part rejects IO, naming the offset and the count written', async () => {
    const file = new FakeFile();
    const s = wrapSyncAccessHandle(new FakeSyncHandle(file, { quota: 1000 }), 'q/a.bin', false, 'readwrite');
    await s.write(new Uint8Array(600).fill(1), 0);
    const e = await rejection(s.write(new Uint8Array(600).fill(2), 0x200));
    expect(e.code).toBe('IO');
    expect(e.message).toBe(
      'opfs storage q/a.bin: write of 600 bytes at 0x200: stopped after 488 bytes (the storage quota of this origin is probably exhausted)',
    );
    expect(file.bytes.length).toBe(1000);
  });

  it('a write the handle takes nothing of rejects IO', async () => {
    const file = new FakeFile();
    file.bytes = new Uint8Array(1000);
    const s = wrapSyncAccessHandle(new FakeSyncHandle(file, { quota: 1000 }), 'q/b.bin', false, 'readwrite');
    const e = await rejection(s.write(new Uint8Array(10), 1000));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('write of 10 bytes at 0x3e8: stopped after 0 bytes');
  });

  it('a truncate that leaves the size unchanged rejects IO with the size found', async () => {
    const file = new FakeFile();
    const s = wrapSyncAccessHandle(new FakeSyncHandle(file, { quota: 4096 }), 'q/c.bin', false, 'readwrite');
    await s.truncate(4096);
    const e = await rejection(s.truncate(1 << 20));
    expect(e.code).toBe('IO');
    expect(e.message).toBe(
      'opfs storage q/c.bin: truncate to 1048576 bytes: the size is 4096 afterwards (the storage quota of this origin is probably exhausted)',
    );
    await s.truncate(10);
    expect(await s.size()).toBe(10);
  });

  it('a write that throws QuotaExceededError rejects IO with the DOMException as cause', async () => {
    const quota = new DOMException('quota', 'QuotaExceededError');
    const s = wrapSyncAccessHandle(new FakeSyncHandle(new FakeFile(), { throwOn: { method: 'write', error: quota } }), 'q/d.bin', false, 'readwrite');
    const e = await rejection(s.write(new Uint8Array(10), 0));
    expect(e.code).toBe('IO');
    expect(e.message).toBe(
      'opfs storage q/d.bin: write of 10 bytes at 0x0: the storage quota of this origin is exhausted (QuotaExceededError: quota)',
    );
    expect(e.cause).toBe(quota);
  });

  it.each([
    ['read', (s: OpfsStorage) => s.read(new Uint8Array(4), 0), 'read of 4 bytes at 0x0'],
    ['getSize', (s: OpfsStorage) => s.size(), 'size'],
    ['truncate', (s: OpfsStorage) => s.truncate(5), 'truncate to 5 bytes'],
    ['flush', (s: OpfsStorage) => s.flush(), 'flush'],
    ['close', (s: OpfsStorage) => s.close(), 'close'],
  ] as const)('a DOMException from %s becomes IO naming the operation', async (method, call, op) => {
    const error = new DOMException('gone', 'InvalidStateError');
    const s = wrapSyncAccessHandle(new FakeSyncHandle(new FakeFile(), { throwOn: { method, error } }), 'x.bin', false, 'readwrite');
    const e = await rejection(call(s));
    expect(e.code).toBe('IO');
    expect(e.message).toBe(`opfs storage x.bin: ${op}: failed (InvalidStateError: gone)`);
    expect(e.cause).toBe(error);
  });

  it('flush reaches the handle; close closes it once', async () => {
    const handle = new FakeSyncHandle(new FakeFile());
    const s = wrapSyncAccessHandle(handle, 'f.bin', false, 'readwrite');
    await s.flush();
    expect(handle.flushes).toBe(1);
    await s.close();
    await s.close();
    expect(handle.closed).toBe(true);
    expect(s.path).toBe('f.bin');
    expect(s.mode).toBe('readwrite');
  });
});

describe('sync handle storage: read-only handles', () => {
  it("flush on a 'read-only' handle resolves without calling the handle (Chromium refuses it there)", async () => {
    const refused = new DOMException("Cannot write to access handle in 'read-only' mode", 'NoModificationAllowedError');
    const handle = new FakeSyncHandle(new FakeFile(), { throwOn: { method: 'flush', error: refused } });
    const s = wrapSyncAccessHandle(handle, 'r.bin', true, 'read-only');
    await s.flush();
    expect(handle.flushes).toBe(0);
    const rw = wrapSyncAccessHandle(handle, 'r.bin', true, 'readwrite');
    const e = await rejection(rw.flush());
    expect(e.message).toBe(
      "opfs storage r.bin: flush: the handle refuses the change (NoModificationAllowedError: Cannot write to access handle in 'read-only' mode)",
    );
  });
});
