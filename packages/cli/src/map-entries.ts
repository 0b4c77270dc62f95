import { alternateHex } from './c-format.js';
import type { ImageExtent, ImageLike } from './host.js';
import { pathCombine } from './path-combine.js';

/** qemu-img map's MapEntry (qemu-img.c): one run of equal block status. */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
  filename?: string;
}

/** What map needs to know about each layer of the chain, top first. */
export interface LayerInfo {
  /** The file name qemu shows for this layer (the user's name, then path-combined backing names). */
  name: string;
  virtualSize: number;
  /** The external data file's name, path-combined, when the layer has one. */
  dataFile?: string;
  /** data-file-raw: guest offset = host offset, even where nothing is allocated. */
  dataFileRaw?: boolean;
}

export function chainLayers(top: ImageLike, topName: string): LayerInfo[] {
  const layers: LayerInfo[] = [];
  let name = topName;
  for (let image: ImageLike | undefined = top; image !== undefined; image = image.backing) {
    const layer: LayerInfo = { name, virtualSize: image.virtualSize };
    const dataFile = image.formatSpecific?.['data-file'];
    if (typeof dataFile === 'string') layer.dataFile = pathCombine(name, dataFile);
    if (image.formatSpecific?.['data-file-raw'] === true) layer.dataFileRaw = true;
    layers.push(layer);
    if (image.backingFile === undefined) break;
    name = pathCombine(name, image.backingFile);
  }
  return layers;
}

/**
 * The MapEntry runs qemu's get_block_status would report for the engine's extents: a run
 * allocated nowhere in the chain reports the depth where qemu's walk down the chain stops (the
 * bottom layer, or the first layer whose backing file is shorter than the offset), and is split
 * where that changes. Such a run still has a host offset where qemu reports one: unallocated
 * subclusters of an allocated cluster, and (the guest offset) in an image with a raw external
 * data file.
 */
export function mapEntriesFromExtents(extents: readonly ImageExtent[], layers: readonly LayerInfo[]): MapEntry[] {
  const entries: MapEntry[] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    if (e.kind === 'unallocated') {
      let start = e.offset;
      const end = e.offset + e.length;
      while (start < end) {
        let depth = 0;
        while (depth + 1 < layers.length && start < (layers[depth + 1] as LayerInfo).virtualSize) depth += 1;
        // The run ends where the deepest layer reached changes: at the size of a backing file.
        let stop = end;
        for (let d = 1; d < layers.length; d += 1) {
          const size = (layers[d] as LayerInfo).virtualSize;
          if (size > start && size < stop) stop = size;
        }
        const entry: MapEntry = { start, length: stop - start, depth, present: false, zero: true, data: false };
        const layer = layers[depth];
        if (e.hostOffset !== undefined && depth === e.depth) {
          // An unallocated subcluster of an allocated cluster keeps its host offset.
          entry.offset = e.hostOffset + (start - e.offset);
          entry.filename = layer?.dataFile ?? layer?.name ?? e.filename ?? '';
        } else if (layer?.dataFileRaw === true && layer.dataFile !== undefined) {
          // qcow2 reports the raw data file's matching offset for unallocated clusters too.
          entry.offset = start;
          entry.filename = layer.dataFile;
        }
        entries.push(entry);
        start = stop;
      }
      continue;
    }
    const entry: MapEntry = {
      start: e.offset,
      length: e.length,
      depth: e.depth,
      present: true,
      zero: e.kind === 'zero',
      data: e.kind === 'data',
    };
    if (e.hostOffset !== undefined && e.compressed !== true) {
      entry.offset = e.hostOffset;
      const layer = layers[e.depth];
      const filename = layer?.dataFile ?? layer?.name ?? e.filename;
      if (filename !== undefined) entry.filename = filename;
    }
    entries.push(entry);
  }
  return entries;
}

/** qemu-img.c entry_mergeable. */
export function entryMergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename === undefined) !== (next.filename === undefined) ||
    (curr.offset === undefined) !== (next.offset === undefined)
  ) {
    return false;
  }
  if (curr.filename !== undefined && curr.filename !== next.filename) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

export function mapJsonLine(e: MapEntry): string {
  return (
    `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, ` +
    `"zero": ${e.zero}, "data": ${e.data}${e.offset === undefined ? '' : `, "offset": ${e.offset}`}}`
  );
}

export function mapHumanLine(e: MapEntry): string {
  return (
    alternateHex(e.start).padEnd(16) +
    alternateHex(e.length).padEnd(16) +
    alternateHex(e.offset ?? 0).padEnd(16) +
    (e.filename ?? '') +
    '\n'
  );
}

export const MAP_HUMAN_HEADER: string = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;

/** Thrown by `renderMap` in human mode at an entry with data but no host offset. */
export const MAP_HUMAN_UNMAPPABLE: string = 'File contains external, encrypted or compressed clusters.';

/**
 * img_map's output loop over entries covering [start, end): merges runs as qemu does and writes
 * each finished one through `emit`. Returns false (after emitting what came before) when human
 * output meets a run it cannot show.
 */
export function renderMap(
  entries: readonly MapEntry[],
  start: number,
  json: boolean,
  emit: (text: string) => void,
): boolean {
  let curr: MapEntry = { start, length: 0, depth: 0, present: false, zero: false, data: false };
  const dump = (e: MapEntry, next: MapEntry | undefined): boolean => {
    if (json) {
      emit(mapJsonLine(e) + (next === undefined ? '' : ',\n'));
      return true;
    }
    if (e.data && e.offset === undefined) return false;
    if (e.data && !e.zero) emit(mapHumanLine(e));
    // The human form does not tell zero from unallocated: let such runs merge.
    if (next !== undefined && (!next.data || next.zero)) {
      next.data = false;
      next.zero = true;
    }
    return true;
  };
  for (const original of entries) {
    const next = { ...original };
    if (entryMergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0 && !dump(curr, next)) return false;
    curr = next;
  }
  return dump(curr, undefined);
}
