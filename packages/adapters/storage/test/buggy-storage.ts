import { checkBytes, checkRange, checkSize, closedError, readOnlyError, type Storage } from '@qcow2/storage';

/**
 * A deliberately simple storage with switchable bugs, to prove that the conformance suite
 * notices each one. With no bugs it is correct.
 */
export type Bug =
  | 'read-count-ignores-eof'
  | 'read-clears-dst-tail'
  | 'close-does-nothing'
  | 'sync-throw-read-only'
  | 'negative-offset-reads-zero'
  | 'write-keeps-src'
  | 'truncate-keeps-stale-bytes'
  | 'discard-missing'
  | 'discard-extends'
  | 'racy-grow'
  | 'size-is-capacity'
  | 'dst-byte-offset-ignored'
  | 'zero-length-write-extends'
  | 'read-only-truncate-allowed'
  | 'closed-rejects-io';

export function createBuggyStorage(bugs: readonly Bug[], initial?: Uint8Array, readOnly = false): Storage {
  const has = (bug: Bug): boolean => bugs.includes(bug);
  let bytes = initial ? initial.slice() : new Uint8Array(0);
  let capacity = bytes.length;
  let closed = false;
  let pending: (() => void) | undefined;
  const settle = (): void => {
    pending?.();
    pending = undefined;
  };
  const open = (op: string): void => {
    settle();
    if (closed && !has('close-does-nothing')) {
      if (has('closed-rejects-io')) throw new Error(`${op}: closed`);
      throw closedError(`buggy: ${op}`);
    }
  };
  const writable = (op: string): void => {
    open(op);
    if (readOnly) throw readOnlyError(`buggy: ${op}`);
  };
  const resize = (size: number): void => {
    const next = new Uint8Array(Math.max(size, has('truncate-keeps-stale-bytes') ? bytes.length : 0));
    next.set(bytes.subarray(0, Math.min(next.length, bytes.length)));
    bytes = next;
  };
  let size = bytes.length;
  const grow = (end: number): void => {
    if (end > bytes.length) resize(end);
    if (end > size) size = end;
    capacity = Math.max(capacity, bytes.length);
  };

  const storage: Storage = {
    readOnly,
    canDiscard: true,
    async read(dst, offset) {
      open('read');
      checkBytes('buggy: read', dst);
      if (has('negative-offset-reads-zero') && offset < 0) return 0;
      checkRange('buggy: read', offset, dst.length);
      const count = offset >= size ? 0 : Math.min(dst.length, size - offset);
      const target = has('dst-byte-offset-ignored') ? new Uint8Array(dst.buffer, 0, dst.length) : dst;
      target.set(bytes.subarray(offset, offset + count));
      if (has('read-clears-dst-tail')) target.fill(0, count);
      return has('read-count-ignores-eof') && count > 0 ? dst.length : count;
    },
    async write(src, offset) {
      writable('write');
      checkBytes('buggy: write', src);
      checkRange('buggy: write', offset, src.length);
      if (src.length === 0) {
        if (has('zero-length-write-extends')) grow(offset);
        return;
      }
      const end = offset + src.length;
      if (has('racy-grow') && end > size) {
        // Captures the buffer before yielding, then installs a grown copy of the stale one.
        const before = bytes;
        await Promise.resolve();
        await Promise.resolve();
        const next = new Uint8Array(Math.max(end, bytes.length));
        next.set(before);
        next.set(src, offset);
        bytes = next;
        size = Math.max(size, end);
        return;
      }
      const apply = (): void => {
        grow(end);
        bytes.set(src, offset);
      };
      if (has('write-keeps-src')) {
        grow(end);
        pending = apply;
      } else {
        apply();
      }
    },
    async size() {
      open('size');
      return has('size-is-capacity') ? Math.max(size, capacity) : size;
    },
    async truncate(next) {
      if (!has('read-only-truncate-allowed')) writable('truncate');
      else open('truncate');
      checkSize('buggy: truncate', next);
      if (has('truncate-keeps-stale-bytes')) {
        if (next > bytes.length) resize(next);
      } else {
        resize(next);
      }
      size = next;
    },
    async flush() {
      open('flush');
    },
    async close() {
      settle();
      closed = true;
    },
  };
  if (!has('discard-missing')) {
    storage.discard = async (offset, length) => {
      writable('discard');
      checkRange('buggy: discard', offset, length);
      if (has('discard-extends') && offset + length > size) grow(offset + length);
      bytes.fill(0, offset, Math.min(size, offset + length));
    };
  }
  if (has('sync-throw-read-only') && readOnly) {
    storage.write = () => {
      throw readOnlyError('buggy: write');
    };
  }
  return storage;
}
