import { readFileSync, statSync, writeFileSync, openSync, closeSync, ftruncateSync, writeSync, fsyncSync, fstatSync } from 'node:fs';
import { Qcow2Error } from '@qcow2/format';
import { main } from '../src/main.js';
import type { CliHost, ImageExtent, ImageFormat, ImageLike, ImageSnapshot, OutputFile } from '../src/host.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs main() in-process with captured output. */
export async function run(argv: readonly string[], host?: CliHost, stdin: readonly string[] = []): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    ...(host === undefined ? {} : { host }),
    stdinLines: async () => stdin,
  });
  return { code, stdout, stderr };
}

export interface FakeImageOptions {
  format?: ImageFormat;
  clusterSize?: number;
  backingFile?: string;
  backingFormat?: string;
  backing?: ImageLike;
  snapshots?: ImageSnapshot[];
  formatSpecific?: Record<string, unknown>;
  dirty?: boolean;
  /** Explicit layout; default: one data extent over the whole image. */
  extents?: ImageExtent[];
  snapshotViews?: Record<string, ImageLike>;
}

/** An in-memory image: bytes plus a declared extent layout. */
export class FakeImage implements ImageLike {
  readonly format: ImageFormat;
  readonly virtualSize: number;
  readonly clusterSize: number | undefined;
  readonly backingFile: string | undefined;
  readonly backingFormat: string | undefined;
  readonly backing: ImageLike | undefined;
  readonly snapshots: readonly ImageSnapshot[];
  readonly formatSpecific: Record<string, unknown> | undefined;
  readonly dirty: boolean;
  closed = 0;
  readonly #bytes: Uint8Array;
  readonly #extents: ImageExtent[];
  readonly #views: Record<string, ImageLike>;

  /** `bytes`, or a size for an image that reads as zeros without holding them. */
  constructor(content: Uint8Array | number, options: FakeImageOptions = {}) {
    const bytes = typeof content === 'number' ? undefined : content;
    this.#bytes = bytes ?? new Uint8Array(0);
    this.format = options.format ?? 'raw';
    this.virtualSize = bytes?.length ?? (content as number);
    this.clusterSize = options.clusterSize;
    this.backingFile = options.backingFile;
    this.backingFormat = options.backingFormat;
    this.backing = options.backing;
    this.snapshots = options.snapshots ?? [];
    this.formatSpecific = options.formatSpecific;
    this.dirty = options.dirty ?? false;
    this.#extents =
      options.extents ??
      (this.virtualSize === 0 ? [] : [{ offset: 0, length: this.virtualSize, kind: 'data', depth: 0, hostOffset: 0 }]);
    this.#views = options.snapshotViews ?? {};
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (offset < 0 || offset + dst.length > this.virtualSize) {
      throw new Qcow2Error('INVALID_ARGUMENT', `read of ${dst.length} bytes at ${offset} past the end`);
    }
    dst.fill(0);
    if (offset < this.#bytes.length) dst.set(this.#bytes.subarray(offset, Math.min(offset + dst.length, this.#bytes.length)));
  }

  async extents(offset: number, length: number): Promise<ImageExtent[]> {
    const end = offset + length;
    const out: ImageExtent[] = [];
    for (const e of this.#extents) {
      const s = Math.max(e.offset, offset);
      const t = Math.min(e.offset + e.length, end);
      if (t <= s) continue;
      const cut: ImageExtent = { ...e, offset: s, length: t - s };
      if (e.hostOffset !== undefined) cut.hostOffset = e.hostOffset + (s - e.offset);
      out.push(cut);
    }
    return out;
  }

  /** All the bytes, for assertions. */
  readSync(): Uint8Array {
    const out = new Uint8Array(this.virtualSize);
    out.set(this.#bytes.subarray(0, this.virtualSize));
    return out;
  }

  async openSnapshot(idOrName: string): Promise<ImageLike> {
    const view = this.#views[idOrName];
    if (view === undefined) throw new Qcow2Error('NOT_FOUND', `snapshot ${idOrName} not found`);
    return view;
  }

  async close(): Promise<void> {
    this.closed += 1;
  }
}

/** An output file in memory. */
export class MemoryOutput implements OutputFile {
  bytes = new Uint8Array(0);
  written = 0;
  async write(src: Uint8Array, offset: number): Promise<void> {
    if (offset + src.length > this.bytes.length) await this.truncate(offset + src.length);
    this.bytes.set(src, offset);
    this.written += src.length;
  }
  async size(): Promise<number> {
    return this.bytes.length;
  }
  async truncate(size: number): Promise<void> {
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/** A host over named in-memory images and outputs. */
export function fakeHost(images: Record<string, ImageLike | (() => ImageLike)>, outputs: Record<string, MemoryOutput> = {}): CliHost {
  return {
    async openImage(filename) {
      const entry = images[filename];
      if (entry === undefined) throw new Qcow2Error('NOT_FOUND', `Could not open '${filename}': No such file or directory`);
      return typeof entry === 'function' ? entry() : entry;
    },
    async allocatedSize() {
      return 196 * 1024;
    },
    async createImage(filename) {
      throw new Qcow2Error('UNSUPPORTED', `fake host: cannot create ${filename}`);
    },
    async openOutput(filename, { create }) {
      let out = outputs[filename];
      if (out === undefined) {
        if (!create) throw new Qcow2Error('NOT_FOUND', `Could not open '${filename}': No such file or directory`);
        out = new MemoryOutput();
        outputs[filename] = out;
      } else if (create) {
        await out.truncate(0);
      }
      return out;
    },
  };
}

/**
 * A host that reads raw files from disk (a few lines of "engine" for the raw format), so the
 * commands can be compared with qemu-img -f raw / qemu-io -f raw before @qcow2/engine exists.
 */
export function rawFileHost(): CliHost {
  return {
    async openImage(filename, options) {
      if (options.format !== undefined && options.format !== 'raw') {
        throw new Qcow2Error('UNSUPPORTED', 'rawFileHost opens raw files only');
      }
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(readFileSync(filename));
      } catch (error) {
        throw new Qcow2Error('NOT_FOUND', `Could not open '${filename}': No such file or directory`, { cause: error });
      }
      return new FakeImage(bytes, { format: 'raw' });
    },
    async allocatedSize(filename) {
      return statSync(filename).blocks * 512;
    },
    async createImage(filename) {
      throw new Qcow2Error('UNSUPPORTED', `raw file host: cannot create ${filename}`);
    },
    async openOutput(filename, { create }) {
      const fd = openSync(filename, create ? 'w' : 'r+');
      return {
        async write(src, offset) {
          writeSync(fd, src, 0, src.length, offset);
        },
        async size() {
          return fstatSync(fd).size;
        },
        async truncate(size) {
          ftruncateSync(fd, size);
        },
        async flush() {
          fsyncSync(fd);
        },
        async close() {
          closeSync(fd);
        },
      };
    },
  };
}

/** Replaces qemu-io's timing numbers, which differ run to run. */
export function normalizeTimes(text: string): string {
  return text
    .replace(/; \d\d\.\d\d sec \([^)]*\)/g, '; TIME')
    .replace(/; \d+:\d\d:\d\d\.\d\d \([^)]*\)/g, '; TIME')
    .replace(/^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[\d.]+,[\d.]+$/gm, '$1,$2,TIME')
    .replace(/Run completed in [\d.]+ seconds\./g, 'Run completed in T seconds.');
}

export function writeBytes(path: string, bytes: Uint8Array): void {
  writeFileSync(path, bytes);
}

/** True when @qcow2/engine can be imported (it is being written in parallel). */
export async function engineAvailable(): Promise<boolean> {
  try {
    const specifier = '@qcow2/engine';
    const mod = (await import(specifier)) as { openImage?: unknown };
    return typeof mod.openImage === 'function';
  } catch {
    return false;
  }
}
