import type { ImageLike, ImageSnapshot } from './host.js';
import { padLeft, padRight } from './c-format.js';
import { pathCombine } from './path-combine.js';
import { dumpQObject, type QDict, type QValue } from './qobject.js';
import { sizeToStr } from './size-to-str.js';

/** qemu's ImageInfo (qapi/block-core.json), built for one file as `qemu-img info` does. */
export interface ImageInfo {
  filename: string;
  format: string;
  dirtyFlag: boolean;
  actualSize?: number;
  virtualSize: number;
  clusterSize?: number;
  backingFilename?: string;
  fullBackingFilename?: string;
  backingFilenameFormat?: string;
  snapshots: readonly ImageSnapshot[];
  formatSpecific?: { type: string; data: QDict };
}

/** ImageInfoSpecificQCow2's members in schema order (the QDict insertion order qemu's visitor uses). */
const QCOW2_SPECIFIC_ORDER = [
  'compat',
  'data-file',
  'data-file-raw',
  'extended-l2',
  'lazy-refcounts',
  'corrupt',
  'refcount-bits',
  'encrypt',
  'bitmaps',
  'compression-type',
];

/** Qcow2BitmapInfo's members in schema order. */
const BITMAP_ORDER = ['name', 'granularity', 'flags'];

function ordered(record: Record<string, unknown>, order: readonly string[]): Record<string, unknown> {
  const keys = Object.keys(record).sort((a, b) => rank(order, a) - rank(order, b));
  const out: Record<string, unknown> = {};
  for (const key of keys) out[key] = record[key];
  return out;
}

function rank(order: readonly string[], key: string): number {
  const at = order.indexOf(key);
  return at < 0 ? order.length : at;
}

/** Turns the engine's format-specific record into a QObject (dropping what JSON cannot carry). */
function toQValue(value: unknown, order?: readonly string[]): QValue | undefined {
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) {
    return value.map((item) => toQValue(item, BITMAP_ORDER)).filter((item): item is QValue => item !== undefined);
  }
  if (typeof value === 'object' && value !== null) {
    const source = order === undefined ? (value as Record<string, unknown>) : ordered(value as Record<string, unknown>, order);
    const dict: Record<string, QValue> = {};
    for (const [key, item] of Object.entries(source)) {
      const q = toQValue(item);
      if (q !== undefined) dict[key] = q;
    }
    return dict;
  }
  return undefined;
}

export function collectImageInfo(image: ImageLike, filename: string, actualSize: number | undefined): ImageInfo {
  const info: ImageInfo = {
    filename,
    format: image.format,
    dirtyFlag: image.dirty,
    virtualSize: image.format === 'raw' ? Math.ceil(image.virtualSize / 512) * 512 : image.virtualSize,
    snapshots: image.snapshots,
  };
  if (actualSize !== undefined) info.actualSize = actualSize;
  if (image.clusterSize !== undefined) info.clusterSize = image.clusterSize;
  if (image.backingFile !== undefined) {
    info.backingFilename = image.backingFile;
    info.fullBackingFilename = pathCombine(filename, image.backingFile);
  }
  if (image.backingFormat !== undefined) info.backingFilenameFormat = image.backingFormat;
  if (image.formatSpecific !== undefined) {
    const data = toQValue(image.formatSpecific, QCOW2_SPECIFIC_ORDER);
    if (data !== undefined && typeof data === 'object' && !Array.isArray(data)) {
      info.formatSpecific = { type: image.format, data: data as QDict };
    }
  }
  return info;
}

function snapshotQDict(s: ImageSnapshot): QDict {
  const dict: Record<string, QValue> = {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSize,
    'date-sec': s.dateSec,
    'date-nsec': s.dateNsec,
    'vm-clock-sec': Math.floor(s.vmClockNsec / 1e9),
    'vm-clock-nsec': s.vmClockNsec % 1e9,
  };
  if (s.icount !== undefined) dict['icount'] = s.icount;
  return dict;
}

/** The QDict qemu's visitor builds for an ImageInfo (insertion in schema order). */
export function imageInfoQDict(info: ImageInfo): QDict {
  const dict: Record<string, QValue> = {
    filename: info.filename,
    format: info.format,
    'dirty-flag': info.dirtyFlag,
  };
  if (info.actualSize !== undefined) dict['actual-size'] = info.actualSize;
  dict['virtual-size'] = info.virtualSize;
  if (info.clusterSize !== undefined) dict['cluster-size'] = info.clusterSize;
  if (info.backingFilename !== undefined) dict['backing-filename'] = info.backingFilename;
  if (info.fullBackingFilename !== undefined) dict['full-backing-filename'] = info.fullBackingFilename;
  if (info.backingFilenameFormat !== undefined) dict['backing-filename-format'] = info.backingFilenameFormat;
  if (info.snapshots.length > 0) dict['snapshots'] = info.snapshots.map(snapshotQDict);
  if (info.formatSpecific !== undefined) {
    dict['format-specific'] = { type: info.formatSpecific.type, data: info.formatSpecific.data };
  }
  return dict;
}

function two(n: number): string {
  return String(n).padStart(2, '0');
}

/** g_date_time_format(local time, "%Y-%m-%d %H:%M:%S"). */
function localDate(sec: number): string {
  const d = new Date(sec * 1000);
  return (
    `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
  );
}

/** `%-Ns` over the UTF-8 bytes of `text`, as C pads a char string (never truncates). */
function padBytesRight(text: string, width: number): string {
  const bytes = new TextEncoder().encode(text).length;
  return bytes >= width ? text : text + ' '.repeat(width - bytes);
}

/** bdrv_snapshot_dump: the table header (no snapshot) or one row. */
export function snapshotLine(s?: ImageSnapshot): string {
  if (s === undefined) {
    return (
      padRight('ID', 10) +
      padRight('TAG', 17) +
      padLeft('VM SIZE', 8) +
      padLeft('DATE', 20) +
      padLeft('VM CLOCK', 13) +
      padLeft('ICOUNT', 11)
    );
  }
  const secs = Math.floor(s.vmClockNsec / 1e9);
  const clock =
    `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.` +
    String(Math.floor(s.vmClockNsec / 1e6) % 1000).padStart(3, '0');
  return (
    `${padBytesRight(s.id, 9)} ${padBytesRight(s.name, 16)} ` +
    padLeft(sizeToStr(s.vmStateSize), 8) +
    padLeft(localDate(s.dateSec), 20) +
    padLeft(clock, 13) +
    padLeft(s.icount === undefined ? '' : String(s.icount), 11)
  );
}

/** bdrv_image_info_dump: the human text of one image. */
export function humanImageInfo(info: ImageInfo): string {
  let out =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${sizeToStr(info.virtualSize)} (${info.virtualSize} bytes)\n` +
    `disk size: ${info.actualSize === undefined ? 'unavailable' : sizeToStr(info.actualSize)}\n`;
  if (info.clusterSize !== undefined) out += `cluster_size: ${info.clusterSize}\n`;
  if (info.dirtyFlag) out += 'cleanly shut down: no\n';
  if (info.backingFilename !== undefined) {
    out += `backing file: ${info.backingFilename}`;
    if (info.fullBackingFilename === undefined) out += ' (cannot determine actual path)';
    else if (info.fullBackingFilename !== info.backingFilename) out += ` (actual path: ${info.fullBackingFilename})`;
    out += '\n';
  }
  if (info.backingFilenameFormat !== undefined) out += `backing file format: ${info.backingFilenameFormat}\n`;
  if (info.snapshots.length > 0) {
    out += `Snapshot list:\n${snapshotLine()}\n`;
    for (const s of info.snapshots) out += `${snapshotLine(s)}\n`;
  }
  if (info.formatSpecific !== undefined) {
    out += 'Format specific information:\n' + dumpQObject(info.formatSpecific.data, 1);
  }
  return out;
}
