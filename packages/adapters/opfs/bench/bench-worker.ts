// The worker of the OPFS read benchmark: writes the test file with a raw sync access handle,
// then times sequential reads through the raw handle and through createOpfsStorage.
import { createOpfsStorage, serveOpfsStorage } from '@qcow2/storage-opfs';

export const BENCH_PATH = 'bench/data.bin';

interface SyncHandle {
  read(buffer: Uint8Array, options: { at: number }): number;
  write(buffer: Uint8Array, options: { at: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

async function fileHandle(create: boolean): Promise<FileSystemFileHandle> {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle('bench', { create });
  return dir.getFileHandle('data.bin', { create });
}

async function syncHandle(create: boolean): Promise<SyncHandle> {
  const file = (await fileHandle(create)) as unknown as { createSyncAccessHandle(): Promise<SyncHandle> };
  return file.createSyncAccessHandle();
}

async function prepare(size: number): Promise<number> {
  const handle = await syncHandle(true);
  try {
    handle.truncate(0);
    const chunk = new Uint8Array(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
    for (let at = 0; at < size; at += chunk.length) {
      const n = handle.write(chunk, { at });
      if (n !== chunk.length) throw new Error(`short write at ${at}: ${n} bytes (quota?)`);
    }
    handle.flush();
    return handle.getSize();
  } finally {
    handle.close();
  }
}

/** GB/s of one sequential pass over the file, for each API, `rounds` times, interleaved. */
async function measure(size: number, block: number, rounds: number): Promise<Record<string, number[]>> {
  const results: Record<string, number[]> = { raw: [], adapter: [] };
  const buffer = new Uint8Array(block);
  for (let round = 0; round < rounds; round++) {
    const raw = await syncHandle(false);
    let t = performance.now();
    for (let at = 0; at < size; at += block) raw.read(buffer, { at });
    results['raw']!.push(size / ((performance.now() - t) / 1000) / 1e9);
    raw.close();

    const storage = await createOpfsStorage(BENCH_PATH, { readOnly: true });
    t = performance.now();
    for (let at = 0; at < size; at += block) await storage.read(buffer, at);
    results['adapter']!.push(size / ((performance.now() - t) / 1000) / 1e9);
    await storage.close();
  }
  return results;
}

serveOpfsStorage(self, {
  methods: {
    'bench.prepare': ([size]) => prepare(size as number),
    'bench.measure': ([size, block, rounds]) => measure(size as number, block as number, rounds as number),
  },
});
