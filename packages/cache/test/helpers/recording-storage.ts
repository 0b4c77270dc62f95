import { Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';

/**
 * A Storage over a growable Uint8Array that records every operation in order, can hold each
 * operation at a gate (a fast-check scheduler, or a manual latch) and can fail chosen calls.
 * Writes take effect when issued; reads copy when they complete; a flush makes durable every
 * write completed before it was issued.
 */

export type LogEvent =
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'write-issue'; id: number; offset: number; data: Uint8Array }
  | { kind: 'write-done'; id: number; offset: number }
  | { kind: 'flush-issue'; id: number }
  | { kind: 'flush-done'; id: number }
  | { kind: 'mark'; label: string; data?: unknown };

export type Operation = 'read' | 'write' | 'flush';

export interface RecordingStorageOptions {
  size?: number;
  readOnly?: boolean;
  /** Called before each operation completes; the operation waits for the returned promise. */
  gate?: (op: Operation, offset: number) => Promise<void>;
}

export class RecordingStorage implements Storage {
  readonly readOnly: boolean;
  readonly canDiscard = false;
  bytes: Uint8Array;
  length: number;
  readonly log: LogEvent[] = [];
  gate: ((op: Operation, offset: number) => Promise<void>) | undefined;
  /** The next `n` calls of an operation reject with an IO Qcow2Error. */
  readonly failures: Record<Operation, number> = { read: 0, write: 0, flush: 0 };
  /** Reads per offset, for "concurrent gets share one read". */
  readonly readsAt = new Map<number, number>();
  #ids = 0;

  constructor(options: RecordingStorageOptions = {}) {
    this.length = options.size ?? 0;
    this.bytes = new Uint8Array(Math.max(this.length, 4096));
    this.readOnly = options.readOnly ?? false;
    this.gate = options.gate;
  }

  mark(label: string, data?: unknown): void {
    this.log.push(data === undefined ? { kind: 'mark', label } : { kind: 'mark', label, data });
  }

  slice(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    out.set(this.bytes.subarray(offset, Math.min(offset + length, this.length)));
    return out;
  }

  #fail(op: Operation): Qcow2Error | undefined {
    if (this.failures[op] > 0) {
      this.failures[op]--;
      return new Qcow2Error('IO', `injected ${op} failure`);
    }
    return undefined;
  }

  async #wait(op: Operation, offset: number): Promise<void> {
    if (this.gate !== undefined) await this.gate(op, offset);
    else await Promise.resolve();
  }

  async read(dst: Uint8Array, offset: number): Promise<number> {
    const failure = this.#fail('read');
    await this.#wait('read', offset);
    if (failure) throw failure;
    this.log.push({ kind: 'read', offset, length: dst.length });
    this.readsAt.set(offset, (this.readsAt.get(offset) ?? 0) + 1);
    const n = Math.max(0, Math.min(dst.length, this.length - offset));
    dst.set(this.bytes.subarray(offset, offset + n));
    return n;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', 'read-only');
    const failure = this.#fail('write');
    const id = ++this.#ids;
    if (failure === undefined) {
      this.log.push({ kind: 'write-issue', id, offset, data: src.slice() });
      this.#ensure(offset + src.length);
      this.bytes.set(src, offset);
    }
    await this.#wait('write', offset);
    if (failure) throw failure;
    this.log.push({ kind: 'write-done', id, offset });
  }

  async flush(): Promise<void> {
    const failure = this.#fail('flush');
    const id = ++this.#ids;
    if (failure === undefined) this.log.push({ kind: 'flush-issue', id });
    await this.#wait('flush', -1);
    if (failure) throw failure;
    this.log.push({ kind: 'flush-done', id });
  }

  async size(): Promise<number> {
    return this.length;
  }

  async truncate(size: number): Promise<void> {
    this.#ensure(size);
    this.bytes.fill(0, size);
    this.length = size;
  }

  async close(): Promise<void> {}

  #ensure(end: number): void {
    if (end > this.bytes.length) {
      const grown = new Uint8Array(Math.max(end, this.bytes.length * 2));
      grown.set(this.bytes);
      this.bytes = grown;
    }
    if (end > this.length) this.length = end;
  }
}

/** A latch per operation: `open()` lets the held operations through. */
export class ManualGate {
  #held: (() => void)[] = [];
  closed = true;
  readonly gate = (_op: Operation, _offset: number): Promise<void> => {
    if (!this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => this.#held.push(resolve));
  };
  get pending(): number {
    return this.#held.length;
  }
  open(): void {
    this.closed = false;
    this.releaseAll();
  }
  releaseAll(): void {
    const held = this.#held;
    this.#held = [];
    for (const r of held) r();
  }
}
