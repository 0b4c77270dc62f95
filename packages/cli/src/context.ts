import type { CliHost } from './host.js';

/** Where a command's output goes, and what it may ask of the world. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** The images and files (default: the Node host over @qcow2/engine). */
  host?: CliHost;
  /** A monotonic clock in seconds (default: performance.now() / 1000). */
  now?: () => number;
  /** Commands for `qcow2 io` when no `-c` is given (default: none). */
  stdinLines?: () => Promise<readonly string[]>;
}

/** What every command receives. */
export interface Context {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly host: CliHost;
  readonly now: () => number;
  readonly stdinLines: () => Promise<readonly string[]>;
  /** `qcow2: <message>` on stderr, as qemu's error_report. */
  readonly report: (message: string) => void;
  /** Prints the usage text (for -h in a command) and returns exit code 0. */
  readonly help: () => number;
}

export const PROGRAM = 'qcow2';
