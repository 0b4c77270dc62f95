/**
 * GNU getopt_long as qemu-img and qemu-io use it: short options clustered (`-Uf qcow2`,
 * `-fqcow2`), long options with `=` or a separate argument (`--output json`), unique prefixes of
 * long options (`--back` for `--backing-chain`), `--` ending the options, and operands
 * anywhere (argv is permuted) unless `stopAtOperand`.
 */

export interface LongOption {
  name: string;
  hasArg: boolean;
  /** What `GetoptItem.option` says for it: often a short option letter, else the long name. */
  id?: string;
}

export interface GetoptSpec {
  /** Short options, getopt style: `"f:hqU"` (a colon after a letter that takes an argument). */
  short: string;
  long?: readonly LongOption[];
  /** Stop at the first operand (getopt's `+`), as qemu-img's global options do. */
  stopAtOperand?: boolean;
}

export interface GetoptItem {
  option: string;
  arg?: string;
}

export type GetoptResult =
  | { ok: true; options: GetoptItem[]; operands: string[] }
  /** `text` is what qemu prints (argv[optind - 1]): `unrecognized option '-x'`. */
  | { ok: false; kind: 'unrecognized' | 'missing'; text: string };

function shortSpec(short: string, c: string): 'none' | 'arg' | undefined {
  if (c === ':' || c === '+' || c === '-') return undefined;
  const at = short.indexOf(c);
  if (at < 0) return undefined;
  return short[at + 1] === ':' ? 'arg' : 'none';
}

export function getopt(argv: readonly string[], spec: GetoptSpec): GetoptResult {
  const options: GetoptItem[] = [];
  const operands: string[] = [];
  const longs = spec.long ?? [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i] as string;
    if (arg === '--') {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const exact = longs.find((o) => o.name === name);
      const candidates = exact !== undefined ? [exact] : longs.filter((o) => o.name.startsWith(name));
      const found = candidates.length === 1 ? candidates[0] : undefined;
      if (found === undefined || name === '') return { ok: false, kind: 'unrecognized', text: arg };
      const id = found.id ?? found.name;
      if (found.hasArg) {
        if (eq >= 0) {
          options.push({ option: id, arg: arg.slice(eq + 1) });
        } else if (i + 1 < argv.length) {
          options.push({ option: id, arg: argv[i + 1] as string });
          i += 1;
        } else {
          return { ok: false, kind: 'missing', text: arg };
        }
      } else {
        if (eq >= 0) return { ok: false, kind: 'unrecognized', text: arg };
        options.push({ option: id });
      }
      i += 1;
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j += 1) {
        const c = arg[j] as string;
        const kind = shortSpec(spec.short, c);
        const last = j === arg.length - 1;
        if (kind === undefined) {
          // glibc has advanced optind only when the letter ends its argument.
          return { ok: false, kind: 'unrecognized', text: last ? arg : (argv[i - 1] ?? arg) };
        }
        if (kind === 'none') {
          options.push({ option: c });
          continue;
        }
        if (!last) {
          options.push({ option: c, arg: arg.slice(j + 1) });
        } else if (i + 1 < argv.length) {
          options.push({ option: c, arg: argv[i + 1] as string });
          i += 1;
        } else {
          return { ok: false, kind: 'missing', text: arg };
        }
        break;
      }
      i += 1;
      continue;
    }
    if (spec.stopAtOperand === true) {
      operands.push(...argv.slice(i));
      break;
    }
    operands.push(arg);
    i += 1;
  }
  return { ok: true, options, operands };
}
