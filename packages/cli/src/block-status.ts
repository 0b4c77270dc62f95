import type { ImageExtent, ImageLike } from './host.js';

/**
 * The guest span one L2 table slice maps in a qcow2 image with qemu's default cache entry size
 * (a cluster): qemu's block status never reports a run across such a boundary.
 */
export function l2SliceSpan(image: ImageLike): number | undefined {
  if (image.format !== 'qcow2' || image.clusterSize === undefined) return undefined;
  const entryBytes = image.formatSpecific?.['extended-l2'] === true ? 16 : 8;
  return (image.clusterSize / entryBytes) * image.clusterSize;
}

/** Splits runs where qemu's block status would: at the L2 slice boundaries of every qcow2 layer. */
export function splitAtSlices(extents: readonly ImageExtent[], image: ImageLike): ImageExtent[] {
  const spans: number[] = [];
  for (let layer: ImageLike | undefined = image; layer !== undefined; layer = layer.backing) {
    const span = l2SliceSpan(layer);
    if (span !== undefined && !spans.includes(span)) spans.push(span);
  }
  if (spans.length === 0) return extents.slice();
  const out: ImageExtent[] = [];
  for (const e of extents) {
    let start = e.offset;
    const end = e.offset + e.length;
    while (start < end) {
      let stop = end;
      for (const span of spans) stop = Math.min(stop, (Math.floor(start / span) + 1) * span);
      const piece: ImageExtent = { ...e, offset: start, length: stop - start };
      if (e.hostOffset !== undefined) piece.hostOffset = e.hostOffset + (start - e.offset);
      out.push(piece);
      start = stop;
    }
  }
  return out;
}

/** The bdrv_block_status_above flags `qemu-img compare` looks at, for one run. */
export interface BlockStatus {
  allocated: boolean;
  zero: boolean;
  data: boolean;
  offsetValid: boolean;
  /** The run reaches the end of the image (BDRV_BLOCK_EOF): strict mode compares it too. */
  eof: boolean;
  /** Exclusive end of the run. */
  end: number;
}

export function statusEqual(a: BlockStatus, b: BlockStatus): boolean {
  return (
    a.allocated === b.allocated &&
    a.zero === b.zero &&
    a.data === b.data &&
    a.offsetValid === b.offsetValid &&
    a.eof === b.eof
  );
}

/** Walks an image's extents in offset order, answering "what is the status at this offset". */
export class StatusCursor {
  readonly #extents: readonly ImageExtent[];
  readonly #size: number;
  #index = 0;

  constructor(extents: readonly ImageExtent[], size: number) {
    this.#extents = extents;
    this.#size = size;
  }

  at(offset: number): BlockStatus {
    while (this.#index < this.#extents.length) {
      const e = this.#extents[this.#index] as ImageExtent;
      if (offset < e.offset + e.length) break;
      this.#index += 1;
    }
    const e = this.#extents[this.#index];
    if (e === undefined || offset < e.offset) {
      // Not covered by any extent: zeros, allocated nowhere.
      const end = e === undefined ? this.#size : e.offset;
      return { allocated: false, zero: true, data: false, offsetValid: false, eof: end >= this.#size, end };
    }
    const end = e.offset + e.length;
    return {
      allocated: e.kind !== 'unallocated',
      zero: e.kind !== 'data',
      data: e.kind === 'data',
      offsetValid: e.hostOffset !== undefined && e.compressed !== true,
      eof: end >= this.#size,
      end,
    };
  }
}
