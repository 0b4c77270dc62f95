import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isQcow2Error, type Qcow2Error, type Storage } from '@qcow2/storage';
import { createNodeResolver, type NodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

// root/
//   images/top.qcow2, images/base.img ("base"), images/sub/deep.img ("deep"), images/a:b.img ("colon")
//   images/escape.img -> ../outside.img (symlink)
//   outside.img ("outside")
const tmp = makeTempDir('qcow2-node-resolver-');
afterAll(() => tmp.cleanup());
const root = realpathSync(tmp.dir);
const images = join(root, 'images');
mkdirSync(join(images, 'sub'), { recursive: true });
writeFileSync(join(images, 'top.qcow2'), 'top');
writeFileSync(join(images, 'base.img'), 'base');
writeFileSync(join(images, 'sub', 'deep.img'), 'deep');
writeFileSync(join(images, 'a:b.img'), 'colon');
writeFileSync(join(root, 'outside.img'), 'outside');
symlinkSync('../outside.img', join(images, 'escape.img'));
const top = join(images, 'top.qcow2');

async function contents(storage: Storage): Promise<string> {
  const dst = new Uint8Array(64);
  const n = await storage.read(dst, 0);
  await storage.close();
  return new TextDecoder().decode(dst.subarray(0, n));
}

async function refusal(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

describe('createNodeResolver: resolution', () => {
  it('resolves a relative name against the directory of the image that names it', async () => {
    const resolve = createNodeResolver();
    expect(await contents(await resolve('base.img', top))).toBe('base');
    expect(await contents(await resolve('sub/deep.img', top))).toBe('deep');
    expect(await contents(await resolve('../base.img', join(images, 'sub', 'deep.img')))).toBe('base');
  });

  it('follows a chain: the next name resolves against the directory of the previous file', async () => {
    const resolve = createNodeResolver({ baseDir: images });
    const first = (await resolve('sub/deep.img', top)) as NodeStorage;
    expect(first.path).toBe(join(images, 'sub', 'deep.img'));
    await first.close();
    expect(await contents(await resolve('../base.img', first.path))).toBe('base');
  });

  it('without from, resolves against baseDir (or the current directory)', async () => {
    expect(await contents(await createNodeResolver({ baseDir: images })('base.img', undefined))).toBe('base');
    const fromCwd = relative(process.cwd(), join(images, 'base.img'));
    expect(await contents(await createNodeResolver()(fromCwd, undefined))).toBe('base');
  });

  it("opens read-only by default; readOnly: false opens for writing", async () => {
    const ro = await createNodeResolver()('base.img', top);
    expect(ro.readOnly).toBe(true);
    expect((await refusal(ro.write(Uint8Array.of(1), 0))).code).toBe('READ_ONLY');
    await ro.close();
    const rw = await createNodeResolver({ readOnly: false })('base.img', top);
    expect(rw.readOnly).toBe(false);
    await rw.close();
  });

  it("a missing backing file rejects 'NOT_FOUND' (with and without baseDir)", async () => {
    expect((await refusal(createNodeResolver()('nope.img', top))).code).toBe('NOT_FOUND');
    const e = await refusal(createNodeResolver({ baseDir: images })('nope.img', top));
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('nope.img');
  });
});

describe('createNodeResolver: policy', () => {
  it("refuses absolute names by default with 'UNSUPPORTED', naming the option", async () => {
    const e = await refusal(createNodeResolver()(join(images, 'base.img'), top));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toBe(
      `backing file ${JSON.stringify(join(images, 'base.img'))} named by ${top}: absolute names are refused (pass allowAbsolute: true to accept them)`,
    );
    expect(await contents(await createNodeResolver({ allowAbsolute: true })(join(images, 'base.img'), top))).toBe('base');
  });

  it('confines names to baseDir: .. and absolute names outside it are refused', async () => {
    const resolve = createNodeResolver({ baseDir: images, allowAbsolute: true });
    const up = await refusal(resolve('../outside.img', top));
    expect(up.code).toBe('UNSUPPORTED');
    expect(up.message).toContain(`resolves to ${join(root, 'outside.img')}, outside baseDir ${images}`);
    expect((await refusal(resolve(join(root, 'outside.img'), top))).code).toBe('UNSUPPORTED');
    expect(await contents(await resolve(join(images, 'base.img'), top))).toBe('base');
    // Without baseDir, .. is allowed, as in qemu.
    expect(await contents(await createNodeResolver()('../outside.img', top))).toBe('outside');
  });

  it('refuses a symbolic link inside baseDir that leads out of it', async () => {
    const e = await refusal(createNodeResolver({ baseDir: images })('escape.img', top));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/symbolic link to .*outside\.img, outside baseDir/);
    expect(await contents(await createNodeResolver()('escape.img', top))).toBe('outside');
  });

  it('refuses protocol names unless allowed; file: is stripped, other allowed protocols are literal names', async () => {
    const resolve = createNodeResolver();
    for (const name of ['nbd://host:10809/export', 'json:{"driver":"file"}', 'file:base.img', 'a:b.img', 'http://x/y']) {
      const e = await refusal(resolve(name, top));
      expect(e.code, name).toBe('UNSUPPORTED');
      expect(e.message, name).toMatch(/protocol '[^']+:' is not allowed \(allowProtocols: \[\]\)/);
    }
    const permissive = createNodeResolver({ allowProtocols: ['file', 'a'] });
    expect(await contents(await permissive('file:base.img', top))).toBe('base');
    expect(await contents(await permissive('a:b.img', top))).toBe('colon');
    expect((await refusal(permissive('nbd://host/export', top))).code).toBe('UNSUPPORTED');
    // A '/' before the ':' means no protocol, as in qemu.
    expect(await contents(await resolve('./a:b.img', top))).toBe('colon');
  });

  it("refuses file: with an absolute path unless allowAbsolute", async () => {
    const resolve = createNodeResolver({ allowProtocols: ['file'] });
    expect((await refusal(resolve(`file:${join(images, 'base.img')}`, top))).code).toBe('UNSUPPORTED');
  });

  it("rejects an empty name or one containing NUL with 'INVALID_ARGUMENT'", async () => {
    const resolve = createNodeResolver();
    expect((await refusal(resolve('', top))).code).toBe('INVALID_ARGUMENT');
    expect((await refusal(resolve('base.img\0x', top))).code).toBe('INVALID_ARGUMENT');
    expect((await refusal(createNodeResolver({ allowProtocols: ['file'] })('file:', top))).code).toBe('INVALID_ARGUMENT');
  });
});
