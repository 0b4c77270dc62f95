import { describe } from 'vitest';
import { isCI } from '@qcow2/test-utils';
import { CHROMIUM_PATH, hasChromium } from './run-in-chromium.js';

/**
 * `describe` when /usr/bin/chromium is there; else a loud skip, or a failing suite under CI=true
 * (scripts/ensure-chromium.sh installs it with apt-get).
 */
export function describeWithChromium(name: string, body: () => void): void {
  if (hasChromium()) {
    describe(name, body);
    return;
  }
  if (isCI()) {
    describe(name, () => {
      throw new Error(`${CHROMIUM_PATH} is missing, and CI=true: browser tests cannot be skipped in CI (run scripts/ensure-chromium.sh)`);
    });
    return;
  }
  console.warn(`\n!!! SKIPPED (${CHROMIUM_PATH} not found; run scripts/ensure-chromium.sh as root): ${name}\n`);
  describe.skip(name, body);
}

