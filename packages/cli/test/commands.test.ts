import { Qcow2Error } from '@qcow2/format';
import { describe, expect, it } from 'vitest';
import type { CliHost, ImageExtent, ImageLike } from '../src/host.js';
import { FakeImage, fakeHost, MemoryOutput, normalizeTimes, run } from './helpers.js';

const K = 1024;
const M = 1024 * 1024;

/** Byte equality without vitest's element-by-element diff (slow on megabytes). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function patterned(size: number, runs: [number, number, number][]): Uint8Array {
  const bytes = new Uint8Array(size);
  for (const [offset, length, value] of runs) bytes.fill(value, offset, offset + length);
  return bytes;
}

describe('map over a chain (fake engine)', () => {
  const base = new FakeImage(patterned(M, [[0, 64 * K, 0x11]]), {
    format: 'qcow2',
    extents: [
      { offset: 0, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x50000 },
      { offset: 64 * K, length: M - 64 * K, kind: 'unallocated', depth: 0 },
    ],
  });
  const top = (): FakeImage =>
    new FakeImage(patterned(4 * M, [[0, 64 * K, 0x11], [2 * M, 64 * K, 0x22]]), {
      format: 'qcow2',
      backingFile: 'base.qcow2',
      backing: base,
      extents: [
        { offset: 0, length: 64 * K, kind: 'data', depth: 1, hostOffset: 0x50000 },
        { offset: 64 * K, length: 2 * M - 64 * K, kind: 'unallocated', depth: 1 },
        { offset: 2 * M, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x70000 },
        { offset: 2 * M + 64 * K, length: 64 * K, kind: 'zero', depth: 0 },
        { offset: 2 * M + 128 * K, length: 2 * M - 128 * K, kind: 'unallocated', depth: 0 },
      ],
    });
  const host = fakeHost({ 'vm/top.qcow2': top });

  it('JSON: unallocated runs take the depth where qemu stops (the backing file ends at 1 MiB)', async () => {
    const r = await run(['map', '--output=json', 'vm/top.qcow2'], host);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(
      '[{ "start": 0, "length": 65536, "depth": 1, "present": true, "zero": false, "data": true, "offset": 327680},\n' +
        '{ "start": 65536, "length": 983040, "depth": 1, "present": false, "zero": true, "data": false},\n' +
        '{ "start": 1048576, "length": 1048576, "depth": 0, "present": false, "zero": true, "data": false},\n' +
        '{ "start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 458752},\n' +
        '{ "start": 2162688, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},\n' +
        '{ "start": 2228224, "length": 1966080, "depth": 0, "present": false, "zero": true, "data": false}]\n',
    );
  });

  it('human: data runs only, named by the file that holds them', async () => {
    const r = await run(['map', 'vm/top.qcow2'], host);
    expect(r.stdout).toBe(
      'Offset          Length          Mapped to       File\n' +
        '0               0x10000         0x50000         vm/base.qcow2\n' +
        '0x200000        0x10000         0x70000         vm/top.qcow2\n',
    );
  });

  it('a window, and a start past the end', async () => {
    const r = await run(['map', '--output', 'json', '--start-offset', '2M', '--max-length=100k', 'vm/top.qcow2'], host);
    expect(r.stdout).toBe(
      '[{ "start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 458752},\n' +
        '{ "start": 2162688, "length": 36864, "depth": 0, "present": true, "zero": true, "data": false}]\n',
    );
    const past = await run(['map', '--output=json', '--start-offset=5M', 'vm/top.qcow2'], host);
    expect(past.stdout).toBe('[{ "start": 5242880, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
  });

  it('human output stops with qemu\'s error at a compressed run', async () => {
    const image = new FakeImage(4 * M, {
      format: 'qcow2',
      extents: [
        { offset: 0, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x50000 },
        { offset: 64 * K, length: 64 * K, kind: 'data', depth: 0, compressed: true },
      ],
    });
    const r = await run(['map', 'c.qcow2'], fakeHost({ 'c.qcow2': image }));
    expect(r).toEqual({
      code: 1,
      stdout: 'Offset          Length          Mapped to       File\n0               0x10000         0x50000         c.qcow2\n',
      stderr: 'qcow2: File contains external, encrypted or compressed clusters.\n',
    });
    expect(image.closed).toBe(1);
  });
});

describe('compare (fake engine)', () => {
  const M4 = 4 * M;
  it('strict mode compares block status including the end-of-file flag, as qemu', async () => {
    // e: data at 64k, data at 1M; e2: data at 64k only. At 128k both are unallocated, but only
    // e2's run reaches the end of the image.
    const e = new FakeImage(M4, {
      format: 'qcow2',
      extents: [
        { offset: 0, length: 64 * K, kind: 'unallocated', depth: 0 },
        { offset: 64 * K, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x50000 },
        { offset: 128 * K, length: M - 128 * K, kind: 'unallocated', depth: 0 },
        { offset: M, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x60000 },
        { offset: M + 64 * K, length: M4 - M - 64 * K, kind: 'unallocated', depth: 0 },
      ],
    });
    const e2 = new FakeImage(M4, {
      format: 'qcow2',
      extents: [
        { offset: 0, length: 64 * K, kind: 'unallocated', depth: 0 },
        { offset: 64 * K, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x50000 },
        { offset: 128 * K, length: M4 - 128 * K, kind: 'unallocated', depth: 0 },
      ],
    });
    const host = fakeHost({ e, e2 });
    expect(await run(['compare', '-s', 'e', 'e2'], host)).toEqual({
      code: 1,
      stdout: 'Strict mode: Offset 131072 block status mismatch!\n',
      stderr: '',
    });
    // Without -s the contents decide: both read as zeros everywhere.
    expect((await run(['compare', 'e', 'e2'], host)).stdout).toBe('Images are identical.\n');
  });

  it('reports the first differing 512-byte sector; read errors exit 4, status errors 3', async () => {
    const a = new FakeImage(patterned(M, [[70000, 1, 7]]));
    const b = new FakeImage(M);
    const broken = Object.assign(new FakeImage(M), {
      read: async () => {
        throw new Qcow2Error('CORRUPT', 'L2 entry at 0x40000 index 3: offset 0x50200 is not cluster-aligned');
      },
    });
    // Fails later than `broken` does: both images are read at once, and the first image's
    // failure is still the one reported.
    const slowBroken = Object.assign(new FakeImage(M), {
      read: async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new Qcow2Error('IO', 'slow failure');
      },
    });
    const noStatus = Object.assign(new FakeImage(M), {
      extents: async (): Promise<ImageExtent[]> => {
        throw new Qcow2Error('CORRUPT', 'L1 entry 0 is bad');
      },
    });
    const host = fakeHost({ a, b, broken, slowBroken, noStatus });
    expect((await run(['compare', 'a', 'b'], host)).stdout).toBe('Content mismatch at offset 69632!\n');
    expect(await run(['compare', 'a', 'broken'], host)).toEqual({
      code: 4,
      stdout: '',
      stderr:
        'qcow2: Error while reading offset 0 of broken: L2 entry at 0x40000 index 3: offset 0x50200 is not cluster-aligned\n',
    });
    expect((await run(['compare', 'slowBroken', 'broken'], host)).stderr).toBe(
      'qcow2: Error while reading offset 0 of slowBroken: slow failure\n',
    );
    expect((await run(['compare', 'broken', 'slowBroken'], host)).stderr).toBe(
      'qcow2: Error while reading offset 0 of broken: L2 entry at 0x40000 index 3: offset 0x50200 is not cluster-aligned\n',
    );
    expect(await run(['compare', 'a', 'noStatus'], host)).toEqual({
      code: 3,
      stdout: '',
      stderr: 'qcow2: Sector allocation test failed for noStatus\n',
    });
  });
});

describe('convert (fake engine)', () => {
  it('writes only what is not zero, and the snapshot with -l', async () => {
    const content = patterned(4 * M, [[0, 4 * K, 1], [M, 100, 2], [3 * M, 64 * K, 3]]);
    const snapView = new FakeImage(patterned(4 * M, [[0, 512, 9]]));
    const image = new FakeImage(content, {
      format: 'qcow2',
      snapshots: [
        { id: '1', name: 'first', vmStateSize: 0, dateSec: 0, dateNsec: 0, vmClockNsec: 0, diskSize: 4 * M },
        { id: '2', name: '1', vmStateSize: 0, dateSec: 0, dateNsec: 0, vmClockNsec: 0, diskSize: 4 * M },
      ],
      snapshotViews: { '1': snapView },
      extents: [
        { offset: 0, length: 2 * M, kind: 'data', depth: 0, hostOffset: 0x50000 },
        { offset: 2 * M, length: M, kind: 'zero', depth: 0 },
        { offset: 3 * M, length: M, kind: 'data', depth: 0, hostOffset: 0x250000 },
      ],
    });
    const outputs: Record<string, MemoryOutput> = {};
    const host = fakeHost({ 'in.qcow2': image }, outputs);

    expect(await run(['convert', '-O', 'raw', 'in.qcow2', 'out.raw'], host)).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(same(outputs['out.raw']!.bytes, content)).toBe(true);
    expect(outputs['out.raw']!.written).toBe(4 * K + 512 + 64 * K); // zero runs of 4 KiB and more are skipped

    await run(['convert', '-S', '0', 'in.qcow2', 'full.raw'], host);
    expect(same(outputs['full.raw']!.bytes, content)).toBe(true);
    expect(outputs['full.raw']!.written).toBe(4 * M);

    for (const param of ['1', 'first', 'snapshot.id=1', 'snapshot.name=first', 'snapshot.id=1,snapshot.name=first']) {
      expect((await run(['convert', '-l', param, 'in.qcow2', 'snap.raw'], host)).code, param).toBe(0);
      expect(same(outputs['snap.raw']!.bytes, snapView.readSync())).toBe(true);
    }
    for (const param of ['nope', 'snapshot.id=1,snapshot.name=x', 'snapshot.name=nope']) {
      expect(await run(['convert', '-l', param, 'in.qcow2', 'snap.raw'], host), param).toEqual({
        code: 1,
        stdout: '',
        stderr: "qcow2: Failed to load snapshot: Can't find snapshot\n",
      });
    }
  });
});

describe('io (fake engine)', () => {
  it('a failing read: one line, exit 1, later commands still run', async () => {
    const image = Object.assign(new FakeImage(M), {
      read: async () => {
        throw new Qcow2Error('CORRUPT', 'compressed cluster at 0x10000: bad zlib stream');
      },
    });
    const r = await run(['io', '-c', 'read 0 4k', '-c', 'length', 'x'], fakeHost({ x: image }));
    expect(r).toEqual({
      code: 1,
      stdout: 'read failed: Input/output error (compressed cluster at 0x10000: bad zlib stream)\n1 MiB\n',
      stderr: '',
    });
  });

  it('map and alloc count only what the top image allocates', async () => {
    const image = new FakeImage(M, {
      format: 'qcow2',
      extents: [
        { offset: 0, length: 64 * K, kind: 'data', depth: 1, hostOffset: 0 },
        { offset: 64 * K, length: 64 * K, kind: 'zero', depth: 0 },
        { offset: 128 * K, length: 64 * K, kind: 'data', depth: 0, hostOffset: 0x50000 },
        { offset: 192 * K, length: M - 192 * K, kind: 'unallocated', depth: 1 },
      ],
    });
    const r = await run(['io', '-c', 'map', '-c', 'alloc 0 1M', '-c', 'alloc 1000k 100k', 'x'], fakeHost({ x: image }));
    expect(r.stdout).toBe(
      '64 KiB (0x10000) bytes not allocated at offset 0 bytes (0x0)\n' +
        '128 KiB (0x20000) bytes     allocated at offset 64 KiB (0x10000)\n' +
        '832 KiB (0xd0000) bytes not allocated at offset 192 KiB (0x30000)\n' +
        '131072/1048576 bytes allocated at offset 0 bytes\n' +
        '0/24576 bytes allocated at offset 1000 KiB\n',
    );
  });
});

describe('bench (fake engine)', () => {
  it('keeps depth requests in flight at qemu\'s offsets', async () => {
    const offsets: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const image = Object.assign(new FakeImage(256 * K), {
      read: async (_dst: Uint8Array, offset: number) => {
        offsets.push(offset);
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 1));
        inFlight -= 1;
      },
    });
    let t = 10;
    const host = fakeHost({ x: image });
    let stdout = '';
    const { main } = await import('../src/main.js');
    const code = await main(['bench', '-c', '7', '-d', '3', '-s', '64k', 'x'], {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stdout += s),
      host,
      now: () => (t += 0.25),
    });
    expect(code).toBe(0);
    expect(stdout).toBe(
      'Sending 7 read requests, 65536 bytes each, 3 in parallel (starting at offset 0, step size 65536)\n' +
        'Run completed in 0.250 seconds.\n',
    );
    expect(offsets).toEqual([0, 65536, 131072, 196608, 0, 65536, 131072]);
    expect(maxInFlight).toBe(3);
    expect(normalizeTimes(stdout)).toContain('Run completed in T seconds.');
  });
});

describe('whatever is thrown: one line on stderr, exit 1, no stack trace', () => {
  const throwing = (value: unknown): CliHost => ({
    openImage: async () => {
      throw value;
    },
    allocatedSize: async () => undefined,
    openOutput: async () => {
      throw value;
    },
    createImage: async () => {
      throw value;
    },
  });
  it.each([
    ['a TypeError', new TypeError('boom\n    at somewhere (file.js:1:1)')],
    ['a string', 'just a string'],
    ['undefined', undefined],
    ['a Qcow2Error', new Qcow2Error('CORRUPT', 'header at 0x0: bad magic')],
  ])('%s', async (_name, value) => {
    for (const argv of [['info', 'x'], ['map', 'x'], ['compare', 'x', 'y'], ['convert', 'x', 'y'], ['io', '-c', 'read 0 1', 'x'], ['bench', 'x']]) {
      const r = await run(argv, throwing(value));
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^qcow2: [^\n]*\n$/);
      expect(r.stderr).not.toMatch(/\bat .*:\d+:\d+/);
      expect(r.code).toBe(argv[0] === 'compare' ? 2 : 1);
    }
  });

  it('an image whose extents fail mid-map', async () => {
    const image: ImageLike = Object.assign(new FakeImage(M), {
      extents: async () => {
        throw new Qcow2Error('CORRUPT', 'L1 entry 3: offset 0x123 is not cluster-aligned');
      },
    });
    const r = await run(['map', 'x'], fakeHost({ x: image }));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('qcow2: Could not read file metadata: L1 entry 3: offset 0x123 is not cluster-aligned\n');
  });
});
