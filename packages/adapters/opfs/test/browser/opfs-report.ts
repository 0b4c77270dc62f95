import type { ErrorJson, ResultJson } from './report.js';

/** What opfs-worker.ts's `test.worker-suite` method answers. */
export interface WorkerSuiteReport {
  readonly conformance: ResultJson[];
  readonly lock: {
    /** A second 'readwrite' handle while one is open. */
    readonly secondReadwrite?: ErrorJson;
    /** A 'read-only' handle while a 'readwrite' one is open. */
    readonly readOnlyBesideReadwrite?: ErrorJson;
    /** Two 'read-only' handles at once: undefined when both opened. */
    readonly twoReadOnly?: ErrorJson;
    /** Two 'readwrite-unsafe' handles, one writing, the other reading it back. */
    readonly twoUnsafe?: ErrorJson;
    readonly unsafeReadBack?: number[];
    /** Reopening 'readwrite' after the first handle was closed. */
    readonly afterClose?: ErrorJson;
  };
  readonly missing?: ErrorJson;
  readonly directoryAsFile?: ErrorJson;
  readonly nestedCreate?: { readonly path: string; readonly size: number };
  readonly fromHandle?: { readonly path: string; readonly bytes: number[] };
}

export interface OpfsPageReport {
  readonly fatal?: ErrorJson;
  readonly userAgent: string;
  readonly mainThread: { readonly error?: ErrorJson; readonly fileCreated: boolean };
  readonly worker: WorkerSuiteReport;
  readonly pageConformance: ResultJson[];
  readonly pageLock?: ErrorJson;
  readonly pageLockIsQcow2ErrorInstance: boolean;
  readonly viaWorkerObject: { readonly mode: string; readonly readOnly: boolean; readonly bytes: number[] };
  readonly deadWorker?: ErrorJson;
  readonly unknownMethod?: ErrorJson;
}
