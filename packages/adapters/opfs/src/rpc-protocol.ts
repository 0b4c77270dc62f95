import { isQcow2Error, Qcow2Error, type Qcow2ErrorCode } from '@qcow2/storage';

/**
 * The wire format between `createWorkerClient` (page) and `createWorkerServer` (worker): plain
 * structured-clone objects tagged with `RPC_TAG`, so other messages on the same channel are left
 * alone. Requests carry the calling client's `channel` (random, so several clients of one worker,
 * even from two copies of this package, never take each other's answers) and an id; each gets
 * exactly one response with the same channel and id.
 */
export const RPC_TAG = '@qcow2/rpc/1';

export interface RpcRequest {
  readonly tag: typeof RPC_TAG;
  readonly channel: string;
  readonly id: number;
  readonly method: string;
  readonly params: readonly unknown[];
}

export interface RpcError {
  readonly code: Qcow2ErrorCode;
  readonly message: string;
}

interface RpcResponseHead {
  readonly tag: typeof RPC_TAG;
  readonly channel: string;
  readonly id: number;
}

export type RpcResponse =
  | (RpcResponseHead & { readonly ok: true; readonly value: unknown })
  | (RpcResponseHead & { readonly ok: false; readonly error: RpcError });

/** Posted once by a server when it starts listening. */
export interface RpcReady {
  readonly tag: typeof RPC_TAG;
  readonly ready: true;
}

function tagged(value: unknown): value is { tag: typeof RPC_TAG } {
  return typeof value === 'object' && value !== null && (value as { tag?: unknown }).tag === RPC_TAG;
}

export function isRpcRequest(value: unknown): value is RpcRequest {
  return (
    tagged(value) &&
    typeof (value as { channel?: unknown }).channel === 'string' &&
    typeof (value as { id?: unknown }).id === 'number' &&
    typeof (value as { method?: unknown }).method === 'string' &&
    Array.isArray((value as { params?: unknown }).params)
  );
}

export function isRpcResponse(value: unknown): value is RpcResponse {
  return (
    tagged(value) &&
    typeof (value as { channel?: unknown }).channel === 'string' &&
    typeof (value as { id?: unknown }).id === 'number' &&
    typeof (value as { ok?: unknown }).ok === 'boolean'
  );
}

export function isRpcReady(value: unknown): value is RpcReady {
  return tagged(value) && (value as { ready?: unknown }).ready === true;
}

/** Every code, checked both ways by the compiler: a code added to or removed from Qcow2ErrorCode breaks this. */
const CODES: Record<Qcow2ErrorCode, true> = {
  CORRUPT: true,
  UNSUPPORTED: true,
  INVALID_ARGUMENT: true,
  READ_ONLY: true,
  IO: true,
  NOT_FOUND: true,
  CLOSED: true,
};

function isCode(value: unknown): value is Qcow2ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(CODES, value);
}

/** What crosses the channel for a failed call: the code and message of a Qcow2Error; anything else becomes 'IO'. */
export function encodeRpcError(error: unknown, method: string): RpcError {
  if (isQcow2Error(error)) return { code: error.code, message: error.message };
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return { code: 'IO', message: `worker method ${method} failed: ${detail}` };
}

/** Re-creates the Qcow2Error of a failed call on the calling side, with the same code and message. */
export function decodeRpcError(error: unknown, method: string): Qcow2Error {
  const { code, message } = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown; message?: unknown };
  if (isCode(code) && typeof message === 'string') return new Qcow2Error(code, message);
  return new Qcow2Error('IO', `worker method ${method}: the worker sent a malformed error`);
}

const TRANSFER: unique symbol = Symbol.for('@qcow2/storage-opfs/transfer');

/** A method's result together with the buffers to transfer (not copy) to the caller. */
export interface Transferred<T> {
  readonly [TRANSFER]: true;
  readonly value: T;
  readonly transfer: readonly Transferable[];
}

/**
 * Wraps a worker method's result so that `transfer` (ArrayBuffers inside `value`) moves to the
 * caller instead of being copied. The worker's copies become detached.
 */
export function withTransfer<T>(value: T, transfer: readonly Transferable[]): Transferred<T> {
  return { [TRANSFER]: true, value, transfer };
}

export function isTransferred(value: unknown): value is Transferred<unknown> {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[TRANSFER] === true;
}
