import type { MessageEndpoint } from './message-endpoint.js';
import { createOpfsStorage } from './opfs-storage.js';
import { registerStorageMethods } from './storage-methods.js';
import { createWorkerServer, type WorkerMethod, type WorkerServer } from './worker-server.js';

export interface ServeOpfsStorageOptions {
  /** More methods to serve on the same channel (an engine's, say), by name. */
  methods?: Record<string, WorkerMethod>;
}

/**
 * Call in a dedicated worker: `serveOpfsStorage(self)`. Serves `createOpfsWorkerStorage` calls
 * from the page, each opening its file with `createOpfsStorage` here. Returns the server, on
 * which more methods can be registered later (`server.register('image.read', …)`).
 */
export function serveOpfsStorage(scope: MessageEndpoint, options: ServeOpfsStorageOptions = {}): WorkerServer {
  const server = createWorkerServer(scope, options.methods);
  registerStorageMethods(server, createOpfsStorage);
  return server;
}
