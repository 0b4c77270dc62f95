import { invalidArgument } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';

/**
 * Why clusters are freed: qemu's `enum qcow2_discard_type`. Whether the host range of a cluster
 * whose refcount drops to 0 is discarded on the storage depends on the type and on the policy
 * (qemu's `pass-discard-*` options).
 */
export type DiscardType =
  /** Never passed down (allocation rollbacks, refcount structure bookkeeping). */
  | 'never'
  /** Always passed down (repairs). */
  | 'always'
  /** A guest discard request (`pass-discard-request`). */
  | 'request'
  /** A snapshot deletion (`pass-discard-snapshot`). */
  | 'snapshot'
  /** Anything else: freed metadata, overwritten COW clusters (`pass-discard-other`). */
  | 'other';

/** qemu's `pass-discard-request`, `pass-discard-snapshot`, `pass-discard-other`. */
export interface DiscardPolicy {
  /** Default false (qemu: true only when the image is opened with discard=unmap). */
  readonly request?: boolean;
  /** Default true. */
  readonly snapshot?: boolean;
  /** Default false. */
  readonly other?: boolean;
}

const TYPES: readonly DiscardType[] = ['never', 'always', 'request', 'snapshot', 'other'];

/** Which discard types pass through, from a policy with qemu 7.2's defaults. */
export function resolveDiscardPolicy(policy: DiscardPolicy = {}): Readonly<Record<DiscardType, boolean>> {
  for (const key of ['request', 'snapshot', 'other'] as const) {
    const value = policy[key];
    if (value !== undefined && typeof value !== 'boolean') {
      throw invalidArgument(`discard policy: ${key} is ${String(value)}, not a boolean`);
    }
  }
  return {
    never: false,
    always: true,
    request: policy.request ?? false,
    snapshot: policy.snapshot ?? true,
    other: policy.other ?? false,
  };
}

export function checkDiscardType(type: unknown): DiscardType {
  if (typeof type !== 'string' || !(TYPES as readonly string[]).includes(type)) {
    throw invalidArgument(`discard type ${String(type)} is not one of ${TYPES.join(', ')}`);
  }
  return type as DiscardType;
}

/** A host byte range waiting to be discarded. */
export interface DiscardRegion {
  offset: number;
  length: number;
}

/**
 * Host ranges freed with a passed-through discard type, coalesced as qemu's
 * update_refcount_discard coalesces them: a range touching a queued one is merged into it, and
 * then queued regions that became adjacent are merged too. Freed ranges never overlap (a range
 * is queued only when its refcount reaches 0), so merging only ever joins neighbours.
 */
export class DiscardQueue {
  #regions: DiscardRegion[] = [];

  get size(): number {
    return this.#regions.length;
  }

  /** The queued regions (copies), in queue order. */
  regions(): DiscardRegion[] {
    return this.#regions.map((r) => ({ offset: r.offset, length: r.length }));
  }

  add(offset: number, length: number): void {
    let target: DiscardRegion | undefined;
    // The most recent region is the usual neighbour: look there first.
    for (let i = this.#regions.length - 1; i >= 0; i--) {
      const r = this.#regions[i]!;
      if (r.offset + r.length === offset || offset + length === r.offset) {
        target = r;
        break;
      }
    }
    if (target === undefined) {
      this.#regions.push({ offset, length });
      return;
    }
    target.offset = Math.min(target.offset, offset);
    target.length += length;
    // Merge regions that touch the grown one now.
    for (let i = 0; i < this.#regions.length; i++) {
      const p = this.#regions[i]!;
      if (p === target) continue;
      if (p.offset + p.length === target.offset || target.offset + target.length === p.offset) {
        target.offset = Math.min(target.offset, p.offset);
        target.length += p.length;
        this.#regions.splice(i, 1);
        i = -1;
      }
    }
  }

  /** Takes every region out of the queue. */
  take(): DiscardRegion[] {
    const out = this.#regions;
    this.#regions = [];
    return out;
  }

  /**
   * Discards every queued region on `storage` (when it can discard) and empties the queue.
   * Discard is advisory, as in qemu: failures are ignored.
   */
  async process(storage: Storage): Promise<void> {
    const regions = this.take();
    if (regions.length === 0 || storage.canDiscard !== true || typeof storage.discard !== 'function') return;
    for (const r of regions) {
      try {
        await storage.discard(r.offset, r.length);
      } catch {
        // Optional, like qemu's bdrv_pdiscard in qcow2_process_discards.
      }
    }
  }
}
