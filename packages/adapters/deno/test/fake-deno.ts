import type { DenoFsFile, DenoNamespace, DenoOpenOptions } from '../src/deno-api.js';

/**
 * An in-memory stand-in for the part of the Deno namespace the adapter uses, to test under Node
 * what real files rarely do: short reads and writes, failing calls. Errors carry Deno's class
 * names (`NotFound`, `AlreadyExists`, …) as `name`, as Deno's do.
 */
export class FakeDenoError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

interface Node {
  data: Uint8Array;
  size: number;
  directory: boolean;
}

/** Largest offset a seek accepts, as ext4's 16 TiB limit. */
const MAX_SEEK = 2 ** 44;

export class FakeDeno implements DenoNamespace {
  readonly build = { os: 'linux' };
  readonly nodes = new Map<string, Node>([['/dir', { data: new Uint8Array(0), size: 0, directory: true }]]);
  /** Calls of interest, in order: `syncData /a`, `sync /dir`, `close /a`. */
  readonly calls: string[] = [];
  /** The most bytes one readSync/writeSync transfers (short transfers); a function for variety. */
  chunk: () => number = () => Number.MAX_SAFE_INTEGER;
  /** Make the next call of this method throw (once). */
  failNext: Partial<Record<'readSync' | 'writeSync' | 'truncateSync' | 'syncDataSync' | 'statSync' | 'seekSync' | 'syncSync', Error>> = {};
  /** writeSync returns 0 (a broken writer) when true. */
  writeZero = false;

  cwd(): string {
    return '/';
  }

  async open(path: string, options: DenoOpenOptions): Promise<DenoFsFile> {
    return this.openSync(path, options);
  }

  openSync(path: string, options: DenoOpenOptions): DenoFsFile {
    let node = this.nodes.get(path);
    if (options.createNew && node !== undefined) throw new FakeDenoError('AlreadyExists', `File exists (os error 17): open '${path}'`);
    if (node === undefined) {
      if (!options.create && !options.createNew) throw new FakeDenoError('NotFound', `No such file or directory (os error 2): open '${path}'`);
      if (!options.write) throw new FakeDenoError('InvalidData', 'create needs write');
      node = { data: new Uint8Array(0), size: 0, directory: false };
      this.nodes.set(path, node);
    }
    if (node.directory && options.write) throw new FakeDenoError('IsADirectory', `Is a directory (os error 21): open '${path}'`);
    if (options.truncate) node.size = 0;
    return new FakeFile(this, path, node, options.write === true);
  }

  fail(method: keyof FakeDeno['failNext']): void {
    const error = this.failNext[method];
    if (error !== undefined) {
      delete this.failNext[method];
      throw error;
    }
  }
}

class FakeFile implements DenoFsFile {
  #position = 0;
  #closed = false;
  readonly #deno: FakeDeno;
  readonly #path: string;
  readonly #node: Node;
  readonly #writable: boolean;

  constructor(deno: FakeDeno, path: string, node: Node, writable: boolean) {
    this.#deno = deno;
    this.#path = path;
    this.#node = node;
    this.#writable = writable;
  }

  #check(method: keyof FakeDeno['failNext']): void {
    if (this.#closed) throw new FakeDenoError('BadResource', 'Bad resource ID');
    this.#deno.fail(method);
  }

  readSync(p: Uint8Array): number | null {
    this.#check('readSync');
    if (p.length === 0) return 0;
    if (this.#position >= this.#node.size) return null;
    const n = Math.min(p.length, this.#node.size - this.#position, Math.max(1, this.#deno.chunk()));
    p.set(this.#node.data.subarray(this.#position, this.#position + n));
    this.#position += n;
    return n;
  }

  writeSync(p: Uint8Array): number {
    this.#check('writeSync');
    if (!this.#writable) throw new FakeDenoError('PermissionDenied', 'Bad file descriptor (os error 9)');
    if (this.#deno.writeZero) return 0;
    const n = Math.min(p.length, Math.max(1, this.#deno.chunk()));
    this.#resize(Math.max(this.#node.size, this.#position + n));
    this.#node.data.set(p.subarray(0, n), this.#position);
    this.#position += n;
    return n;
  }

  seekSync(offset: number | bigint, whence: number): number {
    this.#check('seekSync');
    if (whence !== 0) throw new Error('the fake seeks from the start only');
    const position = Number(offset);
    if (position > MAX_SEEK) throw new FakeDenoError('InvalidData', 'Invalid argument (os error 22)');
    this.#position = position;
    return position;
  }

  truncateSync(len = 0): void {
    this.#check('truncateSync');
    if (!this.#writable) throw new FakeDenoError('PermissionDenied', 'Invalid argument (os error 22)');
    this.#resize(len);
  }

  syncDataSync(): void {
    this.#check('syncDataSync');
    this.#deno.calls.push(`syncData ${this.#path}`);
  }

  syncSync(): void {
    this.#check('syncSync');
    this.#deno.calls.push(`sync ${this.#path}`);
  }

  statSync(): { size: number; isDirectory: boolean } {
    this.#check('statSync');
    return { size: this.#node.size, isDirectory: this.#node.directory };
  }

  close(): void {
    if (this.#closed) throw new FakeDenoError('BadResource', 'Bad resource ID');
    this.#closed = true;
    this.#deno.calls.push(`close ${this.#path}`);
  }

  #resize(size: number): void {
    const node = this.#node;
    if (size > node.data.length) {
      const next = new Uint8Array(Math.max(size, node.data.length * 2));
      next.set(node.data.subarray(0, node.size));
      node.data = next;
    } else if (size < node.size) {
      node.data.fill(0, size, node.size);
    }
    node.size = size;
  }
}
