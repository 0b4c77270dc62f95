import { describe, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/storage';
import { opfsError } from '../src/opfs-error.js';
import { splitOpfsPath } from '../src/opfs-path.js';

describe('opfsError: DOMException names to Qcow2Error codes', () => {
  it.each([
    ['NotFoundError', 'NOT_FOUND', 'no such file or directory (NotFoundError: m)'],
    [
      'NoModificationAllowedError',
      'IO',
      "another handle has it open (NoModificationAllowedError: m); close that handle first, or open every handle with mode 'read-only' or 'readwrite-unsafe'",
    ],
    ['SecurityError', 'UNSUPPORTED', 'the browser refuses the origin private file system to this context (SecurityError: m)'],
    ['QuotaExceededError', 'IO', 'the storage quota of this origin is exhausted (QuotaExceededError: m)'],
    ['TypeMismatchError', 'IO', 'a directory and a file are mixed up along the path (TypeMismatchError: m)'],
    ['InvalidStateError', 'IO', 'failed (InvalidStateError: m)'],
    ['NotReadableError', 'IO', 'failed (NotReadableError: m)'],
  ])('%s → %s', (name, code, message) => {
    const cause = new DOMException('m', name);
    const e = opfsError('opfs storage a/b: open', cause, true);
    expect(isQcow2Error(e)).toBe(true);
    expect(e.code).toBe(code);
    expect(e.message).toBe(`opfs storage a/b: open: ${message}`);
    expect(e.cause).toBe(cause);
  });

  it('NoModificationAllowedError after opening: the handle refuses the change', () => {
    const e = opfsError('x: write', new DOMException('m', 'NoModificationAllowedError'));
    expect([e.code, e.message]).toEqual(['IO', 'x: write: the handle refuses the change (NoModificationAllowedError: m)']);
  });

  it('a non-Error value is described, code IO', () => {
    const e = opfsError('x: read', 'boom');
    expect(e.code).toBe('IO');
    expect(e.message).toBe('x: read: failed (boom)');
  });
});

describe('splitOpfsPath', () => {
  it.each([
    ['a', ['a']],
    ['/a', ['a']],
    ['vm/disks/disk.qcow2', ['vm', 'disks', 'disk.qcow2']],
    ['/vm/a b:c.img', ['vm', 'a b:c.img']],
    ['...', ['...']],
  ])('%j → %j', (path, names) => {
    expect(splitOpfsPath(path)).toEqual(names);
  });

  it.each(['', '/', 'a//b', 'a/', './a', 'a/../b', '..', 'a\\b', 'a\0b'])('%j is refused with INVALID_ARGUMENT', (path) => {
    let error: unknown;
    try {
      splitOpfsPath(path);
    } catch (e) {
      error = e;
    }
    expect(isQcow2Error(error)).toBe(true);
    expect((error as { code: string }).code).toBe('INVALID_ARGUMENT');
    expect((error as Error).message).toContain(`opfs storage: path ${JSON.stringify(path)}`);
  });

  it('a non-string is refused', () => {
    expect(() => splitOpfsPath(3 as unknown as string)).toThrow(/is not a string/);
  });
});
