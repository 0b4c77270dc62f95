export type { Storage, StorageResolver } from './storage.js';
