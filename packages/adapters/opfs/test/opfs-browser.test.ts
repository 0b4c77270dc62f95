import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { storageConformanceCases, type ConformanceContext } from '@qcow2/storage';
import { describeWithChromium } from './browser/describe-with-chromium.js';
import { runInChromium } from './browser/run-in-chromium.js';
import type { OpfsPageReport } from './browser/opfs-report.js';
import type { ErrorJson, ResultJson } from './browser/report.js';

// The adapter in its real runtime: a page and a dedicated worker in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core), bundled from the TypeScript sources and served
// from 127.0.0.1. The page reports JSON; every assertion is made here.

const entry = (name: string): string => fileURLToPath(new URL(`./browser/${name}`, import.meta.url));

// The shape of the contexts the page and the worker pass to runConformance (create,
// createReadOnly, reopen; not sparse), to know which cases must have run.
const shape: ConformanceContext = {
  create: async () => undefined as never,
  createReadOnly: async () => undefined as never,
  reopen: async () => undefined as never,
  sparse: false,
};

function expectConformance(results: () => readonly ResultJson[]): void {
  for (const c of storageConformanceCases) {
    it(c.name, () => {
      const result = results().find((r) => r.name === c.name);
      expect(result, `no result for "${c.name}"`).toBeDefined();
      if (result!.status === 'failed') throw new Error(`failed in Chromium: ${result!.error?.name}: ${result!.error?.message}`);
      expect(result!.status).toBe(c.applies(shape) ? 'passed' : 'skipped');
    });
  }
}

function expectError(error: ErrorJson | undefined, code: string, message: RegExp): void {
  expect(error, 'expected an error').toBeDefined();
  expect(error!.isQcow2Error, `${error!.name}: ${error!.message}`).toBe(true);
  expect(error!.code, error!.message).toBe(code);
  expect(error!.message).toMatch(message);
}

describeWithChromium('storage-opfs in headless Chromium', () => {
  let report: OpfsPageReport;
  beforeAll(async () => {
    const run = await runInChromium<OpfsPageReport>({
      entries: { page: entry('opfs-page.ts'), worker: entry('opfs-worker.ts') },
      timeoutMs: 90_000,
    });
    report = run.report;
    if (report.fatal !== undefined) {
      throw new Error(`the page failed: ${report.fatal.name}: ${report.fatal.message}\n${run.logs.join('\n')}`);
    }
  }, 120_000);

  describe('conformance: createOpfsStorage in a dedicated worker', () => {
    expectConformance(() => report.worker.conformance);
  });

  describe('conformance: createOpfsWorkerStorage on the page, by messages to the worker', () => {
    expectConformance(() => report.pageConformance);
  });

  describe('locks', () => {
    const locked = /^opfs storage w\/lock\.bin: open \(mode '(readwrite|read-only)'\): another handle has it open \(NoModificationAllowedError: /;
    it("a second 'readwrite' handle is refused with IO: another handle has it open", () => {
      expectError(report.worker.lock.secondReadwrite, 'IO', locked);
    });
    it("a 'read-only' handle beside a 'readwrite' one is refused the same way", () => {
      expectError(report.worker.lock.readOnlyBesideReadwrite, 'IO', locked);
    });
    it('after close the file opens again', () => {
      expect(report.worker.lock.afterClose).toBeUndefined();
    });
    it("two 'read-only' handles share the file", () => {
      expect(report.worker.lock.twoReadOnly).toBeUndefined();
    });
    it("two 'readwrite-unsafe' handles share the file and see each other's writes", () => {
      expect(report.worker.lock.twoUnsafe).toBeUndefined();
      expect(report.worker.lock.unsafeReadBack).toEqual([1, 9, 8, 4]);
    });
    it('the lock error reaches the page as a Qcow2Error with the same code and message', () => {
      expectError(report.pageLock, 'IO', /^opfs storage p\/lock\.bin: open \(mode 'readwrite'\): another handle has it open/);
      expect(report.pageLockIsQcow2ErrorInstance).toBe(true);
    });
  });

  describe('availability and opening', () => {
    it("on the page's main thread createOpfsStorage rejects UNSUPPORTED, saying to use a dedicated worker, and creates nothing", () => {
      expectError(
        report.mainThread.error,
        'UNSUPPORTED',
        /^opfs storage main-thread\.bin: open: sync access handles exist only in dedicated workers, not on a page's main thread: run createOpfsStorage in a dedicated worker/,
      );
      expect(report.mainThread.fileCreated).toBe(false);
    });
    it('a missing file without create rejects NOT_FOUND', () => {
      expectError(report.worker.missing, 'NOT_FOUND', /^opfs storage w\/missing\.bin: open: no such file or directory \(NotFoundError/);
    });
    it('a directory opened as a file rejects IO (TypeMismatchError)', () => {
      expectError(report.worker.directoryAsFile, 'IO', /^opfs storage w\/a\/b: open: .*TypeMismatchError/);
    });
    it('create makes the missing directories along the path', () => {
      expect(report.worker.nestedCreate).toEqual({ path: 'w/a/b/c.bin', size: 10 });
    });
    it('a FileSystemFileHandle opens too, named by its name', () => {
      expect(report.worker.fromHandle).toEqual({ path: 'by-handle.bin', bytes: [5, 6, 7] });
    });
    it('a Worker passed directly gets a shared client; read-only opens with mode read-only', () => {
      expect(report.viaWorkerObject).toEqual({ mode: 'read-only', readOnly: true, bytes: [0, 0, 0, 42, 43] });
    });
    it('a worker whose script does not load rejects IO instead of hanging', () => {
      expectError(report.deadWorker, 'IO', /^storage\.open: worker: failed before serving any call/);
    });
    it('an unknown method rejects UNSUPPORTED', () => {
      expectError(report.unknownMethod, 'UNSUPPORTED', /^worker: no method "no\.such\.method" is served here$/);
    });
  });
});
