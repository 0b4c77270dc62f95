export * from './codec-laws.js';
export * from './qemu.js';
export * from './tmp.js';
export * from './recording-storage.js';
