import type { Storage } from '@qcow2/storage';
import type { CheckOptions, CheckResult } from './check-image.js';
import type { RefcountCheckResult } from './refcount-check.js';

export type { CheckMessage, CheckOptions, CheckRepair, CheckResult } from './check-image.js';
export type { CopiedFlagError, RefcountCheckResult } from './refcount-check.js';

/*
 * The checks are loaded when first called (dynamic imports: with code splitting, a program that
 * only opens, reads or writes images does not parse or compile them).
 */

/**
 * qemu-img check: see check-image.ts. Reads the image (and with `repair`, writes it) through
 * `storage`; resolves to what was found. Rejects only with Qcow2Error.
 */
export async function checkImage(storage: Storage, options: CheckOptions = {}): Promise<CheckResult> {
  const { checkImage: check } = await import('./check-image.js');
  return check(storage, options);
}

/**
 * Compares the refcounts of an image with its references, as qemu-img check does (without
 * repairing): leaks, refcounts below the references, and COPIED flags of the active tables that
 * disagree with refcounts. Reads `storage` only.
 */
export async function checkRefcounts(storage: Storage): Promise<RefcountCheckResult> {
  const { checkRefcounts: check } = await import('./refcount-check.js');
  return check(storage);
}
