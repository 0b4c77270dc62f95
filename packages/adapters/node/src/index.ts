export { createNodeStorage, type NodeStorage, type NodeStorageOptions } from './node-storage.js';
export { createNodeResolver, type NodeResolverOptions } from './node-resolver.js';
