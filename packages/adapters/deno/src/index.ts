export { createDenoStorage, type DenoStorage, type DenoStorageOptions } from './deno-storage.js';
