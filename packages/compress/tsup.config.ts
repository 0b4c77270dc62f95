import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/node.ts'],
  format: ['esm', 'cjs'],
  // node.ts needs Node's types to compile; its declarations mention none of them.
  dts: { compilerOptions: { types: ['node'] } },
  clean: true,
  sourcemap: true,
  target: 'es2022',
  platform: 'neutral',
  // Node built-ins stay imports (only the ./node entry has them); the zstd encoder's wasm
  // package stays a separate, lazily imported dependency.
  external: [/^node:/, '@hpcc-js/wasm-zstd', 'pako'],
});
