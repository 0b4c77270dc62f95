import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { checkImage, type CheckMessage } from '../src/index.js';
import { checkBytes, countsOf, exitOf, ourCounts, qemuImgCheck, stderrOf, writeBytes } from './check-fixtures.js';

const tmp = makeTempDir('qcow2-check-api-');
afterAll(() => tmp.cleanup());

/** A storage that counts what is asked of it. */
function spied(inner: Storage): { storage: Storage; calls: Record<string, number> } {
  const calls: Record<string, number> = { write: 0, truncate: 0, flush: 0, discard: 0 };
  const storage: Storage = {
    readOnly: inner.readOnly,
    canDiscard: false,
    read: (dst, offset) => inner.read(dst, offset),
    size: () => inner.size(),
    close: () => inner.close(),
    write: (src, offset) => {
      calls['write']!++;
      return inner.write(src, offset);
    },
    truncate: (n) => {
      calls['truncate']!++;
      return inner.truncate(n);
    },
    flush: () => {
      calls['flush']!++;
      return inner.flush();
    },
  };
  return { storage, calls };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

function u16(bytes: Uint8Array, at: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint16(at, value);
}

describeWithQemu('checkImage', () => {
  let clean: Uint8Array;
  let dirty: Uint8Array;
  beforeAll(() => {
    const file = join(tmp.dir, 'clean.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', file, '64M']);
    qemuIo(['-c', 'write -P 1 0 1M', '-c', 'write -c -P 2 2M 64k', file]);
    clean = new Uint8Array(readFileSync(file));
    const lazy = join(tmp.dir, 'dirty.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', lazy, '8M']);
    spawnSync('qemu-io', ['-c', 'write -P 3 0 128k', '-c', 'sigraise 9', lazy]);
    dirty = new Uint8Array(readFileSync(lazy));
  });

  it('reports a clean image as qemu-img check does (counts, no messages)', async () => {
    const { result } = await checkBytes(clean);
    const file = writeBytes(join(tmp.dir, 'clean-copy.qcow2'), clean);
    const qemu = qemuImgCheck(file, ['--output=json']);
    expect(ourCounts(result)).toEqual(countsOf(JSON.parse(qemu.stdout) as Record<string, unknown>));
    expect(result).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, totalClusters: 1024, allocatedClusters: 17, compressedClusters: 1 });
    expect(result.messages).toEqual([]);
    expect(result.failure).toBeUndefined();
    expect(result.repaired).toBeUndefined();
  });

  it('never writes, truncates or flushes without a repair, even a damaged image', async () => {
    const damaged = clean.slice();
    u16(damaged, 0x20000 + 5 * 2, 0); // refcount of a data cluster zeroed
    const { storage, calls } = spied(createMemoryStorage({ initial: damaged }));
    const result = await checkImage(storage);
    expect(result.corruptions).toBeGreaterThan(0);
    expect(calls).toEqual({ write: 0, truncate: 0, flush: 0, discard: 0 });
  });

  it('streams messages to onMessage in order (then keeps none), else collects them', async () => {
    const damaged = clean.slice();
    u16(damaged, 0x20000 + 6 * 2, 2); // leak
    u16(damaged, 0x20000 + 5 * 2, 0); // corruption
    const seen: CheckMessage[] = [];
    const streamed = await checkImage(createMemoryStorage({ initial: damaged, readOnly: true }), { onMessage: (m) => seen.push(m) });
    expect(streamed.messages).toEqual([]);
    expect(seen.map((m) => m.text)).toEqual([
      'ERROR cluster 5 refcount=0 reference=1',
      'Leaked cluster 6 refcount=2 reference=1',
      'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0',
      'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000060000 refcount=2',
    ]);
    const collected = await checkImage(createMemoryStorage({ initial: damaged, readOnly: true }));
    expect(collected.messages).toEqual(seen);
    expect(exitOf(collected)).toBe(2);
  });

  it('marks error_report lines (qemu-img: prefix) apart from plain ones', async () => {
    const damaged = clean.slice();
    new DataView(damaged.buffer).setUint32(64 + 4, 0x30200); // snapshots_offset not aligned
    const result = (await checkBytes(damaged)).result;
    expect(result.failure).toBe('Invalid argument');
    expect(result.messages).toEqual([{ text: 'ERROR snapshot table offset invalid', report: true }]);
  });

  it('-r leaks on a refcount of 0: "need to rebuild", the check fails (qemu: exit 1)', async () => {
    const damaged = clean.slice();
    u16(damaged, 0x20000 + 5 * 2, 0);
    const { result } = await checkBytes(damaged, 'leaks');
    expect(result.failure).toBe('Input/output error');
    expect(result.messages.at(-1)?.text).toBe('ERROR need to rebuild refcount structures');
  });

  it('-r all rebuilds the refcounts, checks again and leaves an image both checks find clean', async () => {
    const damaged = clean.slice();
    u16(damaged, 0x20000 + 5 * 2, 0);
    const { result, after } = await checkBytes(damaged, 'all');
    expect(result.repaired).toEqual({ leaks: 0, corruptions: 1 });
    expect(result).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 1 });
    expect(result.messages.map((m) => m.text)).toContain('Rebuilding refcount structure');
    const again = (await checkBytes(after)).result;
    expect(again.messages).toEqual([]);
    expect(again.repaired).toBeUndefined();
    const file = writeBytes(join(tmp.dir, 'rebuilt.qcow2'), after);
    expect(qemuImgCheck(file).code).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-q', join(tmp.dir, 'clean-copy.qcow2'), file]).status).toBe(0);
  });

  it('a dirty lazy-refcounts image: errors without repair; -r all repairs it and clears the dirty bit', async () => {
    const header = (bytes: Uint8Array): bigint => new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(72);
    expect(header(dirty) & 1n).toBe(1n);
    const file = writeBytes(join(tmp.dir, 'dirty-copy.qcow2'), dirty);
    const plain = (await checkBytes(dirty)).result;
    const qemu = qemuImgCheck(file, ['--output=json']);
    expect(ourCounts(plain)).toEqual(countsOf(JSON.parse(qemu.stdout) as Record<string, unknown>));
    expect(stderrOf(plain)).toBe(qemu.stderr);
    const { result, after } = await checkBytes(dirty, 'all');
    expect(result.repaired?.corruptions).toBeGreaterThan(0);
    expect(exitOf(result)).toBe(0);
    expect(header(after) & 1n).toBe(0n);
    expect(qemuImgCheck(writeBytes(join(tmp.dir, 'dirty-repaired.qcow2'), after)).code).toBe(0);
  });

  it('holds memory for the file, not the virtual disk: a 2 PiB disk with 64 KiB of data', async () => {
    const file = join(tmp.dir, 'huge.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', file, '2P']);
    qemuIo(['-c', 'write -P 1 1P 64k', file]);
    const bytes = new Uint8Array(readFileSync(file));
    const started = performance.now();
    const { result } = await checkBytes(bytes);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(result).toMatchObject({ corruptions: 0, leaks: 0, totalClusters: 2 ** 35, allocatedClusters: 1 });
    expect(ourCounts(result)).toEqual(countsOf(JSON.parse(qemuImgCheck(file, ['--output=json']).stdout) as Record<string, unknown>));
  });

  it('rejects with Qcow2Error: bad arguments, repair on read-only storage, images it cannot open', async () => {
    const cases: [Promise<unknown>, string][] = [
      [checkImage(null as unknown as Storage), 'INVALID_ARGUMENT'],
      [checkImage(createMemoryStorage({ initial: clean }), { repair: 'everything' as 'all' }), 'INVALID_ARGUMENT'],
      [checkImage(createMemoryStorage({ initial: clean }), { onMessage: 3 as unknown as () => void }), 'INVALID_ARGUMENT'],
      [checkImage(createMemoryStorage({ initial: clean, readOnly: true }), { repair: 'leaks' }), 'READ_ONLY'],
      [checkImage(createMemoryStorage({ initial: new Uint8Array(4096) })), 'CORRUPT'],
    ];
    const v4 = clean.slice();
    new DataView(v4.buffer).setUint32(4, 4);
    cases.push([checkImage(createMemoryStorage({ initial: v4 })), 'UNSUPPORTED']);
    for (const [promise, code] of cases) {
      const error = await rejection(promise);
      expect(isQcow2Error(error), String(error)).toBe(true);
      expect((error as { code: string }).code).toBe(code);
    }
  });
});
