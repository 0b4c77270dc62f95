import { afterAll, describe, expect, it } from 'vitest';
import {
  createMemoryStorage,
  isQcow2Error,
  Qcow2Error,
  storageConformanceCases,
  type ConformanceContext,
  type Qcow2ErrorCode,
  type Storage,
} from '@qcow2/storage';
import {
  createOpfsWorkerStorage,
  createWorkerClient,
  createWorkerServer,
  registerStorageMethods,
  withTransfer,
  type MessageEndpoint,
  type OpfsWorkerStorage,
} from '@qcow2/storage-opfs';

// The message layer in Node, over a MessageChannel (the same structured clone and transfer as
// between a page and a worker), with memory storages standing in for OPFS files on the worker
// side. The browser test runs the same layer between a real page and a real worker.

const ports: MessagePort[] = [];
afterAll(() => ports.forEach((p) => p.close()));

function channel(): { page: MessageEndpoint; worker: MessageEndpoint } {
  const { port1, port2 } = new MessageChannel();
  ports.push(port1, port2);
  return { page: port1 as unknown as MessageEndpoint, worker: port2 as unknown as MessageEndpoint };
}

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

describe('page-side worker storage over a MessageChannel: conformance', () => {
  const { page, worker } = channel();
  const files = new Map<string, ReturnType<typeof createMemoryStorage>>();
  const server = createWorkerServer(worker);
  // The worker side: memory files by path, reopened with their contents kept.
  registerStorageMethods(server, async (path, options) => {
    const previous = files.get(path);
    if (previous === undefined && options.create !== true) throw new Qcow2Error('NOT_FOUND', `memory ${path}: no such file`);
    const storage = createMemoryStorage({
      ...(previous === undefined ? {} : { initial: previous.snapshot() }),
      readOnly: options.readOnly === true,
    });
    files.set(path, storage);
    return storage;
  });
  let counter = 0;
  const ctx: ConformanceContext = {
    create: () => createOpfsWorkerStorage(page, `f-${counter++}`, { create: true }),
    createReadOnly: async (bytes) => {
      const path = `f-${counter++}`;
      const w = await createOpfsWorkerStorage(page, path, { create: true });
      await w.write(bytes, 0);
      await w.close();
      return createOpfsWorkerStorage(page, path, { readOnly: true });
    },
    reopen: async (storage: Storage) => {
      await storage.close();
      return createOpfsWorkerStorage(page, (storage as OpfsWorkerStorage).path);
    },
  };
  for (const c of storageConformanceCases) {
    it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx));
  }

  it('canDiscard and discard cross the channel (memory storage can discard)', async () => {
    const s = await createOpfsWorkerStorage(page, 'discard', { create: true });
    expect(s.canDiscard).toBe(true);
    await s.write(new Uint8Array(100).fill(7), 0);
    await s.discard!(10, 20);
    const back = new Uint8Array(100);
    expect(await s.read(back, 0)).toBe(100);
    expect(back.subarray(10, 30).every((b) => b === 0)).toBe(true);
    expect(back[9]).toBe(7);
    expect(back[30]).toBe(7);
    await s.close();
  });

  it('a worker-side error arrives with its code and message', async () => {
    const e = await rejection(createOpfsWorkerStorage(page, 'missing'));
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toBe('memory missing: no such file');
    expect(e).toBeInstanceOf(Qcow2Error);
  });
});

describe('worker RPC', () => {
  it('every Qcow2Error code survives the trip; other errors become IO', async () => {
    const { page, worker } = channel();
    const codes: Qcow2ErrorCode[] = ['CORRUPT', 'UNSUPPORTED', 'INVALID_ARGUMENT', 'READ_ONLY', 'IO', 'NOT_FOUND', 'CLOSED'];
    createWorkerServer(worker, {
      fail: ([code]) => {
        throw new Qcow2Error(code as Qcow2ErrorCode, `failed with ${String(code)}`);
      },
      typeError: async () => {
        throw new TypeError('not a function');
      },
    });
    const client = createWorkerClient(page);
    for (const code of codes) {
      const e = await rejection(client.call('fail', [code]));
      expect([e.code, e.message]).toEqual([code, `failed with ${code}`]);
    }
    const e = await rejection(client.call('typeError', []));
    expect([e.code, e.message]).toEqual(['IO', 'worker method typeError failed: TypeError: not a function']);
    client.close();
  });

  it('an unknown method rejects UNSUPPORTED; registering a name twice throws', async () => {
    const { page, worker } = channel();
    const server = createWorkerServer(worker, { a: () => 1 });
    expect(() => server.register('a', () => 2)).toThrow(/method "a" is already served/);
    const client = createWorkerClient(page);
    const e = await rejection(client.call('b', []));
    expect([e.code, e.message]).toEqual(['UNSUPPORTED', 'worker: no method "b" is served here']);
    expect(await client.call('a', [])).toBe(1);
    client.close();
  });

  it('withTransfer moves buffers both ways (the sender’s copy is detached)', async () => {
    const { page, worker } = channel();
    let kept: ArrayBuffer | undefined;
    createWorkerServer(worker, {
      echo: ([buffer]) => {
        kept = buffer as ArrayBuffer;
        return withTransfer({ buffer }, [buffer as ArrayBuffer]);
      },
    });
    const client = createWorkerClient(page);
    const sent = new Uint8Array([1, 2, 3]).buffer;
    const reply = (await client.call('echo', [sent], [sent])) as { buffer: ArrayBuffer };
    expect(sent.byteLength).toBe(0);
    expect(kept!.byteLength).toBe(0);
    expect([...new Uint8Array(reply.buffer)]).toEqual([1, 2, 3]);
    client.close();
  });

  it('two clients of one endpoint each get their own answers', async () => {
    const { page, worker } = channel();
    createWorkerServer(worker, { id: async ([x, delay]) => new Promise((r) => setTimeout(() => r(x), delay as number)) });
    const a = createWorkerClient(page);
    const b = createWorkerClient(page);
    const results = await Promise.all([a.call('id', ['a1', 20]), b.call('id', ['b1', 0]), a.call('id', ['a2', 0]), b.call('id', ['b2', 10])]);
    expect(results).toEqual(['a1', 'b1', 'a2', 'b2']);
    a.close();
    b.close();
  });

  it('close rejects the calls in flight and later calls with CLOSED', async () => {
    const { page, worker } = channel();
    createWorkerServer(worker, { never: () => new Promise(() => undefined) });
    const client = createWorkerClient(page);
    const inFlight = rejection(client.call('never', []));
    client.close();
    expect((await inFlight).code).toBe('CLOSED');
    expect((await rejection(client.call('never', []))).code).toBe('CLOSED');
  });

  it('a result that cannot be cloned settles the call with an error', async () => {
    const { page, worker } = channel();
    createWorkerServer(worker, { fn: () => () => 1 });
    const client = createWorkerClient(page);
    const e = await rejection(client.call('fn', []));
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/^worker method reply failed: DataCloneError/);
    client.close();
  });

  it('params that cannot be cloned reject INVALID_ARGUMENT on the calling side', async () => {
    const { page, worker } = channel();
    createWorkerServer(worker, { x: () => 1 });
    const client = createWorkerClient(page);
    const e = await rejection(client.call('x', [() => 1]));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toMatch(/^x: the call cannot be sent to the worker \(DataCloneError/);
    client.close();
  });

  it("an 'error' event before the server was heard from rejects the calls in flight with IO; after, it is ignored", async () => {
    // A fake endpoint that never answers: a worker whose script failed to load.
    const target = new EventTarget();
    const dead: MessageEndpoint = {
      postMessage: () => undefined,
      addEventListener: (type, listener) => target.addEventListener(type, listener),
      removeEventListener: (type, listener) => target.removeEventListener(type, listener),
    };
    const client = createWorkerClient(dead);
    const pending = rejection(client.call('storage.open', ['a']));
    const event = new Event('error') as Event & { message?: string };
    event.message = 'Failed to load';
    target.dispatchEvent(event);
    const e = await pending;
    expect(e.code).toBe('IO');
    expect(e.message).toBe(
      'storage.open: worker: failed before serving any call (Failed to load); is its script loading, and does it call serveOpfsStorage?',
    );

    const { page, worker } = channel();
    createWorkerServer(worker, { slow: () => new Promise((r) => setTimeout(() => r('done'), 30)) });
    const live = createWorkerClient(page);
    await new Promise((r) => setTimeout(r, 10)); // the server's ready message arrives
    const call = live.call('slow', []);
    (page as unknown as EventTarget).dispatchEvent(new Event('error'));
    expect(await call).toBe('done');
    live.close();
  });

  it('messages without the tag are left alone', async () => {
    const { page, worker } = channel();
    createWorkerServer(worker, { one: () => 1 });
    const client = createWorkerClient(page);
    page.postMessage({ method: 'one', id: 1 }, { transfer: [] });
    page.postMessage('hello', { transfer: [] });
    expect(await client.call('one', [])).toBe(1);
    client.close();
  });
});
