import type { Extent } from './types.js';

/**
 * Extents in guest order, each appended one merged into the previous one when they are
 * adjacent with the same kind, depth, file, compression, and (when both have one) contiguous
 * host offsets — qemu-img map's rule for merging its entries.
 */
export class ExtentList {
  readonly extents: Extent[] = [];

  push(extent: Extent, filename: string | undefined): void {
    const last = this.extents[this.extents.length - 1];
    if (
      last !== undefined &&
      last.offset + last.length === extent.offset &&
      last.kind === extent.kind &&
      last.depth === extent.depth &&
      last.filename === filename &&
      (last.compressed === true) === (extent.compressed === true) &&
      (last.hostOffset === undefined
        ? extent.hostOffset === undefined
        : extent.hostOffset !== undefined && last.hostOffset + last.length === extent.hostOffset)
    ) {
      last.length += extent.length;
      return;
    }
    const copy: Extent = { ...extent };
    if (filename !== undefined) copy.filename = filename;
    else delete copy.filename;
    this.extents.push(copy);
  }
}
