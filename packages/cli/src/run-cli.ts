import { main } from './main.js';

/** An error that escaped main (a bug): one line on stderr, exit status 1. */
function fatal(error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`qcow2: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
}

/**
 * process.stdout, made (and given its error handler) on the first output: making it loads
 * Node's stream modules, which a command that prints nothing (convert, create -q) does not need.
 */
let stdoutStream: NodeJS.WriteStream | undefined;
function stdout(): NodeJS.WriteStream {
  if (stdoutStream === undefined) {
    stdoutStream = process.stdout;
    // A closed pipe (`qcow2 map big.qcow2 | head`) ends the output quietly, as for C tools.
    stdoutStream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE') process.exit(0);
      fatal(error);
    });
  }
  return stdoutStream;
}

async function stdinLines(): Promise<string[]> {
  const { createInterface } = await import('node:readline'); // only `io` reads stdin: not loaded otherwise
  const lines: string[] = [];
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) lines.push(line);
  return lines;
}

let pending = '';
const flush = (): void => {
  if (pending !== '') {
    stdout().write(pending);
    pending = '';
  }
};

/**
 * The `qcow2` binary's body: main() over `argv` (process.argv after the script), the standard
 * streams (stdout buffered, stderr unbuffered) and stdin, process.exitCode set to its exit status.
 * An error that escapes it (a bug) is printed on one line, exit status 1, without a stack trace.
 */
export async function runCli(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  const code = await main(argv, {
    stdout: (text) => {
      pending += text;
      if (pending.length >= 1 << 16 || text.endsWith('\r')) flush();
    },
    stderr: (text) => {
      flush();
      process.stderr.write(text);
    },
    stdinLines,
  });
  flush();
  process.exitCode = code;
}
