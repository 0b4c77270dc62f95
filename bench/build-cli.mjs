// Builds the `qcow2` binary from the workspace sources the way packages/cli/tsup.config.ts builds
// the published one: a CommonJS launcher (cli.cjs, from src/bin.ts) that runs the CLI bundled
// whole (qcow2.cjs, from src/run-cli.ts) from V8's code cache. One difference: @qcow2/compress
// (which the published bundle leaves to Node to load from node_modules, for compressed images
// only) is bundled in too, from its Node entry. Returns the path of cli.cjs.
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** esbuild (it comes with tsup, a root devDependency) and the options that bundle workspace sources. */
export function workspaceBundler(format) {
  const esbuild = createRequire(createRequire(join(root, 'package.json')).resolve('tsup'))('esbuild');
  const common = {
    bundle: true,
    platform: 'node',
    format,
    target: 'node20',
    conditions: ['@qcow2/source'],
    // What Node gets from the published packages: @qcow2/compress's Node entry (node:zlib).
    alias: { '@qcow2/compress': join(root, 'packages/compress/src/node.ts') },
    logLevel: 'error',
  };
  return { esbuild, common };
}

export async function buildCli(outdir) {
  const { esbuild, common } = workspaceBundler('cjs');
  await esbuild.build({ ...common, entryPoints: [join(root, 'packages/cli/src/bin.ts')], outfile: join(outdir, 'cli.cjs') });
  await esbuild.build({
    ...common,
    supported: { 'dynamic-import': false },
    entryPoints: [join(root, 'packages/cli/src/run-cli.ts')],
    outfile: join(outdir, 'qcow2.cjs'),
  });
  return join(outdir, 'cli.cjs');
}
