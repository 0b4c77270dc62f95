import { version as packageVersion } from '../package.json';
import { PROGRAM, type CliIo, type Context } from './context.js';
import { CliError, describeError, isCliError } from './errors.js';
import { getopt } from './getopt.js';
import { helpText, versionText } from './help-text.js';
import type { CliHost } from './host.js';
import { usageError, checkGetopt } from './usage.js';

const VERSION: string = packageVersion;

type Command = (ctx: Context, argv: readonly string[]) => Promise<number>;

/**
 * The commands, each loaded when run: `qcow2 convert` does not parse or evaluate the code of
 * bench, check, io or snapshot (with the published build's code splitting, not even read it).
 */
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  bench: async () => (await import('./commands/bench.js')).benchCommand,
  check: async () => (await import('./commands/check.js')).checkCommand,
  compare: async () => (await import('./commands/compare.js')).compareCommand,
  convert: async () => (await import('./commands/convert.js')).convertCommand,
  create: async () => (await import('./commands/create.js')).createCommand,
  info: async () => (await import('./commands/info.js')).infoCommand,
  io: async () => (await import('./commands/io.js')).ioCommand,
  map: async () => (await import('./commands/map.js')).mapCommand,
  snapshot: async () => (await import('./commands/snapshot.js')).snapshotCommand,
};

/**
 * Runs the `qcow2` command line (`argv` without the program name) and resolves to the exit
 * status. Output goes through `io`; nothing is thrown: every failure becomes one
 * `qcow2: <message>` line on stderr.
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const report = (message: string): void => {
    for (const line of message.split('\n')) io.stderr(`${PROGRAM}: ${line}\n`);
  };
  // The Node host (and the engine under it) is loaded when a command needs it, not for --version.
  let host: CliHost | undefined = io.host;
  const ctx: Context = {
    out: (text) => io.stdout(text),
    err: (text) => io.stderr(text),
    get host(): CliHost {
      if (host === undefined) throw new CliError('internal error: the host is used before it is loaded');
      return host;
    },
    now: io.now ?? (() => performance.now() / 1000),
    stdinLines: io.stdinLines ?? (async () => []),
    report,
    help: () => {
      io.stdout(helpText(VERSION));
      return 0;
    },
  };
  try {
    const parsed = checkGetopt(
      getopt(argv, {
        short: ':hVT:',
        long: [
          { name: 'help', hasArg: false, id: 'h' },
          { name: 'version', hasArg: false, id: 'V' },
          { name: 'trace', hasArg: true, id: 'T' },
        ],
        stopAtOperand: true,
      }),
    );
    for (const { option } of parsed.options) {
      if (option === 'h') return ctx.help();
      if (option === 'V') {
        io.stdout(versionText(VERSION));
        return 0;
      }
      if (option === 'T') throw usageError('--trace is not supported');
    }
    const [name, ...rest] = parsed.operands;
    if (name === undefined) throw usageError('Not enough arguments');
    const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (load === undefined) throw usageError(`Command not found: ${name}`);
    const [command] = await Promise.all([
      load(),
      host === undefined ? import('./node-host.js').then((m) => (host = m.createNodeHost())) : undefined,
    ]);
    return await command(ctx, rest);
  } catch (error) {
    if (isCliError(error)) {
      report(error.message);
      if (error.hint !== undefined) io.stderr(error.hint);
      if (error.usage) io.stderr(`Try '${PROGRAM} --help' for more information\n`);
      return error.exitCode;
    }
    report(describeError(error));
    return 1;
  }
}
