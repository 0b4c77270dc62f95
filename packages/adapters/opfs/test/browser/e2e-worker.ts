// The dedicated worker of the end-to-end browser test: the engine over createOpfsStorage.
//  1. creates an image in OPFS, opens it writable, writes, closes, reopens read-only, reads back;
//  2. creates an overlay in OPFS whose backing file is a qcow2 served over HTTP (opened by the
//     resolver with createHttpStorage), writes to it and reads the merged view;
//  3. internal snapshots: creates an image, writes, snapshots, writes over them, reopens, reads
//     the active disk and the snapshots, applies one, writes, deletes the other, reopens read-only.
// It also serves the page's createOpfsWorkerStorage calls (serveOpfsStorage).
import { createImage, openImage } from '@qcow2/engine';
import type { StorageResolver } from '@qcow2/storage';
import { createHttpStorage, type HttpStorage } from '@qcow2/storage-http';
import { createOpfsStorage, serveOpfsStorage } from '@qcow2/storage-opfs';
import { applyOps, toBase64, viewOf } from './e2e-image.js';
import type { Image } from '@qcow2/engine';
import type {
  CreatedReport,
  E2eParams,
  ImageView,
  ListedSnapshot,
  OverlayReport,
  SnapshotsReport,
  SnapshotStep,
  SnapshotViewLabel,
  WorkerE2eReport,
} from './e2e-report.js';
import { errorOf } from './report.js';

const CREATED_PATH = 'e2e/created.qcow2';
const OVERLAY_PATH = 'e2e/overlay.qcow2';
const SNAPSHOTS_PATH = 'e2e/snapshots.qcow2';

/** The whole file, read back through the adapter. */
async function fileBytes(path: string): Promise<Uint8Array> {
  const storage = await createOpfsStorage(path, { readOnly: true });
  try {
    const bytes = new Uint8Array(await storage.size());
    await storage.read(bytes, 0);
    return bytes;
  } finally {
    await storage.close();
  }
}

async function created(params: E2eParams, payload: Uint8Array): Promise<CreatedReport> {
  const storage = await createOpfsStorage(CREATED_PATH, { create: true });
  let writable;
  try {
    await createImage(storage, { size: params.virtualSize });
    const image = await openImage(storage, { readOnly: false, name: CREATED_PATH });
    await applyOps(image, params.ops, payload);
    await image.flush();
    writable = await viewOf(image, params.digestChunk);
    await image.close();
  } finally {
    await storage.close();
  }
  const ro = await createOpfsStorage(CREATED_PATH, { readOnly: true });
  let reopened;
  try {
    const image = await openImage(ro, { name: CREATED_PATH });
    reopened = await viewOf(image, params.digestChunk);
    await image.close();
  } finally {
    await ro.close();
  }
  return { writable, reopened, file: toBase64(await fileBytes(CREATED_PATH)) };
}

async function overlay(params: E2eParams, payload: Uint8Array): Promise<OverlayReport> {
  const baseUrl = new URL(params.baseUrl, location.href).href;
  const opened: HttpStorage[] = [];
  // Backing names resolve against the base's URL, so the overlay stores the relative name as qemu would.
  const resolver: StorageResolver = async (name) => {
    const storage = await createHttpStorage(new URL(name, baseUrl).href);
    opened.push(storage);
    return storage;
  };
  const backingFile = baseUrl.slice(baseUrl.lastIndexOf('/') + 1);
  const storage = await createOpfsStorage(OVERLAY_PATH, { create: true });
  let writable;
  let httpWrite;
  try {
    // No size: it comes from the backing file, opened over HTTP through the resolver.
    await createImage(storage, { backingFile, backingFormat: 'qcow2', resolver });
    const image = await openImage(storage, { readOnly: false, name: OVERLAY_PATH, resolver });
    await applyOps(image, params.overlayOps, payload);
    await image.flush();
    writable = await viewOf(image, params.digestChunk);
    httpWrite = await errorOf(() => (opened[opened.length - 1] as HttpStorage).write(new Uint8Array(1), 0));
    await image.close();
  } finally {
    await storage.close();
  }
  // Closing the image closed the backing storage the resolver handed it.
  const httpAfterClose = await errorOf(() => (opened[opened.length - 1] as HttpStorage).read(new Uint8Array(1), 0));
  const ro = await createOpfsStorage(OVERLAY_PATH, { readOnly: true });
  let reopened;
  let http;
  try {
    const before = opened.length;
    const image = await openImage(ro, { name: OVERLAY_PATH, resolver });
    reopened = await viewOf(image, params.digestChunk);
    const backing = opened[before] as HttpStorage;
    const stats = backing.stats();
    http = { requests: stats.requests, bytesFetched: stats.bytesFetched };
    await image.close();
  } finally {
    await ro.close();
  }
  return { writable, reopened, file: toBase64(await fileBytes(OVERLAY_PATH)), http, ...(httpWrite && { httpWrite }), ...(httpAfterClose && { httpAfterClose }) };
}

async function snapshots(params: E2eParams, payload: Uint8Array): Promise<SnapshotsReport> {
  const { virtualSize, baseDate, phases } = params.snapshots;
  const lists: Partial<Record<SnapshotStep, ListedSnapshot[]>> = {};
  const views: Partial<Record<SnapshotViewLabel, ImageView>> = {};
  const list = (step: SnapshotStep, image: Image): void => {
    lists[step] = image.snapshots.map((s) => ({ id: s.id, name: s.name, diskSize: s.diskSize, vmStateSize: s.vmStateSize, dateSec: s.dateSec }));
  };
  const view = async (label: SnapshotViewLabel, image: Image): Promise<void> => {
    views[label] = await viewOf(image, params.digestChunk);
  };
  const viewSnapshot = async (label: SnapshotViewLabel, image: Image, idOrName: string): Promise<void> => {
    const snapshot = await image.openSnapshot(idOrName);
    try {
      await view(label, snapshot);
    } finally {
      await snapshot.close();
    }
  };

  const storage = await createOpfsStorage(SNAPSHOTS_PATH, { create: true });
  try {
    await createImage(storage, { size: virtualSize });
    const image = await openImage(storage, { readOnly: false, name: SNAPSHOTS_PATH });
    await applyOps(image, phases.A, payload);
    await image.createSnapshot('base', { dateSec: baseDate, dateNsec: 0 });
    list('createBase', image);
    await applyOps(image, phases.B, payload);
    await image.createSnapshot('middle');
    list('createMiddle', image);
    await applyOps(image, phases.C, payload);
    await image.close();
  } finally {
    await storage.close();
  }
  const twoSnapshotsFile = toBase64(await fileBytes(SNAPSHOTS_PATH));

  const rw = await createOpfsStorage(SNAPSHOTS_PATH);
  try {
    const image = await openImage(rw, { readOnly: false, name: SNAPSHOTS_PATH });
    list('reopened', image);
    await view('activeAbc', image);
    await viewSnapshot('baseByName', image, 'base');
    await viewSnapshot('middleById', image, '2');
    await image.applySnapshot('base');
    list('applied', image);
    await view('activeApplied', image);
    await applyOps(image, phases.D, payload);
    await view('activeAd', image);
    await viewSnapshot('baseAfterWrite', image, 'base');
    await image.deleteSnapshot('middle');
    list('deleted', image);
    await image.close();
  } finally {
    await rw.close();
  }

  const ro = await createOpfsStorage(SNAPSHOTS_PATH, { readOnly: true });
  let missing;
  try {
    const image = await openImage(ro, { name: SNAPSHOTS_PATH });
    list('final', image);
    await view('finalActive', image);
    await viewSnapshot('finalBase', image, 'base');
    missing = await errorOf(() => image.openSnapshot('middle'));
    await image.close();
  } finally {
    await ro.close();
  }
  return {
    lists: lists as SnapshotsReport['lists'],
    views: views as SnapshotsReport['views'],
    ...(missing && { missing }),
    twoSnapshotsFile,
    file: toBase64(await fileBytes(SNAPSHOTS_PATH)),
  };
}

async function run(params: E2eParams): Promise<WorkerE2eReport> {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('e2e', { recursive: true }).catch(() => undefined);
  const payload = new Uint8Array(await (await fetch('/e2e/payload.bin')).arrayBuffer());
  return {
    inWorker: typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope === 'function' && !('document' in globalThis),
    created: await created(params, payload),
    overlay: await overlay(params, payload),
    snapshots: await snapshots(params, payload),
  };
}

serveOpfsStorage(self, { methods: { 'e2e.run': ([params]) => run(params as E2eParams) } });
