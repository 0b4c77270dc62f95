// The worker of the engine-overhead benchmark in Chromium: writes a fully allocated qcow2 image
// in OPFS with the engine, then times sequential reads of it through the engine over
// createOpfsStorage and through createOpfsStorage alone (the same number of bytes of the file).
import { createImage, openImage } from '@qcow2/engine';
import { createOpfsStorage, serveOpfsStorage } from '@qcow2/storage-opfs';

const PATH = 'engine-bench/bench.qcow2';

/** Guest byte at `offset` of the bench image: never zero, different per 4 KiB. */
const byteAt = (offset: number): number => ((offset >>> 12) % 251) + 1;

async function prepare(size: number): Promise<number> {
  const storage = await createOpfsStorage(PATH, { create: true });
  try {
    await createImage(storage, { size });
    const image = await openImage(storage, { readOnly: false, cacheMode: 'unsafe' });
    const chunk = new Uint8Array(1024 * 1024);
    for (let at = 0; at < size; at += chunk.length) {
      for (let i = 0; i < chunk.length; i += 4096) chunk.fill(byteAt(at + i), i, i + 4096);
      await image.write(chunk, at);
    }
    await image.close();
    await storage.flush();
    return await storage.size();
  } finally {
    await storage.close();
  }
}

async function timeRaw(size: number, block: number): Promise<number> {
  const storage = await createOpfsStorage(PATH, { readOnly: true });
  const buffer = new Uint8Array(block);
  const t = performance.now();
  for (let at = 0; at < size; at += block) await storage.read(buffer, at);
  const seconds = (performance.now() - t) / 1000;
  await storage.close();
  return seconds;
}

async function timeEngine(size: number, block: number): Promise<number> {
  const storage = await createOpfsStorage(PATH, { readOnly: true });
  const image = await openImage(storage);
  const buffer = new Uint8Array(block);
  const t = performance.now();
  for (let at = 0; at < size; at += block) await image.read(buffer, at);
  const seconds = (performance.now() - t) / 1000;
  if (buffer[0] !== byteAt(size - block) || buffer[block - 1] !== byteAt(size - 1)) throw new Error('engine read wrong bytes');
  await image.close();
  await storage.close();
  return seconds;
}

async function measure(size: number, block: number, rounds: number): Promise<{ raw: number[]; engine: number[] }> {
  const raw: number[] = [];
  const engine: number[] = [];
  await timeEngine(size, block); // warm up
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      raw.push(await timeRaw(size, block));
      engine.push(await timeEngine(size, block));
    } else {
      engine.push(await timeEngine(size, block));
      raw.push(await timeRaw(size, block));
    }
  }
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('engine-bench', { recursive: true });
  return { raw, engine };
}

serveOpfsStorage(self, {
  methods: {
    'bench.prepare': ([size]) => prepare(size as number),
    'bench.measure': ([size, block, rounds]) => measure(size as number, block as number, rounds as number),
  },
});
