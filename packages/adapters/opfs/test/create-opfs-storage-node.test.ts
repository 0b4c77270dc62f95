import { describe, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/storage';
import { createOpfsStorage, type OpfsStorageOptions } from '@qcow2/storage-opfs';

// Outside a browser: the clear errors, before anything is touched. The browser test checks the
// main-thread error in Chromium and the rest of the behaviour.

async function codeOf(promise: Promise<unknown>): Promise<[string, string]> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    return [(error as { code: string }).code, (error as Error).message];
  }
  throw new Error('expected a rejection');
}

describe('createOpfsStorage outside a browser', () => {
  it('rejects UNSUPPORTED: no sync access handles here', async () => {
    const [code, message] = await codeOf(createOpfsStorage('a.bin', { create: true }));
    expect(code).toBe('UNSUPPORTED');
    expect(message).toBe(
      'opfs storage a.bin: open: sync access handles exist only in dedicated workers of a browser, and this is neither',
    );
  });

  it.each<[OpfsStorageOptions, RegExp]>([
    [{ readOnly: true, create: true }, /create cannot be combined with readOnly/],
    [{ mode: 'read-only' }, /mode 'read-only' needs readOnly: true/],
    [{ mode: 'exclusive' as never }, /mode "exclusive" is not one of 'readwrite', 'read-only', 'readwrite-unsafe'/],
  ])('options %j reject INVALID_ARGUMENT', async (options, pattern) => {
    const [code, message] = await codeOf(createOpfsStorage('a.bin', options));
    expect(code).toBe('INVALID_ARGUMENT');
    expect(message).toMatch(pattern);
  });

  it('a bad path or argument rejects INVALID_ARGUMENT before the availability check', async () => {
    expect(await codeOf(createOpfsStorage('a/../b'))).toEqual(['INVALID_ARGUMENT', expect.stringContaining("uses '..'")]);
    expect(await codeOf(createOpfsStorage({} as FileSystemFileHandle))).toEqual([
      'INVALID_ARGUMENT',
      expect.stringContaining('expected a path or a FileSystemFileHandle'),
    ]);
  });
});
