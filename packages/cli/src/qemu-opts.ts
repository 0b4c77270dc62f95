import { CliError } from './errors.js';
import { strtosz } from './strtosz.js';

/**
 * qemu's QemuOpts (util/qemu-option.c, 7.2) as qemu-img create and convert use them for `-o`:
 * `key=value` pairs separated by commas (`,,` is a literal comma), a bare `key` meaning `on`
 * (`nokey`: `off`), values checked against the option's type as they are set, and the
 * "Formatting" line printed in the option list's order with defaults filled in.
 */

export type QemuOptType = 'string' | 'bool' | 'number' | 'size';

export interface QemuOptDesc {
  readonly name: string;
  readonly type: QemuOptType;
  /** The default printed when the option is not set (def_value_str). */
  readonly def?: string;
}

export interface QemuOpt {
  /** As given. */
  readonly str: string;
  /** bool: true/false; number and size: the unsigned 64-bit value; string: the string. */
  readonly value: boolean | bigint | string;
}

const U64 = 1n << 64n;

function boolValue(name: string, str: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(str)) return true;
  if (['off', 'no', 'false', 'n'].includes(str)) return false;
  throw new CliError(`Parameter '${name}' expects 'on' or 'off'`);
}

/** qemu_strtou64(value, NULL, 0): C integer syntax in any base, a leading '-' wrapping around. */
function numberValue(name: string, str: string): bigint {
  const match = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(str);
  if (match === null) throw new CliError(`Parameter '${name}' expects a number`);
  const digits = match[2] as string;
  let value = /^0[xX]/.test(digits) ? BigInt(digits) : digits.length > 1 && digits.startsWith('0') ? BigInt(`0o${digits.slice(1)}`) : BigInt(digits);
  if (value >= U64) throw new CliError(`Parameter '${name}' expects a number`);
  if (match[1] === '-') value = (U64 - value) % U64;
  return value;
}

function sizeValue(name: string, str: string): bigint {
  const r = strtosz(str);
  if (r.ok) return r.value;
  if (r.error === 'ERANGE') throw new CliError(`Value '${str}' is out of range for parameter '${name}'`);
  throw new CliError(`Parameter '${name}' expects a non-negative number below 2^64`, {
    hint: 'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.\n',
  });
}

/** The `name=value` items of an option list, commas doubled inside values undone. */
export function splitOptionList(list: string): { name: string; value: string | undefined }[] {
  const items: { name: string; value: string | undefined }[] = [];
  let i = 0;
  while (i < list.length) {
    let end = i;
    while (end < list.length && list[end] !== '=' && list[end] !== ',') end++;
    const name = list.slice(i, end);
    if (list[end] !== '=') {
      items.push({ name, value: undefined });
      i = end + 1;
      continue;
    }
    let value = '';
    let j = end + 1;
    for (; j < list.length; j++) {
      if (list[j] === ',') {
        if (list[j + 1] !== ',') break;
        j++;
      }
      value += list[j];
    }
    items.push({ name, value });
    i = j + 1;
  }
  return items;
}

/** qemu-img's is_valid_option_list: not empty, no leading comma, no unpaired trailing comma. */
export function isValidOptionList(list: string): boolean {
  if (list === '' || list.startsWith(',')) return false;
  let i = list.length;
  while (i > 0 && list[i - 1] === ',') i--;
  return (list.length - i) % 2 === 0;
}

/** has_help_option: `help` or `?` among the names. */
export function hasHelpOption(list: string): boolean {
  return splitOptionList(list).some((item) => item.value === undefined && (item.name === 'help' || item.name === '?'));
}

export class QemuOpts {
  readonly #desc: readonly QemuOptDesc[];
  readonly #values = new Map<string, QemuOpt>();

  constructor(desc: readonly QemuOptDesc[]) {
    this.#desc = desc;
  }

  /** qemu_opts_do_parse: sets each item in turn; the first bad one throws qemu's message. */
  parse(list: string): void {
    for (const item of splitOptionList(list)) {
      let { name, value } = item;
      if (value === undefined) {
        if (name.startsWith('no')) {
          name = name.slice(2);
          value = 'off';
        } else {
          value = 'on';
        }
      }
      this.set(name, value);
    }
  }

  /** qemu_opt_set: refuses an unknown name or a value its type does not accept. */
  set(name: string, str: string): void {
    const desc = this.#desc.find((d) => d.name === name);
    if (desc === undefined) throw new CliError(`Invalid parameter '${name}'`);
    let value: boolean | bigint | string;
    switch (desc.type) {
      case 'bool':
        value = boolValue(name, str);
        break;
      case 'number':
        value = numberValue(name, str);
        break;
      case 'size':
        value = sizeValue(name, str);
        break;
      default:
        value = str;
    }
    // A later setting replaces an earlier one (qemu_opt_find finds the last).
    this.#values.delete(name);
    this.#values.set(name, { str, value });
  }

  get(name: string): QemuOpt | undefined {
    return this.#values.get(name);
  }

  has(name: string): boolean {
    return this.#values.has(name);
  }

  /** qemu_opts_print(opts, " "): set options and defaults, in the list's order. */
  print(): string {
    const parts: string[] = [];
    for (const desc of this.#desc) {
      const opt = this.#values.get(desc.name);
      const str = opt?.str ?? desc.def;
      if (str === undefined) continue;
      if (desc.type === 'string') {
        parts.push(`${desc.name}=${str.replaceAll(',', ',,')}`);
      } else if ((desc.type === 'size' || desc.type === 'number') && opt !== undefined) {
        const u = opt.value as bigint;
        parts.push(`${desc.name}=${u >= 1n << 63n ? u - U64 : u}`);
      } else {
        parts.push(`${desc.name}=${str}`);
      }
    }
    return parts.join(' ');
  }
}
