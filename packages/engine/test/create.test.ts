/**
 * createImage without qemu: for arbitrary option sets the new image passes the engine's own
 * qemu-style check (no error, no leak), opens with the options it was made with and reads as
 * zeros; qemu's refusals come with qemu's words and the INVALID_ARGUMENT code; bad arguments
 * are refused with Qcow2Errors only.
 */
import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { checkImage, createImage, openImage, planCreate, type CreateOptions } from '../src/index.js';

const MiB = 1 << 20;

async function rejection(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    const e = error as { code: string; message: string };
    return { code: e.code, message: e.message };
  }
  throw new Error('expected a rejection');
}

const optionSets = fc
  .record({
    clusterBits: fc.integer({ min: 9, max: 21 }),
    v2: fc.boolean(),
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    extendedL2: fc.boolean(),
    lazyRefcounts: fc.boolean(),
    zstd: fc.boolean(),
    preallocation: fc.constantFrom('off', 'metadata', 'falloc', 'full'),
    sectors: fc.integer({ min: 0, max: 24 * 1024 }),
  })
  .map((r): CreateOptions => {
    const v3 = !r.v2;
    const options: CreateOptions = {
      size: r.sectors * 512,
      clusterSize: 2 ** r.clusterBits,
      compat: v3 ? '1.1' : '0.10',
      refcountBits: v3 ? 2 ** r.refcountOrder : 16,
      preallocation: r.preallocation as 'off',
    };
    if (v3 && r.extendedL2 && r.clusterBits >= 14) options.extendedL2 = true;
    if (v3 && r.lazyRefcounts) options.lazyRefcounts = true;
    if (v3 && r.zstd) options.compressionType = 'zstd';
    return options;
  });

describe('createImage', () => {
  it('makes images the check finds clean, that open with their options and read as zeros', async () => {
    await fc.assert(
      fc.asyncProperty(optionSets, fc.nat(), async (options, probe) => {
        const storage = createMemoryStorage();
        await createImage(storage, options);
        const check = await checkImage(storage);
        expect(check).toMatchObject({ checkErrors: 0, corruptions: 0, leaks: 0 });
        const size = options.size ?? 0;
        const cs = options.clusterSize ?? 65536;
        if (options.preallocation !== 'off') expect(check.allocatedClusters).toBe(Math.ceil(size / cs));
        const image = await openImage(storage);
        expect(image.virtualSize).toBe(size);
        expect(image.clusterSize).toBe(cs);
        expect(image.dirty).toBe(false);
        expect(image.formatSpecific).toMatchObject({
          compat: options.compat,
          'refcount-bits': options.refcountBits,
          'compression-type': options.compressionType ?? 'zlib',
          ...(options.compat === '1.1' ? { 'lazy-refcounts': options.lazyRefcounts === true, 'extended-l2': options.extendedL2 === true } : {}),
        });
        if (size > 0) {
          const at = (probe % size) - ((probe % size) % 512);
          const bytes = await image.readBytes(at, Math.min(4096, size - at));
          expect(bytes.every((b) => b === 0)).toBe(true);
        }
        await image.close();
      }),
      { numRuns: 60 },
    );
  });

  it('refuses what qemu refuses, with its words, first failure first', () => {
    const refusal = (options: CreateOptions, size = MiB): string => {
      try {
        planCreate(options, size);
      } catch (error) {
        expect(isQcow2Error(error) && error.code).toBe('INVALID_ARGUMENT');
        return (error as Error).message;
      }
      return 'accepted';
    };
    const v3 = '(use version=v3 or greater)';
    expect(refusal({}, 1000)).toBe('Image size must be a multiple of 512 bytes');
    expect(refusal({ clusterSize: 3000 })).toBe('Cluster size must be a power of two between 512 and 2048k');
    expect(refusal({ clusterSize: 4 * MiB })).toBe('Cluster size must be a power of two between 512 and 2048k');
    expect(refusal({ clusterSize: 8192, extendedL2: true })).toBe('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
    expect(refusal({ compat: '0.10', extendedL2: true, clusterSize: 8192 })).toBe(
      `Extended L2 entries are only supported with compatibility level 1.1 and above ${v3}`,
    );
    for (const bits of [0, 3, 128]) expect(refusal({ refcountBits: bits })).toBe('Refcount width must be a power of two and may not exceed 64 bits');
    expect(refusal({ compat: '0.10', refcountBits: 8 })).toBe(
      `Different refcount widths than 16 bits require compatibility level 1.1 or above ${v3}`,
    );
    expect(refusal({ compat: '0.10', lazyRefcounts: true })).toBe(`Lazy refcounts only supported with compatibility level 1.1 and above ${v3}`);
    expect(refusal({ compat: '0.10', dataFile: 'd.raw' })).toBe(`External data files are only supported with compatibility level 1.1 and above ${v3}`);
    expect(refusal({ compat: '0.10', compressionType: 'zstd' })).toBe(
      `Non-zlib compression type is only supported with compatibility level 1.1 and above ${v3}`,
    );
    expect(refusal({ dataFileRaw: true })).toBe('data-file-raw requires data-file');
    expect(refusal({ dataFileRaw: true, dataFile: 'd', backingFile: 'b' })).toBe('Backing file and data-file-raw cannot be used at the same time');
    expect(refusal({ preallocation: 'metadata', backingFile: 'b' })).toBe(
      'Backing file and preallocation can only be used at the same time if extended_l2 is on',
    );
    expect(refusal({ backingFormat: 'raw' })).toBe('Backing format cannot be used without backing file');
    expect(refusal({ compat: '0.9' as '1.1', preallocation: 'bogus' as 'off' })).toBe("Parameter 'version' does not accept value '0.9'");
    expect(refusal({ preallocation: 'bogus' as 'off', compressionType: 'lz4' as 'zstd' })).toBe(
      "Parameter 'preallocation' does not accept value 'bogus'",
    );
    expect(refusal({ preallocation: 'metadata', backingFile: 'b', extendedL2: true })).toBe('accepted');
    expect(refusal({ dataFileRaw: true, dataFile: 'd', preallocation: 'off' })).toBe('accepted');
    expect(planCreate({ dataFileRaw: true, dataFile: 'd' }, MiB).preallocation).toBe('metadata');
  });

  it('refuses an image whose L1 table would exceed 32 MiB as qemu-img does', async () => {
    const r = await rejection(createImage(createMemoryStorage(), { size: 129 * 1024 * MiB, clusterSize: 512 }));
    expect(r).toEqual({ code: 'UNSUPPORTED', message: "The image size is too large for file format 'qcow2' (try using a larger cluster size)" });
  });

  it('takes the size from the backing file (rounded up to 512 bytes)', async () => {
    const base = createMemoryStorage();
    await base.write(new Uint8Array(3000), 0);
    const files: Record<string, Storage> = { 'dir/base.raw': base };
    const storage = createMemoryStorage();
    await createImage(storage, {
      name: 'dir/top.qcow2',
      backingFile: 'base.raw',
      backingFormat: 'raw',
      resolver: async (name, from) => {
        expect(from).toBe('dir/top.qcow2');
        const s = files[`dir/${name}`];
        if (s === undefined) throw new Error(`no ${name}`);
        return s;
      },
    });
    const image = await openImage(storage, { backing: false });
    expect(image.virtualSize).toBe(3072);
    expect(image.backingFile).toBe('base.raw');
    expect(image.backingFormat).toBe('raw');
    await image.close();
  });

  it('creates and sizes the external data file, and closes it', async () => {
    const data = createMemoryStorage();
    let closed = 0;
    const storage = createMemoryStorage();
    await createImage(storage, {
      size: 5 * MiB,
      dataFile: 'disk.raw',
      dataFileRaw: true,
      openDataFile: async (name) => {
        expect(name).toBe('disk.raw');
        return new Proxy(data, {
          get: (target, key) => {
            if (key === 'close') return async () => void (closed += 1);
            const value: unknown = Reflect.get(target, key, target);
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
      },
    });
    expect(await data.size()).toBe(5 * MiB);
    expect(closed).toBe(1);
  });

  it('refuses bad arguments with Qcow2Errors', async () => {
    const s = createMemoryStorage;
    expect((await rejection(createImage(s(), {}))).message).toBe('Image creation needs a size parameter');
    expect((await rejection(createImage(s(), { size: -512 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), { size: 1.5 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), { size: 2 ** 60 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), { size: MiB, clusterSize: '64k' as unknown as number }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), { size: MiB, lazyRefcounts: 'yes' as unknown as boolean }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), { backingFile: 'b.raw' }))).code).toBe('NOT_FOUND');
    expect((await rejection(createImage(s(), { size: MiB, dataFile: 'd.raw' }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s({ readOnly: true }), { size: MiB }))).code).toBe('READ_ONLY');
    expect((await rejection(createImage(null as unknown as Storage, { size: MiB }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(createImage(s(), null as unknown as CreateOptions))).code).toBe('INVALID_ARGUMENT');
  });

  it('a backing file name that does not fit the header cluster: qemu-img words', async () => {
    const r = await rejection(createImage(createMemoryStorage(), { size: MiB, clusterSize: 512, backingFile: 'x'.repeat(500), backingFormat: 'raw' }));
    expect(r.message).toBe(`Could not assign backing file '${'x'.repeat(500)}' with format 'raw': No space left on device`);
  });
});
