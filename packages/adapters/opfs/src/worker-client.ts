import { Qcow2Error } from '@qcow2/storage';
import type { MessageEndpoint } from './message-endpoint.js';
import { decodeRpcError, isRpcReady, isRpcResponse, RPC_TAG, type RpcRequest } from './rpc-protocol.js';

/** The calling side of the channel to a `createWorkerServer`. */
export interface WorkerClient {
  /**
   * Calls `method` in the worker with `params` (structured-cloned; `transfer` lists buffers in
   * them to move instead of copy). Resolves to the method's result; rejects with a Qcow2Error of
   * the code the worker threw, 'CLOSED' after `close`, or 'IO' when the worker failed to start.
   */
  call(method: string, params: readonly unknown[], transfer?: readonly Transferable[]): Promise<unknown>;
  /** Stops listening and rejects the calls in flight with 'CLOSED'. The worker is left running. */
  close(): void;
}

interface Pending {
  readonly method: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Qcow2Error) => void;
}

const CLIENT = Symbol.for('@qcow2/storage-opfs/worker-client');
const clients = new WeakMap<MessageEndpoint, WorkerClient>();

export function isWorkerClient(value: unknown): value is WorkerClient {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[CLIENT] === true;
}

/**
 * The one client of `endpoint` (a Worker, or a MessagePort) for this page: made on first use,
 * shared by every later caller, so all storages over one worker share one listener and one id
 * sequence.
 */
export function workerClientOf(endpoint: MessageEndpoint): WorkerClient {
  let client = clients.get(endpoint);
  if (client === undefined) {
    client = createWorkerClient(endpoint);
    clients.set(endpoint, client);
  }
  return client;
}

/**
 * Makes a client for the worker (or port) `endpoint`, matching responses to requests by id.
 * If the endpoint fires an 'error' event before the server was ever heard from (its script failed
 * to load or threw on start), the calls in flight reject with 'IO' instead of waiting forever;
 * later errors are the worker's own business and are ignored.
 */
export function createWorkerClient(endpoint: MessageEndpoint): WorkerClient {
  const pending = new Map<number, Pending>();
  const channel = newChannel();
  let nextId = 1;
  let heard = false;
  let closedBy: Qcow2Error | undefined;

  const onMessage = (event: Event): void => {
    const data = (event as MessageEvent).data;
    if (isRpcReady(data)) {
      heard = true;
      return;
    }
    if (!isRpcResponse(data)) return;
    heard = true;
    if (data.channel !== channel) return;
    const call = pending.get(data.id);
    if (call === undefined) return;
    pending.delete(data.id);
    if (data.ok) call.resolve(data.value);
    else call.reject(decodeRpcError(data.error, call.method));
  };
  const onError = (event: Event): void => {
    if (heard) return;
    const detail = (event as ErrorEvent).message;
    failAll(new Qcow2Error('IO', `worker: failed before serving any call${detail ? ` (${detail})` : ''}; is its script loading, and does it call serveOpfsStorage?`));
  };
  const failAll = (error: Qcow2Error): void => {
    const calls = [...pending.values()];
    pending.clear();
    for (const call of calls) call.reject(new Qcow2Error(error.code, `${call.method}: ${error.message}`));
  };
  endpoint.addEventListener('message', onMessage);
  endpoint.addEventListener('error', onError);
  endpoint.start?.();

  const client: WorkerClient & { readonly [CLIENT]: true } = {
    [CLIENT]: true,
    call(method, params, transfer = []) {
      if (closedBy !== undefined) return Promise.reject(new Qcow2Error('CLOSED', `${method}: ${closedBy.message}`));
      const id = nextId++;
      return new Promise<unknown>((resolve, reject) => {
        pending.set(id, { method, resolve, reject });
        try {
          endpoint.postMessage({ tag: RPC_TAG, channel, id, method, params } satisfies RpcRequest, { transfer: [...transfer] });
        } catch (cause) {
          pending.delete(id);
          const detail = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
          reject(new Qcow2Error('INVALID_ARGUMENT', `${method}: the call cannot be sent to the worker (${detail})`, { cause }));
        }
      });
    },
    close() {
      if (closedBy !== undefined) return;
      closedBy = new Qcow2Error('CLOSED', 'the worker client is closed');
      endpoint.removeEventListener('message', onMessage);
      endpoint.removeEventListener('error', onError);
      failAll(closedBy);
      if (clients.get(endpoint) === client) clients.delete(endpoint);
    },
  };
  return client;
}

let channels = 0;

/** A channel name no other client is likely to pick, with or without crypto.randomUUID. */
function newChannel(): string {
  const random = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto?.randomUUID?.();
  return `${random ?? Math.random().toString(36).slice(2)}-${++channels}`;
}
