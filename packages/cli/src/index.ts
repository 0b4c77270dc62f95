export { main } from './main.js';
export type { CliIo } from './context.js';
export type {
  CliHost,
  ExtentKind,
  HostOpenOptions,
  ImageExtent,
  ImageFormat,
  ImageLike,
  ImageSnapshot,
  OutputFile,
} from './host.js';
export { createNodeHost } from './node-host.js';
export { CliError } from './errors.js';
export { sizeToStr } from './size-to-str.js';
export { strtosz, type StrtoszResult } from './strtosz.js';
