/**
 * The write side of the CLI without qemu and without the engine: qemu's option lists, the
 * Formatting line, `-o help`, qemu-io's write commands over a fake writable image, and bench -w's
 * flush scheduling.
 */
import { Qcow2Error } from '@qcow2/format';
import { describe, expect, it } from 'vitest';
import { createOptionsHelp, QCOW2_CREATE_OPTS } from '../src/create-opts.js';
import type { CliHost, ImageLike } from '../src/host.js';
import { hasHelpOption, isValidOptionList, QemuOpts, splitOptionList } from '../src/qemu-opts.js';
import { FakeImage, fakeHost, normalizeTimes, run } from './helpers.js';

describe('qemu option lists', () => {
  it('split on single commas, doubled commas are literal, bare names are flags', () => {
    expect(splitOptionList('a=1,b=x,,y,c,nod=2')).toEqual([
      { name: 'a', value: '1' },
      { name: 'b', value: 'x,y' },
      { name: 'c', value: undefined },
      { name: 'nod', value: '2' },
    ]);
    expect(splitOptionList('a=,b')).toEqual([
      { name: 'a', value: '' },
      { name: 'b', value: undefined },
    ]);
  });

  it('is_valid_option_list and has_help_option', () => {
    expect(isValidOptionList('a=1')).toBe(true);
    expect(isValidOptionList('a=1,,')).toBe(true);
    expect(isValidOptionList('a=1,')).toBe(false);
    expect(isValidOptionList('a=1,,,')).toBe(false);
    expect(isValidOptionList(',a=1')).toBe(false);
    expect(isValidOptionList('')).toBe(false);
    expect(hasHelpOption('cluster_size=4k,help')).toBe(true);
    expect(hasHelpOption('?')).toBe(true);
    expect(hasHelpOption('backing_file=help')).toBe(false);
  });

  it('check values as qemu does and print them in the list order with defaults', () => {
    const opts = new QemuOpts(QCOW2_CREATE_OPTS);
    opts.parse('refcount_bits=0x10,lazy_refcounts=yes,cluster_size=1.5k,backing_file=a,,b,noextended_l2,size=1M');
    expect(opts.get('refcount_bits')?.value).toBe(16n);
    expect(opts.get('lazy_refcounts')?.value).toBe(true);
    expect(opts.get('extended_l2')?.value).toBe(false);
    expect(opts.print()).toBe(
      'cluster_size=1536 extended_l2=off compression_type=zlib size=1048576 backing_file=a,,b lazy_refcounts=yes refcount_bits=16',
    );
    opts.set('refcount_bits', '-1');
    expect(opts.print()).toContain('refcount_bits=-1');
    const error = (list: string): [string, string | undefined] => {
      try {
        new QemuOpts(QCOW2_CREATE_OPTS).parse(list);
      } catch (e) {
        const cli = e as { message: string; hint?: string };
        return [cli.message, cli.hint];
      }
      return ['accepted', undefined];
    };
    expect(error('bogus=1')).toEqual(["Invalid parameter 'bogus'", undefined]);
    expect(error('lazy_refcounts=maybe')).toEqual(["Parameter 'lazy_refcounts' expects 'on' or 'off'", undefined]);
    expect(error('refcount_bits=1k')).toEqual(["Parameter 'refcount_bits' expects a number", undefined]);
    expect(error('cluster_size=x')[0]).toBe("Parameter 'cluster_size' expects a non-negative number below 2^64");
    expect(error('cluster_size=x')[1]).toBe('Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.\n');
  });

  it('-o help: the format options, sorted; with a file name the protocol ones too', () => {
    const plain = createOptionsHelp('qcow2', false);
    expect(plain.startsWith('Supported qcow2 options:\n  backing_file=<str>     - File name of a base image\n')).toBe(true);
    expect(plain.endsWith('\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n')).toBe(true);
    const withFile = createOptionsHelp('qcow2', true);
    expect(withFile).toContain('  extended_l2=<bool (on/off)> - Extended L2 tables\n  extent_size_hint=<size> - Extent size hint');
    expect(withFile).toContain('  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n  nocow=<bool (on/off)>  - Turn off');
  });
});

/** A FakeImage that takes writes into its bytes and records the calls. */
class WritableFake extends FakeImage {
  readonly readOnly = false;
  readonly calls: string[] = [];
  readonly #bytes: Uint8Array;
  constructor(size: number) {
    const bytes = new Uint8Array(size);
    super(bytes, { format: 'qcow2', clusterSize: 65536 });
    this.#bytes = bytes;
  }
  async write(src: Uint8Array, offset: number): Promise<void> {
    this.calls.push(`write ${offset} ${src.length} ${src[0]}`);
    this.#bytes.set(src, offset);
  }
  async writeZeroes(offset: number, length: number, options?: { mayUnmap?: boolean }): Promise<void> {
    this.calls.push(`zero ${offset} ${length}${options?.mayUnmap === true ? ' unmap' : ''}`);
    this.#bytes.fill(0, offset, offset + length);
  }
  async discard(offset: number, length: number): Promise<void> {
    this.calls.push(`discard ${offset} ${length}`);
  }
  async writeCompressed(src: Uint8Array, offset: number): Promise<void> {
    if (offset % 65536 !== 0) throw new Qcow2Error('INVALID_ARGUMENT', 'compressed write: offset not cluster-aligned');
    this.calls.push(`compressed ${offset} ${src.length}`);
    this.#bytes.set(src, offset);
  }
  async flush(): Promise<void> {
    this.calls.push('flush');
  }
}

describe('io write commands (fake writable image)', () => {
  const host = (image: ImageLike): CliHost => fakeHost({ 'x.qcow2': image });

  it('write, writev, write -z -u, write -c, discard, flush: the engine calls and qemu-io lines', async () => {
    const image = new WritableFake(1 << 20);
    const r = await run(
      ['io', '-t', 'writeback', '-c', 'write -P 0x11 0 4k', '-c', 'writev -P 2 4k 1k 1k', '-c', 'write -z -u 64k 64k', '-c', 'write -c 128k 64k', '-c', 'discard 0 64k', '-c', 'flush', '-c', 'write -f 8k 512', 'x.qcow2'],
      host(image),
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(image.calls).toEqual([
      'write 0 4096 17',
      'write 4096 2048 2',
      'zero 65536 65536 unmap',
      'compressed 131072 65536',
      'discard 0 65536',
      'flush',
      'write 8192 512 205',
      'flush',
    ]);
    expect(normalizeTimes(r.stdout)).toBe(
      [
        'wrote 4096/4096 bytes at offset 0',
        '4 KiB, 1 ops; TIME',
        'wrote 2048/2048 bytes at offset 4096',
        '2 KiB, 1 ops; TIME',
        'wrote 65536/65536 bytes at offset 65536',
        '64 KiB, 1 ops; TIME',
        'wrote 65536/65536 bytes at offset 131072',
        '64 KiB, 1 ops; TIME',
        'discard 65536/65536 bytes at offset 0',
        '64 KiB, 1 ops; TIME',
        'wrote 512/512 bytes at offset 8192',
        '512 bytes, 1 ops; TIME',
        '',
      ].join('\n'),
    );
  });

  it('writethrough (qemu-io default): a flush after every write', async () => {
    const image = new WritableFake(1 << 20);
    await run(['io', '-c', 'write 0 1', '-c', 'write -z 0 512', 'x.qcow2'], host(image));
    expect(image.calls).toEqual(['write 0 1 205', 'flush', 'zero 0 512', 'flush']);
  });

  it('failures: the engine error as errno text, out of range as EIO, exit 1', async () => {
    const image = new WritableFake(1 << 20);
    const r = await run(['io', '-t', 'none', '-c', 'write -c 4096 65536', '-c', 'write 1M 1', '-c', 'discard 1M 1', '-c', 'write 1M 0', 'x.qcow2'], host(image));
    expect(normalizeTimes(r.stdout)).toBe(
      'write failed: Invalid argument\nwrite failed: Input/output error\ndiscard failed: Input/output error\nwrote 0/0 bytes at offset 1048576\n0 bytes, 1 ops; TIME\n',
    );
    expect(r.code).toBe(1);
    expect(image.calls).toEqual([]);
  });

  it('a read-only image: write commands fail, flush does nothing', async () => {
    const r = await run(['io', '-c', 'write 0 1', '-c', 'flush', '-c', 'aio_write 0 1', 'x.qcow2'], host(new FakeImage(1 << 20)));
    expect(r.stderr).toBe('qcow2: Block node is read-only\nqcow2: Block node is read-only\n');
    expect(r.code).toBe(1);
  });
});

describe('bench -w (fake writable image)', () => {
  it('flush every N completed writes, draining the queue first (no write starts during a flush)', async () => {
    const image = new WritableFake(1 << 20);
    let inFlight = 0;
    let flushing = false;
    const overlaps: string[] = [];
    const write = image.write.bind(image);
    const flush = image.flush.bind(image);
    Object.assign(image, {
      write: async (src: Uint8Array, offset: number) => {
        if (flushing) overlaps.push(`write at ${offset} during a flush`);
        inFlight += 1;
        await new Promise((resolve) => setTimeout(resolve, 1));
        inFlight -= 1;
        await write(src, offset);
      },
      flush: async () => {
        if (inFlight > 0) overlaps.push(`flush with ${inFlight} writes in flight`);
        flushing = true;
        await new Promise((resolve) => setTimeout(resolve, 1));
        flushing = false;
        await flush();
      },
    });
    const r = await run(['bench', '-w', '-c', '12', '-d', '2', '-s', '4k', '--flush-interval=4', '--pattern=9', 'x.qcow2'], fakeHost({ 'x.qcow2': image }));
    expect(r.stderr).toBe('');
    expect(normalizeTimes(r.stdout)).toBe(
      'Sending 12 write requests, 4096 bytes each, 2 in parallel (starting at offset 0, step size 4096)\n' +
        'Sending flush every 4 requests\nRun completed in T seconds.\n',
    );
    expect(overlaps).toEqual([]);
    expect(image.calls.filter((c) => c === 'flush').length).toBe(3);
    expect(image.calls.filter((c) => c.startsWith('write')).every((c) => c.endsWith(' 9'))).toBe(true);
  });

  it('writethrough: each write is flushed before it completes; the run returns only once nothing is in flight', async () => {
    const image = new WritableFake(1 << 20);
    let active = 0;
    let unflushed = 0;
    let maxUnflushedAtFlush = 0;
    let completedBeforeFlush = 0;
    const write = image.write.bind(image);
    const flush = image.flush.bind(image);
    Object.assign(image, {
      write: async (src: Uint8Array, offset: number) => {
        active += 1;
        await new Promise((resolve) => setTimeout(resolve, 1));
        await write(src, offset);
        unflushed += 1;
        active -= 1;
      },
      flush: async () => {
        active += 1;
        maxUnflushedAtFlush = Math.max(maxUnflushedAtFlush, unflushed);
        unflushed = 0;
        await new Promise((resolve) => setTimeout(resolve, 2));
        await flush();
        active -= 1;
      },
    });
    const r = await run(
      ['bench', '-w', '-c', '7', '-d', '3', '-s', '4k', '-t', 'writethrough', '--flush-interval=3', '--no-drain', 'x.qcow2'],
      fakeHost({ 'x.qcow2': image }),
    );
    completedBeforeFlush = unflushed;
    expect(r.stderr).toBe('');
    expect(active).toBe(0);
    expect(completedBeforeFlush).toBe(0);
    expect(image.calls.filter((c) => c.startsWith('write')).length).toBe(7);
    // One flush per write, and the interval flushes on top.
    expect(image.calls.filter((c) => c === 'flush').length).toBeGreaterThan(7);
    expect(maxUnflushedAtFlush).toBeGreaterThan(0);
  });

  it('a failed flush ends the run with its message once the writes in flight have settled', async () => {
    const image = new WritableFake(1 << 20);
    let active = 0;
    const write = image.write.bind(image);
    Object.assign(image, {
      write: async (src: Uint8Array, offset: number) => {
        active += 1;
        await new Promise((resolve) => setTimeout(resolve, offset === 0 ? 1 : 5));
        await write(src, offset);
        active -= 1;
      },
      flush: async () => {
        throw new Error('disk gone');
      },
    });
    const r = await run(['bench', '-w', '-c', '8', '-d', '4', '-s', '4k', '--flush-interval=4', '--no-drain', 'x.qcow2'], fakeHost({ 'x.qcow2': image }));
    expect(r.stderr).toBe('qcow2: Failed flush request: disk gone\n');
    expect(r.code).toBe(1);
    expect(active).toBe(0);
  });

  it('a write past the end of the image: qemu 7.2\'s failed request', async () => {
    const image = new WritableFake(1 << 20);
    const r = await run(['bench', '-w', '-c', '3', '-s', '512k', '-S', '768k', 'x.qcow2'], fakeHost({ 'x.qcow2': image }));
    expect(r.stderr).toBe('qcow2: Failed request: Input/output error\n');
    expect(r.code).toBe(1);
  });
});
