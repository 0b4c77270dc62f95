import type { ImageExtent } from './host.js';

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
