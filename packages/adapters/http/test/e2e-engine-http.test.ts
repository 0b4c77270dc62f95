import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImage, openImage, type Image } from '@qcow2/engine';
import type { StorageResolver } from '@qcow2/storage';
import { createHttpStorage, type HttpStorage } from '@qcow2/storage-http';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { startRangeServer, type RangeServer } from './range-server.js';

// The engine over HTTP on Node: a two-image qcow2 chain made by qemu, served by a local Range
// server on 127.0.0.1, opened with createHttpStorage for the top image and through the resolver
// for its backing file, read whole and compared with qemu-img's conversion of the same files on
// disk; and a writable overlay on disk (storage-node) whose backing file is read over HTTP, which
// qemu then checks and reads.

const tmp = makeTempDir('qcow2-http-e2e-');
const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;

function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

describeWithQemu('engine over HTTP (createHttpStorage) on Node', () => {
  let server: RangeServer;
  const file = (name: string): string => join(tmp.dir, name);
  const opened: HttpStorage[] = [];
  /** Backing names resolve against the URL of the image naming them, as relative URLs do. */
  const resolver: StorageResolver = async (name, from) => {
    const storage = await createHttpStorage(new URL(name, from ?? server.origin + '/img/').href);
    opened.push(storage);
    return storage;
  };

  beforeAll(async () => {
    // base: random data, a pattern, a compressed area, holes. top: its own writes, a zeroed range.
    const base = new Uint8Array(SIZE);
    base.set(pseudoRandom(2 * MiB, 77), 0);
    base.fill(0x11, 3 * MiB, 3 * MiB + 256 * KiB);
    writeFileSync(file('base.raw'), base);
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', file('base.raw'), file('base.qcow2')]);
    qemuIo(['-f', 'qcow2', '-c', `write -c -P 0x5a ${5 * MiB} 128k`, file('base.qcow2')]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=32768', '-b', 'base.qcow2', '-F', 'qcow2', file('top.qcow2')]);
    qemuIo([
      '-f', 'qcow2',
      '-c', `write -P 0x22 ${MiB + 1000} 70000`,
      '-c', `write -z ${256 * KiB} 64k`,
      '-c', `write -P 0x33 ${6 * MiB} 32k`,
      file('top.qcow2'),
    ]);
    qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file('top.qcow2'), file('top.raw')]);
    server = await startRangeServer();
    server.add('/img/base.qcow2', new Uint8Array(readFileSync(file('base.qcow2'))));
    server.add('/img/top.qcow2', new Uint8Array(readFileSync(file('top.qcow2'))));
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  describe('a qemu-made chain read over HTTP', () => {
    let image: Image;
    let top: HttpStorage;
    let disk: Uint8Array;
    beforeAll(async () => {
      const url = `${server.origin}/img/top.qcow2`;
      top = await createHttpStorage(url);
      image = await openImage(top, { name: url, resolver });
      disk = new Uint8Array(image.virtualSize);
      // 1 MiB reads at a time, several in flight, as a reader wanting throughput does.
      await Promise.all(
        Array.from({ length: image.virtualSize / MiB }, (_, i) => image.read(disk.subarray(i * MiB, (i + 1) * MiB), i * MiB)),
      );
    });
    afterAll(async () => {
      await image?.close();
      await top?.close();
    });

    it('opens with the header fields qemu-img info reports for the file', () => {
      const info = qemuInfo(file('top.qcow2'));
      expect(image.format).toBe(info['format']);
      expect(image.virtualSize).toBe(info['virtual-size']);
      expect(image.clusterSize).toBe(info['cluster-size']);
      expect(image.backingFile).toBe(info['backing-filename']);
      expect(image.backingFormat).toBe(info['backing-filename-format']);
      expect(image.formatSpecific).toMatchObject((info['format-specific'] as { data: Record<string, unknown> }).data);
      expect(image.backing?.clusterSize).toBe(65536);
    });

    it('the whole guest disk equals qemu-img convert -O raw of the files on disk', () => {
      expect(Buffer.compare(disk, readFileSync(file('top.raw')))).toBe(0);
    });

    it('the backing file was opened by the resolver at the URL relative to the top image', () => {
      expect(opened.map((s) => s.url)).toContain(`${server.origin}/img/base.qcow2`);
    });

    it('every GET was a Range request (nothing downloaded whole)', () => {
      const gets = server.log.filter((r) => r.method === 'GET');
      expect(gets.length).toBeGreaterThan(2);
      expect(gets.filter((r) => r.range === undefined)).toEqual([]);
    });
  });

  describe('a writable overlay on disk over a backing file served over HTTP', () => {
    it('creates it (size from the HTTP backing), writes with copy-on-write, and qemu checks and reads it', async () => {
      const overlayPath = file('overlay.qcow2');
      const storage = await createNodeStorage(overlayPath, { create: true, truncate: true });
      // The overlay names its backing relatively; opened here over HTTP, and by qemu beside it on disk.
      const from = `${server.origin}/img/overlay.qcow2`;
      await createImage(storage, { backingFile: 'base.qcow2', backingFormat: 'qcow2', name: from, resolver });
      const image = await openImage(storage, { readOnly: false, name: from, resolver });
      expect(image.virtualSize).toBe(SIZE);
      const expected = new Uint8Array(readFileSync(file('base.raw')));
      expected.fill(0x5a, 5 * MiB, 5 * MiB + 128 * KiB);
      const writes: [number, Uint8Array][] = [
        [100_000, pseudoRandom(50_000, 5)], // inside the random area: partial clusters copied over HTTP
        [5 * MiB + 4096, new Uint8Array(4096).fill(0x44)], // over a compressed cluster of the base
        [7 * MiB - 10, new Uint8Array(20).fill(0x55)], // straddling two unallocated clusters
      ];
      for (const [offset, bytes] of writes) {
        await image.write(bytes, offset);
        expected.set(bytes, offset);
      }
      await image.writeZeroes(3 * MiB, 64 * KiB);
      expected.fill(0, 3 * MiB, 3 * MiB + 64 * KiB);
      const merged = await image.readBytes(0, SIZE);
      await image.close();
      await storage.close();

      expect(Buffer.compare(merged, expected), 'merged view read through the engine').toBe(0);
      const { exitCode, json } = qemuCheck(overlayPath);
      expect(exitCode, JSON.stringify(json)).toBe(0);
      expect(json['check-errors']).toBe(0);
      expect(json['leaks'] ?? 0).toBe(0);
      expect(qemuInfo(overlayPath)).toMatchObject({ 'backing-filename': 'base.qcow2', 'virtual-size': SIZE });
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', overlayPath, file('overlay.raw')]);
      expect(Buffer.compare(readFileSync(file('overlay.raw')), expected), 'qemu-img convert of the overlay').toBe(0);
    });
  });
});
