import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { getCodec, jsZlibCodec, jsZstdCodec } from '../src/index.js';
import { getCodec as getNodeCodec, nodeZlibCodec } from '../src/node.js';

describe('getCodec', () => {
  test('maps compression_type and names to codecs', () => {
    expect(getCodec(0)).toBe(jsZlibCodec);
    expect(getCodec('zlib')).toBe(jsZlibCodec);
    expect(getCodec(1)).toBe(jsZstdCodec);
    expect(getCodec('zstd')).toBe(jsZstdCodec);
    expect(getNodeCodec(0)).toBe(nodeZlibCodec);
    expect(getNodeCodec(1)).toBe(jsZstdCodec);
    for (const codec of [jsZlibCodec, jsZstdCodec, nodeZlibCodec]) {
      expect(getCodec(codec.compressionType).type).toBe(codec.type);
    }
  });

  test('any other compression_type is UNSUPPORTED, naming it', () => {
    for (const type of [2, 255, -1, 0.5]) {
      let error: unknown;
      try {
        getCodec(type);
      } catch (e) {
        error = e;
      }
      expect(isQcow2Error(error) && error.code === 'UNSUPPORTED').toBe(true);
      expect((error as Error).message).toMatch(/compression_type/);
    }
  });

  test('compress rejects with Qcow2Error on an empty cluster', async () => {
    for (const codec of [jsZlibCodec, jsZstdCodec, nodeZlibCodec]) {
      await expect(codec.compress(new Uint8Array(0))).rejects.toSatisfy(
        (e: unknown) => isQcow2Error(e) && e.code === 'INVALID_ARGUMENT',
      );
    }
  });
});

// The universal entry must not pull in Node built-ins: check the source graph it imports.
describe('the universal entry', () => {
  test('no file reachable from src/index.ts imports node:*', () => {
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      expect(text, file).not.toMatch(/from ['"]node:|import\(['"]node:|require\(/);
      for (const m of text.matchAll(/from '\.\/([\w-]+)\.js'/g)) visit(join(file, '..', `${m[1]}.ts`));
    };
    visit(join(__dirname, '../src/index.ts'));
    expect(seen.size).toBeGreaterThan(8);
    expect([...seen].some((f) => f.includes('node'))).toBe(false);
  });

  test('Node resolves the package name to the node:zlib fast path (import and require)', () => {
    if (!existsSync(join(__dirname, '../dist/node.js'))) return; // needs the build, as above
    const cwd = join(__dirname, '..');
    const esm = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('@qcow2/compress'); console.log(m.getCodec(0).implementation)"],
      { cwd, encoding: 'utf8' },
    );
    const cjs = execFileSync(process.execPath, ['-e', "console.log(require('@qcow2/compress').getCodec('zlib').implementation)"], {
      cwd,
      encoding: 'utf8',
    });
    expect([esm.trim(), cjs.trim()]).toEqual(['node:zlib', 'node:zlib']);
  });

  test('the built CommonJS entry loads the ESM-only wasm encoder on demand', () => {
    const built = join(__dirname, '../dist/index.cjs');
    if (!existsSync(built)) return; // covered once the package is built (npm test builds first)
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `const c = require(${JSON.stringify(built)}); const d = new Uint8Array(4096).fill(7);
         c.jsZstdCodec.compress(d).then((z) => { const o = new Uint8Array(4096); c.jsZstdCodec.decompress(z, o);
         console.log(z.length < 100 && o.every((b) => b === 7)); });`,
      ],
      { encoding: 'utf8' },
    );
    expect(out.trim()).toBe('true');
  });
});
