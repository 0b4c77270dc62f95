export { createOpfsStorage, type OpfsStorageOptions } from './opfs-storage.js';
export type { OpfsStorage } from './sync-handle-storage.js';
export type { OpfsAccessMode } from './sync-access-handle.js';
export { splitOpfsPath } from './opfs-path.js';
export { createOpfsWorkerStorage, type OpfsWorkerStorage } from './worker-storage.js';
export { serveOpfsStorage, type ServeOpfsStorageOptions } from './serve-opfs-storage.js';
export type { MessageEndpoint } from './message-endpoint.js';
export { createWorkerClient, type WorkerClient } from './worker-client.js';
export { createWorkerServer, type WorkerMethod, type WorkerServer } from './worker-server.js';
export { withTransfer, type Transferred } from './rpc-protocol.js';
export {
  registerStorageMethods,
  STORAGE_METHODS,
  type OpenedStorage,
  type ReadReply,
  type WorkerStorageOpener,
} from './storage-methods.js';
