// The WebSocket the y-websocket provider is given (its `WebSocketPolyfill`). y-websocket reads
// every message as a y-sync message, and the hub's extension frames are text: this wrapper
// hands binary frames to the provider and text frames to the session. It also lets the
// session count the update messages the provider sends (for "saved") and see the hub's close
// codes, while the provider keeps its own logic unchanged.

/** Listener types that accept the DOM's and the `ws` package's handlers alike. */
type Handler<E> = { bivarianceHack(event: E): void }['bivarianceHack']

/**
 * What the SDK needs of a WebSocket: the browser's `WebSocket` and the `ws` package's class
 * both fit.
 */
export interface WebSocketLike {
  /** Set to `arraybuffer`. */
  binaryType: string
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number
  /** Called when the socket opens. */
  onopen: Handler<unknown> | null
  /** Called for each message: `data` is a string for text frames, an ArrayBuffer for binary ones. */
  onmessage: Handler<{ data: unknown }> | null
  /** Called once when the socket closed, with the close code and reason. */
  onclose: Handler<{ code: number; reason: string }> | null
  /** Called on an error (a close follows). */
  onerror: Handler<unknown> | null
  /** Sends a frame. */
  send(data: string | ArrayBufferLike | ArrayBufferView): void
  /** Closes the socket. */
  close(code?: number, reason?: string): void
}

/** A WebSocket class: `globalThis.WebSocket` in browsers (and Node 22), `ws` in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike

/** What the session hears from its sockets. */
export interface SocketHooks {
  /** The provider made a new socket (it becomes the session's current one). */
  created(socket: ChorusSocket): void
  /** The socket opened (called before the provider hears of it). */
  opened(socket: ChorusSocket): void
  /** The provider sent a binary frame. */
  sent(socket: ChorusSocket, frame: Uint8Array): void
  /** The hub sent a text frame (an extension frame). */
  text(socket: ChorusSocket, text: string): void
  /** The socket closed (called after the provider heard of it); `local`: this side closed it. */
  closed(socket: ChorusSocket, code: number, reason: string, local: boolean): void
}

const OPEN = 1

/** A WebSocket for the provider around a real one; see the file's comment. */
export class ChorusSocket {
  /** Constants as on the standard WebSocket, which y-websocket reads from instances. */
  static readonly CONNECTING = 0
  static readonly OPEN = 1
  static readonly CLOSING = 2
  static readonly CLOSED = 3
  readonly CONNECTING = 0
  readonly OPEN = 1
  readonly CLOSING = 2
  readonly CLOSED = 3

  /** The provider sets `arraybuffer`; the real socket always gets `arraybuffer`. */
  binaryType = 'arraybuffer'
  /** The provider's handlers. */
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: ArrayBuffer }) => void) | null = null
  onclose: ((event: { code: number; reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null

  private readonly real: WebSocketLike
  private readonly hooks: SocketHooks
  private closedLocally = false

  constructor(url: string, protocols: string | string[] | undefined, Real: WebSocketConstructor, hooks: SocketHooks) {
    this.hooks = hooks
    // An empty list would make some implementations send an empty subprotocol header.
    this.real = protocols === undefined || protocols.length === 0 ? new Real(url) : new Real(url, protocols)
    this.real.binaryType = 'arraybuffer'
    this.real.onopen = (event) => {
      hooks.opened(this)
      this.onopen?.(event)
    }
    this.real.onmessage = (event) => {
      const { data } = event
      if (typeof data === 'string') {
        hooks.text(this, data)
      } else if (data instanceof ArrayBuffer) {
        this.onmessage?.({ data })
      } else if (ArrayBuffer.isView(data)) {
        // A Node Buffer (a `ws` configured otherwise): copy out exactly its bytes.
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        this.onmessage?.({ data: bytes.slice().buffer })
      }
      // Anything else (a Blob: binaryType was not honoured) is not a y-sync message we can read.
    }
    this.real.onerror = (event) => this.onerror?.(event)
    this.real.onclose = (event) => {
      // The provider first (it forgets this socket), then the session's policy.
      const local = this.closedLocally
      const code = typeof event.code === 'number' ? event.code : 1006
      const reason = typeof event.reason === 'string' ? event.reason : ''
      this.onclose?.({ code, reason })
      hooks.closed(this, code, reason, local)
    }
    hooks.created(this)
  }

  /** As the standard WebSocket's. */
  get readyState(): number {
    return this.real.readyState
  }

  /** The provider's y-sync messages (binary). */
  send(data: ArrayBufferLike | ArrayBufferView): void {
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data)
    this.real.send(bytes)
    this.hooks.sent(this, bytes)
  }

  /** An extension frame from the session, if the socket is open; whether it went out. */
  sendText(text: string): boolean {
    if (this.real.readyState !== OPEN) return false
    this.real.send(text)
    return true
  }

  /** Closes the socket (the provider does, when it disconnects or gives up on a silent one). */
  close(code?: number, reason?: string): void {
    this.closedLocally = true
    this.real.close(code, reason)
  }
}

/** A class with the constructor y-websocket calls (`new WS(url, protocols)`), bound to `Real` and `hooks`. */
export function socketClass(Real: WebSocketConstructor, hooks: SocketHooks): new (url: string, protocols?: string | string[]) => ChorusSocket {
  return class extends ChorusSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, Real, hooks)
    }
  }
}
