/**
 * QEMU's QObject output, for `qemu-img info`: a QDict prints its keys in hash-bucket order
 * (qobject/qdict.c: tdb_hash(key) % 512, later insertions first within a bucket), not in
 * insertion order, so `"snapshots"` comes before `"virtual-size"`. Both the pretty JSON
 * (qobject/qjson.c) and the human "Format specific information" dump (block/qapi.c) walk that
 * order; both are reproduced here.
 */

/** A QObject: an int, a string, a bool, a list, or a dict whose key order is the insertion order. */
export type QValue = number | string | boolean | readonly QValue[] | QDict;
export interface QDict {
  readonly [key: string]: QValue | undefined;
}

const QDICT_BUCKET_MAX = 512;

/** qdict.c tdb_hash. */
export function qdictHash(key: string): number {
  const bytes = new TextEncoder().encode(key);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i += 1) {
    value = (value + ((((bytes[i] as number) << ((i * 5) % 24)) >>> 0) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** The keys of `dict` (undefined values left out) in the order qdict_first/qdict_next visit them. */
export function qdictOrder(dict: QDict): string[] {
  const keys = Object.keys(dict).filter((k) => dict[k] !== undefined);
  return keys
    .map((key, index) => ({ key, index, bucket: qdictHash(key) % QDICT_BUCKET_MAX }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((e) => e.key);
}

function isList(value: QValue): value is readonly QValue[] {
  return Array.isArray(value);
}

function isDict(value: QValue): value is QDict {
  return typeof value === 'object' && !Array.isArray(value);
}

/** qjson.c's string escaping: `\uXXXX` (upper-case hex) for controls and everything past ASCII. */
function quote(text: string): string {
  let out = '"';
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    switch (ch) {
      case '"':
        out += '\\"';
        break;
      case '\\':
        out += '\\\\';
        break;
      case '\b':
        out += '\\b';
        break;
      case '\f':
        out += '\\f';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      default:
        if (cp > 0xffff) {
          const hi = 0xd800 + ((cp - 0x10000) >> 10);
          const lo = 0xdc00 + ((cp - 0x10000) & 0x3ff);
          out += `\\u${hex4(hi)}\\u${hex4(lo)}`;
        } else if (cp < 0x20 || cp >= 0x7f) {
          out += `\\u${hex4(cp)}`;
        } else {
          out += ch;
        }
    }
  }
  return out + '"';
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

function scalar(value: number | string | boolean): string {
  if (typeof value === 'string') return quote(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return String(value);
}

/** qobject_to_json_pretty: four-space indents, `[` and `{` always followed by a line break. */
export function toJsonPretty(value: QValue, indent = 0): string {
  if (!isList(value) && !isDict(value)) return scalar(value);
  const pad = '    '.repeat(indent + 1);
  const items: string[] = isList(value)
    ? value.map((item) => `\n${pad}${toJsonPretty(item, indent + 1)}`)
    : qdictOrder(value).map((key) => `\n${pad}${quote(key)}: ${toJsonPretty(value[key] as QValue, indent + 1)}`);
  const [open, close] = isList(value) ? ['[', ']'] : ['{', '}'];
  return `${open}${items.join(',')}\n${'    '.repeat(indent)}${close}`;
}

/**
 * block/qapi.c dump_qobject: `key: value` lines (dashes in keys shown as spaces), lists as
 * `[0]: value`, nested containers one level (four spaces) deeper.
 */
export function dumpQObject(value: QValue, indentation: number): string {
  if (isList(value)) {
    let out = '';
    value.forEach((item, i) => {
      const composite = typeof item === 'object';
      out += `${'    '.repeat(indentation)}[${i}]:${composite ? '\n' : ' '}`;
      out += dumpQObject(item, indentation + 1);
      if (!composite) out += '\n';
    });
    return out;
  }
  if (isDict(value)) {
    let out = '';
    for (const key of qdictOrder(value)) {
      const item = value[key] as QValue;
      const composite = typeof item === 'object';
      out += `${'    '.repeat(indentation)}${key.replaceAll('-', ' ')}:${composite ? '\n' : ' '}`;
      out += dumpQObject(item, indentation + 1);
      if (!composite) out += '\n';
    }
    return out;
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return String(value);
}
