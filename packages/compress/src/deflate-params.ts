/**
 * The raw deflate parameters qemu writes a compressed cluster with: zlib's default level (6), a
 * 4 KiB window (windowBits -12) and memLevel 9, no zlib header. In a module of their own so that
 * the node:zlib codec uses them without importing pako (the pure-JavaScript deflater).
 */
export const DEFLATE_LEVEL = 6;
export const DEFLATE_WINDOW_BITS = 12;
export const DEFLATE_MEM_LEVEL = 9;
