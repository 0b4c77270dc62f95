import { defaultClientConditions, defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// One vitest run over every package's tests. The `@qcow2/source` export condition points each
// workspace package at its TypeScript sources, so nothing has to be built to be tested.
const source = '@qcow2/source';

export default defineConfig({
  resolve: { conditions: [source, ...defaultClientConditions] },
  ssr: { resolve: { conditions: [source, ...defaultServerConditions] } },
  test: {
    include: ['packages/**/test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: ['./scripts/vitest-setup.ts'],
    reporters: process.env['CI'] ? ['default'] : ['default'],
  },
});
