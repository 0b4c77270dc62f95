// Engine overhead in Deno: sequential 64 KiB reads of a 256 MiB fully allocated qcow2 image
// through @qcow2/engine over createDenoStorage, against createDenoStorage reading the same number
// of bytes of the file directly. The image is written by the engine first (every cluster holds
// data, in guest order), so both read from the page cache. Runs on the built dist files.
//
//   turbo run build --filter=@qcow2/engine --filter=@qcow2/storage-deno
//   cd packages/adapters/deno && node_modules/.bin/deno run --no-config --no-lock --no-remote --no-npm \
//     --import-map=bench/engine-import-map.json --allow-read --allow-write bench/engine-overhead.js [sizeMiB=256] [blockKiB=64] [rounds=15]
//
// Prints one line per round, the medians, and last a `RESULT {json}` line (bench/adapters.mjs reads it).
import { createImage, openImage } from '@qcow2/engine';
import { createDenoStorage } from '@qcow2/storage-deno';

const sizeMiB = Number(Deno.args[0] ?? 256);
const blockKiB = Number(Deno.args[1] ?? 64);
const rounds = Number(Deno.args[2] ?? 15);
const size = sizeMiB * 1024 * 1024;
const block = blockKiB * 1024;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Guest byte at `offset` of the bench image: never zero, different per 4 KiB. */
const byteAt = (offset) => ((offset >>> 12) % 251) + 1;

async function writeImage(path) {
  const storage = await createDenoStorage(path, { create: true, truncate: true });
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
  } finally {
    await storage.close();
  }
}

async function timeRaw(path) {
  const storage = await createDenoStorage(path, { readOnly: true });
  const buffer = new Uint8Array(block);
  const t = performance.now();
  for (let at = 0; at < size; at += block) await storage.read(buffer, at);
  const seconds = (performance.now() - t) / 1000;
  await storage.close();
  return seconds;
}

async function timeEngine(path) {
  const storage = await createDenoStorage(path, { readOnly: true });
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

const dir = Deno.makeTempDirSync({ prefix: 'qcow2-deno-engine-bench-' });
try {
  const path = `${dir}/bench.qcow2`;
  await writeImage(path);
  const raw = [];
  const engine = [];
  await timeEngine(path); // warm up
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      raw.push(await timeRaw(path));
      engine.push(await timeEngine(path));
    } else {
      engine.push(await timeEngine(path));
      raw.push(await timeRaw(path));
    }
    const r = raw.at(-1);
    const e = engine.at(-1);
    console.log(`round ${round + 1}: storage-deno ${(size / r / 1e9).toFixed(2)} GB/s, engine ${(size / e / 1e9).toFixed(2)} GB/s, engine/raw time ${(e / r).toFixed(3)}`);
  }
  // Each round pairs the two passes run back to back (same machine load): the median of the
  // per-round ratios is the headline, steadier than the ratio of the medians on a busy machine.
  const ratio = median(engine.map((e, i) => e / raw[i]));
  console.log(
    `Deno ${Deno.version.deno}, ${sizeMiB} MiB allocated image, sequential ${blockKiB} KiB reads, ${rounds} rounds: ` +
      `storage-deno ${(size / median(raw) / 1e9).toFixed(2)} GB/s, engine ${(size / median(engine) / 1e9).toFixed(2)} GB/s, ` +
      `engine overhead ${((ratio - 1) * 100).toFixed(1)}% (target <= 20%)`,
  );
  console.log(`RESULT ${JSON.stringify({ runtime: `deno ${Deno.version.deno}`, adapter: 'storage-deno', sizeMiB, blockKiB, rounds, rawSeconds: median(raw), engineSeconds: median(engine), ratio, ratioOfMedians: median(engine) / median(raw) })}`);
} finally {
  Deno.removeSync(dir, { recursive: true });
}
