import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { pakoModule, runDenoScript } from './deno-harness.js';

// The engine end to end in the real Deno binary, over a Deno file: createImage, open writable,
// write (plain, unaligned, compressed, zeroes), flush, close, reopen read-only and read back —
// then, on the host, qemu is the judge of the file Deno left behind.

const tmp = makeTempDir('qcow2-deno-e2e-');
afterAll(() => tmp.cleanup());

const MiB = 1024 * 1024;
const VIRTUAL_SIZE = 16 * MiB;
const CLUSTER = 65536;

/** One guest operation. `fill` writes one byte value (qemu-io can verify it with -P); `from` copies payload bytes. */
type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'write'; offset: number; length: number; from: number }
  | { kind: 'compressed'; offset: number; length: number; fill: number }
  | { kind: 'zero'; offset: number; length: number };

const ops: Op[] = [
  { kind: 'write', offset: 0, length: 3 * CLUSTER, fill: 0xa1 },
  { kind: 'write', offset: MiB + 512, length: 8192, fill: 0xb2 },
  { kind: 'compressed', offset: 4 * MiB, length: 2 * CLUSTER, fill: 0xc3 },
  { kind: 'zero', offset: CLUSTER, length: CLUSTER },
  // Random bytes straddling two clusters at unaligned ends (copy-on-write of both partial clusters).
  { kind: 'write', offset: 8 * MiB + 12345, length: 100_000, from: 0 },
  { kind: 'write', offset: VIRTUAL_SIZE - CLUSTER, length: CLUSTER, fill: 0xd4 },
  // Overwrite inside an allocated cluster: no new allocation, bytes replaced in place.
  { kind: 'write', offset: 8 * MiB + 20_000, length: 1000, fill: 0xe5 },
];

/** The guest disk the operations leave, computed here independently of the engine. */
function expectedDisk(payload: Uint8Array): Uint8Array {
  const disk = new Uint8Array(VIRTUAL_SIZE);
  for (const op of ops) {
    if (op.kind === 'zero') disk.fill(0, op.offset, op.offset + op.length);
    else if ('from' in op) disk.set(payload.subarray(op.from, op.from + op.length), op.offset);
    else disk.fill(op.fill, op.offset, op.offset + op.length);
  }
  return disk;
}

// Deno applies the same operations through the engine, and also applies them to its own flat
// model; it reports where its read-back differs, and saves the read-back for the host.
const script = `
import { createImage, openImage } from '@qcow2/engine';
import { createDenoStorage } from '@qcow2/storage-deno';

const [dir, opsJson, virtualSize] = Deno.args;
const ops = JSON.parse(opsJson);
const size = Number(virtualSize);
const path = dir + '/deno.qcow2';
const payload = Deno.readFileSync(dir + '/payload.bin');
const bytesOf = (op) => ('from' in op ? payload.slice(op.from, op.from + op.length) : new Uint8Array(op.length).fill(op.fill));

const storage = await createDenoStorage(path, { create: true, truncate: true });
await createImage(storage, { size });
const image = await openImage(storage, { readOnly: false, name: path });
const opened = { readOnly: image.readOnly, format: image.format, virtualSize: image.virtualSize, clusterSize: image.clusterSize };
const model = new Uint8Array(size);
for (const op of ops) {
  if (op.kind === 'zero') {
    await image.writeZeroes(op.offset, op.length);
    model.fill(0, op.offset, op.offset + op.length);
  } else {
    const bytes = bytesOf(op);
    if (op.kind === 'compressed') await image.writeCompressed(bytes, op.offset);
    else await image.write(bytes, op.offset);
    model.set(bytes, op.offset);
  }
}
await image.flush();
// Read back through the still-open writable image before closing it.
const beforeClose = await image.readBytes(0, size);
await image.close();
await storage.close();

const ro = await createDenoStorage(path, { readOnly: true });
const reopened = await openImage(ro, { name: path });
const back = new Uint8Array(size);
for (let at = 0; at < size; at += 65536) await reopened.read(back.subarray(at, at + 65536), at);
const extents = await reopened.extents(0, size);
const reopenedInfo = { readOnly: reopened.readOnly, dirty: reopened.dirty, virtualSize: reopened.virtualSize };
await reopened.close();
await ro.close();
Deno.writeFileSync(dir + '/readback.raw', back);

const firstDifference = (a, b) => {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
};
console.log(JSON.stringify({
  deno: Deno.version.deno,
  opened,
  reopenedInfo,
  fileSize: Deno.statSync(path).size,
  beforeCloseDiffers: firstDifference(beforeClose, model),
  afterReopenDiffers: firstDifference(back, model),
  extents,
}));
`;

interface DenoE2e {
  deno: string;
  opened: { readOnly: boolean; format: string; virtualSize: number; clusterSize: number };
  reopenedInfo: { readOnly: boolean; dirty: boolean; virtualSize: number };
  fileSize: number;
  beforeCloseDiffers: number;
  afterReopenDiffers: number;
  extents: { offset: number; length: number; kind: string; depth: number; compressed?: boolean }[];
}

describeWithQemu('engine end to end in Deno over createDenoStorage', () => {
  const image = join(tmp.dir, 'deno.qcow2');
  let payload: Uint8Array;
  let result: DenoE2e;

  beforeAll(async () => {
    payload = new Uint8Array(100_000);
    let x = 0x9e3779b9;
    for (let i = 0; i < payload.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      payload[i] = x & 0xff;
    }
    writeFileSync(join(tmp.dir, 'payload.bin'), payload);
    const run = await runDenoScript<DenoE2e>({
      script,
      packages: ['@qcow2/engine', '@qcow2/storage-deno'],
      imports: { pako: pakoModule() },
      allow: [tmp.dir],
      args: [tmp.dir, JSON.stringify(ops), String(VIRTUAL_SIZE)],
      timeoutMs: 60_000,
    });
    result = run.result;
  }, 600_000); // the first run may build the workspace packages Deno imports

  it('runs in the pinned Deno and opens the created image writable as a 16 MiB qcow2 with 64 KiB clusters', () => {
    expect(result.deno).toBe('2.9.6');
    expect(result.opened).toEqual({ readOnly: false, format: 'qcow2', virtualSize: VIRTUAL_SIZE, clusterSize: CLUSTER });
  });

  it('reads back in Deno what it wrote, before close and after reopening read-only (clean)', () => {
    expect(result.beforeCloseDiffers).toBe(-1);
    expect(result.afterReopenDiffers).toBe(-1);
    expect(result.reopenedInfo).toEqual({ readOnly: true, dirty: false, virtualSize: VIRTUAL_SIZE });
  });

  it('the read-back Deno saved equals the disk computed here from the operations', () => {
    const back = new Uint8Array(readFileSync(join(tmp.dir, 'readback.raw')));
    expect(Buffer.compare(back, expectedDisk(payload))).toBe(0);
  });

  it('the map shows the compressed clusters, the zeroed cluster and unallocated space', () => {
    const at = (offset: number) => result.extents.find((e) => e.offset <= offset && offset < e.offset + e.length);
    expect(at(4 * 1024 * 1024)).toMatchObject({ kind: 'data', compressed: true });
    expect(at(CLUSTER)).toMatchObject({ kind: 'zero', depth: 0 });
    expect(at(0)).toMatchObject({ kind: 'data' });
    expect(at(2 * MiB)).toMatchObject({ kind: 'unallocated' });
  });

  it('qemu-img check: no errors, no leaks, two compressed clusters', () => {
    const { exitCode, json } = qemuCheck(image);
    expect(exitCode, JSON.stringify(json)).toBe(0);
    expect(json['check-errors']).toBe(0);
    expect(json['leaks'] ?? 0).toBe(0);
    expect(json['corruptions'] ?? 0).toBe(0);
    expect(json['compressed-clusters']).toBe(2);
  });

  it('qemu-io read -P verifies every pattern, and zeros where nothing or zeroes were written', () => {
    // The final state of each region (the zeroed cluster cuts the first write in two).
    const reads = [
      `read -P 0xa1 0 ${CLUSTER}`,
      `read -P 0 ${CLUSTER} ${CLUSTER}`,
      `read -P 0xa1 ${2 * CLUSTER} ${CLUSTER}`,
      `read -P 0 ${3 * CLUSTER} ${MiB + 512 - 3 * CLUSTER}`,
      `read -P 0xb2 ${MiB + 512} 8192`,
      `read -P 0 ${MiB + 512 + 8192} ${3 * MiB - 512 - 8192}`,
      `read -P 0xc3 ${4 * MiB} ${2 * CLUSTER}`,
      `read -P 0xe5 ${8 * MiB + 20_000} 1000`,
      `read -P 0 ${9 * MiB} ${VIRTUAL_SIZE - 9 * MiB - CLUSTER}`,
      `read -P 0xd4 ${VIRTUAL_SIZE - CLUSTER} ${CLUSTER}`,
    ];
    const out = qemuIo(['-r', '-f', 'qcow2', ...reads.flatMap((c) => ['-c', c]), image]);
    expect(out).not.toMatch(/Pattern verification failed|error|failed/i);
    expect(out.match(/^read \d+\/\d+ bytes at offset \d+$/gm)).toHaveLength(reads.length);
  });

  it('qemu-img convert -O raw of the file equals the expected disk byte for byte', () => {
    const raw = join(tmp.dir, 'qemu.raw');
    qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
    expect(Buffer.compare(readFileSync(raw), expectedDisk(payload))).toBe(0);
  });
});
