import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { makeTempDir } from '@qcow2/test-utils';
import { runDenoScript } from './deno-harness.js';

// What only the real Deno can show: its own error classes mapped to Qcow2Error codes, permission
// refusals, and files that Node reads back byte for byte.
const tmp = makeTempDir('qcow2-deno-runtime-');
afterAll(() => tmp.cleanup());

interface Outcome {
  code?: string;
  message?: string;
  causeName?: string;
  branded?: boolean;
  value?: unknown;
}

const script = `
import { isQcow2Error } from '@qcow2/storage';
import { createDenoStorage } from '@qcow2/storage-deno';

const [dir, outside] = Deno.args;
async function outcome(body) {
  try {
    return { value: await body() };
  } catch (error) {
    return { code: error.code, message: error.message, causeName: error.cause?.name, branded: isQcow2Error(error) };
  }
}
const out = {};
out.missing = await outcome(() => createDenoStorage(dir + '/missing.bin'));
out.directory = await outcome(() => createDenoStorage(dir, { readOnly: true }));
out.outsidePermissions = await outcome(() => createDenoStorage(outside, { readOnly: true }));
out.readOnlyWrite = await outcome(async () => {
  const s = await createDenoStorage(dir + '/from-node.bin', { readOnly: true });
  try {
    await s.write(new Uint8Array(1), 0);
  } finally {
    await s.close();
  }
});
out.fromNode = await outcome(async () => {
  const s = await createDenoStorage(dir + '/from-node.bin', { readOnly: true });
  const dst = new Uint8Array(8);
  const n = await s.read(dst, 4);
  await s.close();
  return [n, ...dst];
});
out.written = await outcome(async () => {
  const s = await createDenoStorage(dir + '/from-deno.bin', { create: true });
  // Many calls in flight at once on one file: each seek + transfer runs without yielding.
  await Promise.all(Array.from({ length: 64 }, (_, i) => s.write(new Uint8Array(1000).fill(i + 1), i * 1000)));
  const back = await Promise.all(Array.from({ length: 64 }, async (_, i) => {
    const dst = new Uint8Array(1000);
    await s.read(dst, i * 1000);
    return dst.every((b) => b === i + 1);
  }));
  await s.write(Uint8Array.of(0xab), (1 << 20) - 1);
  await s.flush();
  await s.close();
  return back.every(Boolean);
});
console.log(JSON.stringify(out));
`;

describe('deno storage: in the real Deno runtime', () => {
  it('maps Deno errors, honours permissions, and writes files Node reads back', async () => {
    writeFileSync(join(tmp.dir, 'from-node.bin'), Uint8Array.from({ length: 10 }, (_, i) => i + 1));
    const outsideDir = makeTempDir('qcow2-deno-outside-');
    onTestFinished(() => outsideDir.cleanup());
    const outside = join(outsideDir.dir, 'secret.bin');
    writeFileSync(outside, 'x');
    const { result } = await runDenoScript<Record<string, Outcome>>({ script, allow: [tmp.dir], args: [tmp.dir, outside] });

    expect(result['missing']).toMatchObject({ code: 'NOT_FOUND', causeName: 'NotFound', branded: true });
    expect(result['missing']?.message).toContain(`deno storage: open ${tmp.dir}/missing.bin failed: NotFound`);
    expect(result['directory']).toMatchObject({ code: 'IO', branded: true });
    expect(result['directory']?.message).toContain('it is a directory');
    // Deno 2 refuses a path outside --allow-read with NotCapable: not a missing file, so 'IO'.
    expect(result['outsidePermissions']).toMatchObject({ code: 'IO', causeName: 'NotCapable', branded: true });
    expect(result['readOnlyWrite']).toMatchObject({ code: 'READ_ONLY', branded: true });
    expect(result['fromNode']).toEqual({ value: [6, 5, 6, 7, 8, 9, 10, 0, 0] });
    expect(result['written']).toEqual({ value: true });

    const written = readFileSync(join(tmp.dir, 'from-deno.bin'));
    expect(written.length).toBe(1 << 20);
    for (let i = 0; i < 64; i++) expect(written[i * 1000 + 999]).toBe(i + 1);
    expect(written[64_000]).toBe(0);
    expect(written[(1 << 20) - 1]).toBe(0xab);
  });
});
