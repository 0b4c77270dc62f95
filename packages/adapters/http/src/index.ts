export {
  createHttpStorage,
  type HttpStorage,
  type HttpStorageOptions,
  type HttpStorageStats,
} from './http-storage.js';
export type { FetchInit, FetchLike, FetchResponse } from './fetch-types.js';
