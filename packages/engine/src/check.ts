export { checkImage } from './check-image.js';
export type { CheckMessage, CheckOptions, CheckRepair, CheckResult } from './check-image.js';
