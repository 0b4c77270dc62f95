import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage, type Image } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

const CS = 4096;

/** Small images with every kind of cluster, written by the engine. */
async function baseImage(kind: number): Promise<Uint8Array> {
  const storage = createMemoryStorage();
  const extended = kind === 1;
  await writeFreshImage(storage, {
    size: 48 * (extended ? 16384 : CS),
    clusterBits: extended ? 14 : 12,
    extendedL2: extended,
    lazyRefcounts: kind === 2,
    refcountOrder: kind === 2 ? 0 : 4,
  });
  const image = await openImage(storage, { readOnly: false, discard: 'unmap' });
  const cs = extended ? 16384 : CS;
  await image.write(new Uint8Array(5 * cs + 100).fill(1), 700);
  await image.writeCompressed(new Uint8Array(cs).fill(2), 10 * cs);
  await image.writeCompressed(new Uint8Array(cs).fill(3), 11 * cs);
  await image.writeZeroes(2 * cs, cs + 512);
  await image.discard(4 * cs, cs);
  await image.write(new Uint8Array(cs).fill(4), 30 * cs);
  if (kind === 2) {
    // Left dirty, as a crash would leave it.
    await image.flush();
    return storage.snapshot();
  }
  await image.close();
  return storage.snapshot();
}

/** Byte ranges holding metadata: header, refcount table and block, L1 table, first L2 table. */
function metadataRanges(bytes: Uint8Array): [number, number][] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cs = 2 ** view.getUint32(20);
  const at = (offset: number): number => view.getUint32(offset) * 2 ** 32 + view.getUint32(offset + 4);
  const l1 = at(40);
  const table = at(48);
  const l2 = at(l1) % 2 ** 56 - ((at(l1) % 2 ** 56) % cs);
  const block = at(table);
  return [
    [0, 112],
    [table, 64],
    [block, 64],
    [l1, 64],
    [l2, Math.min(cs, 2048)],
  ].map(([start, length]) => [start!, Math.max(1, Math.min(length!, bytes.length - start!))] as [number, number]).filter(([start]) => start < bytes.length);
}

/** `bytes` with a few bytes changed, mostly in its metadata. */
function damaged(bytes: Uint8Array): fc.Arbitrary<Uint8Array> {
  const ranges = metadataRanges(bytes);
  const change = fc.record({
    range: fc.integer({ min: 0, max: ranges.length }),
    at: fc.nat(),
    value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0xff, 0x80, 0x01)),
  });
  return fc.array(change, { minLength: 1, maxLength: 6 }).map((changes) => {
    const out = bytes.slice();
    for (const c of changes) {
      const [start, length] = c.range < ranges.length ? ranges[c.range]! : [0, out.length];
      out[start + (c.at % length)] = c.value;
    }
    return out;
  });
}

async function settle<T>(promise: Promise<T>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('did not settle within 10 s')), 10_000);
  });
  try {
    await Promise.race([promise, timeout]);
  } catch (error) {
    if (!isQcow2Error(error)) throw new Error(`rejected with a non-Qcow2Error: ${String(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

describe('damaged images opened for writing', () => {
  it('open, write, zero, discard, compress, flush and close reject only with Qcow2Error and never hang', async () => {
    const bases = await Promise.all([0, 1, 2].map(baseImage));
    let opened = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 }).chain((k) => damaged(bases[k]!)),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), fc.nat(), fc.nat({ max: 3 * 16384 })), { minLength: 1, maxLength: 8 }),
        async (bytes, ops) => {
          const storage = createMemoryStorage({ initial: bytes });
          let image: Image | undefined;
          await settle(
            openImage(storage, { readOnly: false, discard: 'unmap' }).then((i) => {
              image = i;
            }),
          );
          if (image === undefined) return;
          opened++;
          const opened_ = image;
          for (const [kind, at, length] of ops) {
            const offset = opened_.virtualSize === 0 ? 0 : at % opened_.virtualSize;
            const n = Math.min(length, opened_.virtualSize - offset);
            const cs = opened_.clusterSize ?? CS;
            switch (kind) {
              case 0:
                await settle(opened_.write(new Uint8Array(n).fill(9), offset));
                break;
              case 1:
                await settle(opened_.writeZeroes(offset, n, { mayUnmap: at % 2 === 0 }));
                break;
              case 2:
                await settle(opened_.discard(offset, n));
                break;
              case 3:
                await settle(opened_.writeCompressed(new Uint8Array(cs).fill(7), offset - (offset % cs)));
                break;
              default:
                await settle(opened_.readBytes(offset, n));
            }
          }
          await settle(opened_.flush());
          await settle(opened_.close());
        },
      ),
      { numRuns: 300 },
    );
    // Most damaged images still open: the operations ran on them.
    expect(opened).toBeGreaterThan(100);
  });
});
