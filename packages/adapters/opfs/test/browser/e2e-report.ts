import type { ErrorJson } from './report.js';

/** One guest operation of the end-to-end test. `fill` writes one byte value; `from` copies payload bytes. */
export type E2eOp =
  | { readonly kind: 'write'; readonly offset: number; readonly length: number; readonly fill: number }
  | { readonly kind: 'write'; readonly offset: number; readonly length: number; readonly from: number }
  | { readonly kind: 'compressed'; readonly offset: number; readonly length: number; readonly fill: number }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number };

/** What the test serves at /e2e/params.json. */
export interface E2eParams {
  /** The image created in OPFS. */
  readonly virtualSize: number;
  readonly ops: readonly E2eOp[];
  /** Served by the harness (Range requests): the backing file of the overlay, a URL relative to the page. */
  readonly baseUrl: string;
  /** Operations on the overlay (its virtual size is the base's). */
  readonly overlayOps: readonly E2eOp[];
  /** Bytes per digest of the guest view. */
  readonly digestChunk: number;
  /** The internal-snapshot sequence (a third image in OPFS). */
  readonly snapshots: SnapshotParams;
}

/**
 * create, write A, snapshot "base" (at `baseDate`), write B, snapshot "middle", write C, close;
 * reopen writable, read the active disk and both snapshots, apply "base", write D, delete
 * "middle", close; reopen read-only and read again.
 */
export interface SnapshotParams {
  readonly virtualSize: number;
  readonly baseDate: number;
  readonly phases: { readonly A: readonly E2eOp[]; readonly B: readonly E2eOp[]; readonly C: readonly E2eOp[]; readonly D: readonly E2eOp[] };
}

/** The engine's view of an image, as the worker or the page saw it. */
export interface ImageView {
  readonly readOnly: boolean;
  readonly format: string;
  readonly virtualSize: number;
  readonly dirty: boolean;
  readonly backingFile?: string;
  readonly backingFormat?: string;
  readonly hasBacking: boolean;
  /** SHA-256 (hex) of each `digestChunk` bytes of the guest disk, in order. */
  readonly digests: string[];
}

export interface CreatedReport {
  readonly writable: ImageView;
  /** The same image after close, reopened read-only in the worker. */
  readonly reopened: ImageView;
  /** The image file, as the worker read it back from OPFS (base64). */
  readonly file: string;
}

export interface OverlayReport {
  /** The overlay opened writable over its HTTP backing, after the writes (before close). */
  readonly writable: ImageView;
  /** Reopened read-only after close, over a fresh HTTP storage. */
  readonly reopened: ImageView;
  readonly file: string;
  /** createHttpStorage's counters for the reopened view's backing. */
  readonly http: { readonly requests: number; readonly bytesFetched: number };
  /** Writing to the backing's HTTP storage directly while the overlay is open (it is read-only). */
  readonly httpWrite?: ErrorJson;
  /** Reading from that HTTP storage after the overlay was closed. */
  readonly httpAfterClose?: ErrorJson;
}

/** One entry of `Image.snapshots`, as the worker saw it. */
export interface ListedSnapshot {
  readonly id: string;
  readonly name: string;
  readonly diskSize: number;
  readonly vmStateSize: number;
  readonly dateSec: number;
}

export type SnapshotStep = 'createBase' | 'createMiddle' | 'reopened' | 'applied' | 'deleted' | 'final';

/** The views read, by label (see the worker): the active disk or a snapshot at that point. */
export type SnapshotViewLabel =
  | 'activeAbc'
  | 'baseByName'
  | 'middleById'
  | 'activeApplied'
  | 'activeAd'
  | 'baseAfterWrite'
  | 'finalActive'
  | 'finalBase';

export interface SnapshotsReport {
  /** Image.snapshots after each step. */
  readonly lists: Readonly<Record<SnapshotStep, readonly ListedSnapshot[]>>;
  readonly views: Readonly<Record<SnapshotViewLabel, ImageView>>;
  /** openSnapshot("middle") after the delete. */
  readonly missing?: ErrorJson;
  /** The file while both snapshots existed (after the first close), and at the end (base64). */
  readonly twoSnapshotsFile: string;
  readonly file: string;
}

export interface WorkerE2eReport {
  readonly inWorker: boolean;
  readonly created: CreatedReport;
  readonly overlay: OverlayReport;
  readonly snapshots: SnapshotsReport;
}

export interface E2ePageReport {
  readonly fatal?: ErrorJson;
  readonly worker: WorkerE2eReport;
  /** The created image opened by the engine on the page, over createOpfsWorkerStorage. */
  readonly pageView: ImageView;
}
