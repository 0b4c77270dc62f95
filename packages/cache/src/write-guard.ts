/**
 * The metadata structures of a qcow2 image, named as qemu's overlap-check options name them
 * (`overlap-check.main-header`, …; QCOW2_OL_* in qemu's block/qcow2.h), in qemu's bit order.
 */
export type MetadataStructure =
  | 'main-header'
  | 'active-l1'
  | 'active-l2'
  | 'refcount-table'
  | 'refcount-block'
  | 'snapshot-table'
  | 'inactive-l1'
  | 'inactive-l2'
  | 'bitmap-directory';

/**
 * Called before a write to the image file (qemu's qcow2_pre_write_overlap_check): returns
 * undefined when the write may go ahead, else a promise that rejects (Qcow2Error) once the
 * refusal has been recorded. `own` names the structure being written in its own place (qemu's
 * "ignore" flag: it may overlap itself), 'data' a write of guest data, undefined metadata written
 * to a new place. Synchronous on the allowed path, so a guarded write costs no extra await.
 */
export type WriteGuard = (offset: number, length: number, own?: MetadataStructure | 'data') => Promise<never> | undefined;
