import { Qcow2Error } from '@qcow2/storage';
import type { MessageEndpoint } from './message-endpoint.js';
import { encodeRpcError, isRpcRequest, isTransferred, RPC_TAG, type RpcReady, type RpcResponse } from './rpc-protocol.js';

/**
 * A method a worker serves. `params` are what the caller passed (structured-cloned; validate
 * them). Return the result, or `withTransfer(result, buffers)` to move buffers instead of copying
 * them. Throw (or reject with) a Qcow2Error: the caller gets one with the same code and message;
 * any other error reaches it as 'IO'.
 */
export type WorkerMethod = (params: readonly unknown[]) => unknown;

/** The worker side of the channel: a registry of named methods. */
export interface WorkerServer {
  /** Serves `method` from now on; registering a name twice is an 'INVALID_ARGUMENT' error. */
  register(method: string, handler: WorkerMethod): void;
  /** Stops listening; requests that arrive later get no answer. */
  close(): void;
}

/**
 * Serves named methods to a `createWorkerClient` on the other side of `endpoint` (in a worker,
 * `self`). Each request's method is called as soon as the message arrives, so methods that do
 * their work synchronously (like OPFS storage calls) run in the order they were sent. Posts a
 * "ready" message on start, by which the client tells a worker that started from one that
 * failed to load.
 */
export function createWorkerServer(endpoint: MessageEndpoint, methods: Record<string, WorkerMethod> = {}): WorkerServer {
  const registry = new Map<string, WorkerMethod>(Object.entries(methods));
  const reply = (response: RpcResponse, transfer: readonly Transferable[]): void => {
    try {
      endpoint.postMessage(response, { transfer: [...transfer] });
    } catch (error) {
      // The value could not be cloned: answer with the error instead, so the call still settles.
      const { channel, id } = response;
      const failed: RpcResponse = { tag: RPC_TAG, channel, id, ok: false, error: encodeRpcError(error, 'reply') };
      endpoint.postMessage(failed, { transfer: [] });
    }
  };
  const listener = (event: Event): void => {
    const request = (event as MessageEvent).data;
    if (!isRpcRequest(request)) return;
    const { channel, id, method, params } = request;
    const handler = registry.get(method);
    let pending: unknown;
    try {
      if (handler === undefined) throw new Qcow2Error('UNSUPPORTED', `worker: no method ${JSON.stringify(method)} is served here`);
      pending = handler(params);
    } catch (error) {
      reply({ tag: RPC_TAG, channel, id, ok: false, error: encodeRpcError(error, method) }, []);
      return;
    }
    Promise.resolve(pending).then(
      (result) => {
        if (isTransferred(result)) reply({ tag: RPC_TAG, channel, id, ok: true, value: result.value }, result.transfer);
        else reply({ tag: RPC_TAG, channel, id, ok: true, value: result }, []);
      },
      (error: unknown) => reply({ tag: RPC_TAG, channel, id, ok: false, error: encodeRpcError(error, method) }, []),
    );
  };
  endpoint.addEventListener('message', listener);
  endpoint.start?.();
  endpoint.postMessage({ tag: RPC_TAG, ready: true } satisfies RpcReady, { transfer: [] });
  return {
    register(method, handler) {
      if (registry.has(method)) throw new Qcow2Error('INVALID_ARGUMENT', `worker: method ${JSON.stringify(method)} is already served`);
      registry.set(method, handler);
    },
    close() {
      endpoint.removeEventListener('message', listener);
    },
  };
}
