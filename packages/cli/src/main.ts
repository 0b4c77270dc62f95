import { version as packageVersion } from '../package.json';
import { benchCommand } from './commands/bench.js';
import { checkCommand } from './commands/check.js';
import { compareCommand } from './commands/compare.js';
import { convertCommand } from './commands/convert.js';
import { createCommand } from './commands/create.js';
import { infoCommand } from './commands/info.js';
import { ioCommand } from './commands/io.js';
import { mapCommand } from './commands/map.js';
import { snapshotCommand } from './commands/snapshot.js';
import { PROGRAM, type CliIo, type Context } from './context.js';
import { describeError, isCliError } from './errors.js';
import { getopt } from './getopt.js';
import { helpText, versionText } from './help-text.js';
import { createNodeHost } from './node-host.js';
import { usageError, checkGetopt } from './usage.js';

const VERSION: string = packageVersion;

type Command = (ctx: Context, argv: readonly string[]) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  bench: benchCommand,
  check: checkCommand,
  compare: compareCommand,
  convert: convertCommand,
  create: createCommand,
  info: infoCommand,
  io: ioCommand,
  map: mapCommand,
  snapshot: snapshotCommand,
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
  const ctx: Context = {
    out: (text) => io.stdout(text),
    err: (text) => io.stderr(text),
    host: io.host ?? createNodeHost(),
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
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (command === undefined) throw usageError(`Command not found: ${name}`);
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
