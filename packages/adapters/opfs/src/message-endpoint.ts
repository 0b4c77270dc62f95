/**
 * One side of a message channel: a Worker (page side), a dedicated worker's global scope
 * (`self`, worker side) or a MessagePort. Declared structurally, so neither the DOM nor the
 * WebWorker library decides which of them fits (under the DOM library `self` is typed as a
 * Window, whose postMessage also takes the options form).
 */
export interface MessageEndpoint {
  /** The options form (`{ transfer }`), which Worker, MessagePort, worker scopes and Window all accept. */
  postMessage(message: unknown, options: { transfer: Transferable[] }): void;
  addEventListener(type: 'message' | 'messageerror' | 'error', listener: (event: Event) => void): void;
  removeEventListener(type: 'message' | 'messageerror' | 'error', listener: (event: Event) => void): void;
  /** A MessagePort must be started before it delivers messages to listeners. */
  start?: () => void;
}
