#!/usr/bin/env node
import { main } from './main.js';

/** The `qcow2` binary: main() over process.argv and the standard streams. */

function fatal(error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`qcow2: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
}

process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);
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

const code = await main(process.argv.slice(2), {
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
