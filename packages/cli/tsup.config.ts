import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    platform: 'node',
  },
  {
    // The `qcow2` binary: a launcher (dist/cli.cjs) that runs the CLI bundled whole (dist/qcow2.cjs:
    // run-cli.ts with every @qcow2 package it uses, but the codecs below) from V8's code cache. CommonJS: Node
    // offers code caching for scripts it compiles through node:vm, not for ES modules (see bin.ts).
    entry: { cli: 'src/bin.ts' },
    format: ['cjs'],
    dts: false,
    sourcemap: false,
    target: 'node20',
    platform: 'node',
  },
  {
    entry: { qcow2: 'src/run-cli.ts' },
    format: ['cjs'],
    dts: false,
    sourcemap: false,
    target: 'node20',
    platform: 'node',
    // All but the compression codecs (pako, a zstd wasm build: a third of the bundle, for
    // compressed images only), which Node loads from @qcow2/compress when an image needs them.
    noExternal: [/^(?!@qcow2\/compress$)/],
    external: ['@qcow2/compress'],
    esbuildOptions(options) {
      // import() of a Node module becomes a require(): the bundle runs as a node:vm script.
      options.supported = { ...options.supported, 'dynamic-import': false };
    },
  },
]);
