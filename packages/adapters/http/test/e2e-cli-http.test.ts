import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The CLI's in-process entry (resolved through the workspace root: @qcow2/cli depends on this
// package, so this package cannot list it back without a dependency cycle).
import { main } from '@qcow2/cli';
import { describeWithQemu, makeTempDir, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { startRangeServer, type RangeServer } from './range-server.js';

// `qcow2` over HTTP: an operand starting with http:// or https:// is opened read-only with
// createHttpStorage; info and convert answer as qemu-img does for the same file on disk.

const tmp = makeTempDir('qcow2-cli-http-');
const MiB = 1024 * 1024;

async function qcow2(argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

/** qemu-img info fields that do not depend on where the file is (its name, its disk usage). */
function placeless(info: Record<string, unknown>): Record<string, unknown> {
  const { filename: _f, 'actual-size': _a, 'full-backing-filename': _b, children: _c, ...rest } = info;
  return rest;
}

describeWithQemu('qcow2 CLI over HTTP', () => {
  let server: RangeServer;
  const file = (name: string): string => join(tmp.dir, name);
  const url = (name: string): string => `${server.origin}/img/${name}`;

  beforeAll(async () => {
    // x.qcow2: data, a pattern, zeroes, compressed clusters. top.qcow2: an overlay naming base x.qcow2 relatively.
    const raw = new Uint8Array(6 * MiB);
    for (let i = 0; i < 2 * MiB; i++) raw[i] = (i * 2654435761) >>> 24;
    raw.fill(0x11, 3 * MiB, 3 * MiB + 100_000);
    writeFileSync(file('x.raw'), raw);
    qemuImg(['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=16384', file('x.raw'), file('x.qcow2')]);
    qemuIo(['-f', 'qcow2', '-c', `write -c -P 0x5a ${4 * MiB} 64k`, '-c', `write -z ${MiB} 32k`, file('x.qcow2')]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'x.qcow2', '-F', 'qcow2', file('top.qcow2')]);
    qemuIo(['-f', 'qcow2', '-c', `write -P 0x77 ${5 * MiB + 512} 4096`, file('top.qcow2')]);
    // An image from the network naming a local file as its backing: must not be followed.
    qemuImg(['create', '-q', '-f', 'qcow2', '-u', '-b', `file://${file('x.raw')}`, '-F', 'raw', file('evil.qcow2'), '6M']);
    server = await startRangeServer();
    for (const name of ['x.qcow2', 'top.qcow2', 'evil.qcow2']) server.add(`/img/${name}`, new Uint8Array(readFileSync(file(name))));
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  describe('qcow2 info http://127.0.0.1:PORT/x.qcow2', () => {
    it('--output=json: the fields qemu-img info gives for the file on disk, but its name and disk usage', async () => {
      const r = await qcow2(['info', '--output=json', url('x.qcow2')]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const ours = JSON.parse(r.stdout) as Record<string, unknown>;
      expect(ours['filename']).toBe(url('x.qcow2'));
      expect(placeless(ours)).toEqual(placeless(qemuInfo(file('x.qcow2'))));
    });

    it('human output: the same lines as qemu-img info, but the image name and disk size', async () => {
      const r = await qcow2(['info', url('x.qcow2')]);
      expect(r.code).toBe(0);
      const keep = (text: string): string[] => text.split('\n').filter((l) => !/^(image|disk size):/.test(l));
      expect(r.stdout).toMatch(new RegExp(`^image: ${url('x.qcow2').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n`));
      expect(keep(r.stdout)).toEqual(keep(qemuImg(['info', file('x.qcow2')])));
    });

    it('an overlay over HTTP names its backing file, opened at the URL relative to it', async () => {
      const r = await qcow2(['info', '--output=json', '--backing-chain', url('top.qcow2')]);
      expect(r.stderr).toBe('');
      const chain = JSON.parse(r.stdout) as Record<string, unknown>[];
      const qemu = JSON.parse(qemuImg(['info', '--output=json', '--backing-chain', file('top.qcow2')])) as Record<string, unknown>[];
      expect(chain.map((i) => i['filename'])).toEqual([url('top.qcow2'), url('x.qcow2')]);
      expect(chain.map(placeless)).toEqual(qemu.map(placeless));
    });

    it('a missing URL fails with one qemu-style line naming it', async () => {
      const r = await qcow2(['info', url('missing.qcow2')]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`^qcow2: Could not open '${url('missing.qcow2').replace(/[.?]/g, '\\$&')}': .*404.*\n$`));
    });
  });

  describe('qcow2 convert -O raw http://… out.raw', () => {
    it('equals qemu-img convert -O raw of the file', async () => {
      const r = await qcow2(['convert', '-O', 'raw', url('x.qcow2'), file('ours.raw')]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      qemuImg(['convert', '-O', 'raw', file('x.qcow2'), file('qemu.raw')]);
      expect(Buffer.compare(readFileSync(file('ours.raw')), readFileSync(file('qemu.raw')))).toBe(0);
    });

    it('through a backing chain over HTTP too', async () => {
      const r = await qcow2(['convert', '-O', 'raw', url('top.qcow2'), file('ours-top.raw')]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      qemuImg(['convert', '-O', 'raw', file('top.qcow2'), file('qemu-top.raw')]);
      expect(Buffer.compare(readFileSync(file('ours-top.raw')), readFileSync(file('qemu-top.raw')))).toBe(0);
    });

    it('qcow2 compare of the URL and the file on disk: identical', async () => {
      const r = await qcow2(['compare', url('top.qcow2'), file('top.qcow2')]);
      expect(r).toEqual({ code: 0, stdout: 'Images are identical.\n', stderr: '' });
    });

    it('refuses to follow a local (file:) backing file named by an image read over HTTP', async () => {
      const r = await qcow2(['convert', '-O', 'raw', url('evil.qcow2'), file('evil.raw')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/only http and https URLs are opened from an image read over HTTP/);
    });
  });

  describe('opened read-only', () => {
    it('qcow2 io reads over HTTP, and a write fails as on a read-only image', async () => {
      const r = await qcow2(['io', '-c', `read -P 0x5a ${4 * MiB} 64k`, '-c', 'write -P 1 0 512', url('x.qcow2')]);
      expect(r.stdout).toMatch(/^read 65536\/65536 bytes at offset 4194304\n/);
      expect(r.stderr).toBe('qcow2: Block node is read-only\n');
    });
  });
});
