// Sequential 64 KiB reads of a 256 MiB file in Deno: FsFile seekSync + readSync vs seek + read
// (async, awaited one at a time) vs the adapter (from the built dist). The file is written first,
// so every run reads from the page cache: this measures the per-call cost of each API, which is
// what decides between them.
//
//   turbo run build --filter=@qcow2/storage-deno
//   cd packages/adapters/deno && node_modules/.bin/deno run --no-config --no-remote --no-npm \
//     --import-map=bench/import-map.json --allow-read --allow-write bench/read-throughput.js [sizeMiB=256] [blockKiB=64] [rounds=5]
import { createDenoStorage } from '@qcow2/storage-deno';

const sizeMiB = Number(Deno.args[0] ?? 256);
const blockKiB = Number(Deno.args[1] ?? 64);
const rounds = Number(Deno.args[2] ?? 5);
const size = sizeMiB * 1024 * 1024;
const block = blockKiB * 1024;
const START = 0; // Deno.SeekMode.Start

const dir = Deno.makeTempDirSync({ prefix: 'qcow2-deno-bench-' });
const path = `${dir}/data.bin`;
try {
  const chunk = new Uint8Array(1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  const out = Deno.openSync(path, { write: true, create: true, truncate: true });
  for (let off = 0; off < size; off += chunk.length) {
    let done = 0;
    while (done < chunk.length) done += out.writeSync(chunk.subarray(done));
  }
  out.close();

  const readAll = (file, buf) => {
    let done = 0;
    while (done < buf.length) {
      const n = file.readSync(buf.subarray(done));
      if (n === null) break;
      done += n;
    }
  };
  const readAllAsync = async (file, buf) => {
    let done = 0;
    while (done < buf.length) {
      const n = await file.read(buf.subarray(done));
      if (n === null) break;
      done += n;
    }
  };

  const runners = {
    'seekSync + readSync': async () => {
      const file = Deno.openSync(path, { read: true });
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) {
        file.seekSync(off, START);
        readAll(file, buf);
      }
      const seconds = (performance.now() - t) / 1000;
      file.close();
      return seconds;
    },
    'seek + read (async, depth 1)': async () => {
      const file = await Deno.open(path, { read: true });
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) {
        await file.seek(off, START);
        await readAllAsync(file, buf);
      }
      const seconds = (performance.now() - t) / 1000;
      file.close();
      return seconds;
    },
    'createDenoStorage read (depth 1)': async () => {
      const s = await createDenoStorage(path, { readOnly: true });
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) await s.read(buf, off);
      const seconds = (performance.now() - t) / 1000;
      await s.close();
      return seconds;
    },
  };

  const results = {};
  for (let round = 0; round < rounds; round++) {
    for (const [name, run] of Object.entries(runners)) (results[name] ??= []).push(size / (await run()) / 1e9);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`Deno ${Deno.version.deno}, ${sizeMiB} MiB, ${blockKiB} KiB sequential reads, ${rounds} rounds (GB/s, median [min-max])`);
  for (const [name, xs] of Object.entries(results)) {
    console.log(`${name.padEnd(34)} ${median(xs).toFixed(2)} [${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}]`);
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
}
