import { CliError } from './errors.js';
import type { GetoptResult } from './getopt.js';

/** qemu-img's error_exit: the message, then "Try 'qcow2 --help'", exit 1. */
export function usageError(message: string): CliError {
  return new CliError(message, { usage: true });
}

/** The options of a getopt result, or qemu-img's message for a bad one. */
export function checkGetopt(result: GetoptResult): Extract<GetoptResult, { ok: true }> {
  if (result.ok) return result;
  if (result.kind === 'missing') throw usageError(`missing argument for option '${result.text}'`);
  throw usageError(`unrecognized option '${result.text}'`);
}
