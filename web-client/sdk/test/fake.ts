// A WebSocket without a network, and a stand-in for the hub's side of the y-sync protocol,
// so the session's behaviour (close codes, saved counting, extension frames) is tested
// deterministically with fake timers.
import * as encoding from 'lib0/encoding'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'

import { ChorusClient, type ChorusClientOptions } from '../src/index.js'

type Handler = ((event: never) => void) | null

/** One socket the session opened; the test plays the hub. */
export class FakeSocket {
  static all: FakeSocket[] = []
  binaryType = 'blob'
  readyState = 0
  onopen: Handler = null
  onmessage: Handler = null
  onclose: Handler = null
  onerror: Handler = null
  /** What the client sent: strings are text frames. */
  readonly sent: Array<string | Uint8Array> = []

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this)
  }

  static last(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1]
    if (!s) throw new Error('no socket was opened')
    return s
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open')
    if (typeof data === 'string') this.sent.push(data)
    else if (ArrayBuffer.isView(data)) this.sent.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice())
    else this.sent.push(new Uint8Array(data).slice())
  }

  close(): void {
    if (this.readyState === 3) return
    this.readyState = 3
    this.fire('onclose', { code: 1005, reason: '' })
  }

  // ---- the hub's side ----

  open(): void {
    this.readyState = 1
    this.fire('onopen', {})
  }

  receive(data: Uint8Array | string): void {
    this.fire('onmessage', { data: typeof data === 'string' ? data : data.slice().buffer })
  }

  frame(obj: Record<string, unknown>): void {
    this.receive(JSON.stringify({ v: 1, ...obj }))
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3
    this.fire('onclose', { code, reason })
  }

  /** Text frames the client sent, parsed. */
  texts(): Array<Record<string, unknown>> {
    return this.sent.filter((m): m is string => typeof m === 'string').map((m) => JSON.parse(m) as Record<string, unknown>)
  }

  /** Binary frames the client sent that are update messages (`0,1` / `0,2`). */
  updates(): Uint8Array[] {
    return this.sent.filter((m): m is Uint8Array => typeof m !== 'string' && m[0] === 0 && (m[1] === 1 || m[1] === 2))
  }

  private fire(name: 'onopen' | 'onmessage' | 'onclose' | 'onerror', event: unknown): void {
    const h = this[name] as ((e: unknown) => void) | null
    h?.(event)
  }
}

/** The hub's SyncStep1 for `doc`. */
export function syncStep1(doc: Y.Doc): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  syncProtocol.writeSyncStep1(e, doc)
  return encoding.toUint8Array(e)
}

/** The hub's SyncStep2 (its whole document) for a client with an empty state. */
export function syncStep2(doc: Y.Doc): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  syncProtocol.writeSyncStep2(e, doc)
  return encoding.toUint8Array(e)
}

/** An awareness message carrying `awareness`'s own state. */
export function awarenessMessage(awareness: awarenessProtocol.Awareness): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, [awareness.clientID]))
  return encoding.toUint8Array(e)
}

/** Opens the last socket and syncs it as the hub does: SyncStep1, SyncStep2 (an empty hub). */
export function connectAndSync(socket = FakeSocket.last(), hub = new Y.Doc()): FakeSocket {
  socket.open()
  socket.frame({ type: 'welcome', room: 'r', tenant: 'default', role: 'write', user: 'alice' })
  socket.receive(syncStep1(hub))
  socket.receive(syncStep2(hub))
  return socket
}

/** A client on the fake socket with deterministic backoff (each delay is 99 % of its ceiling). */
export function fakeClient(options: Partial<ChorusClientOptions> = {}): ChorusClient {
  return new ChorusClient({
    url: 'http://hub.test',
    token: 'tok',
    WebSocket: FakeSocket,
    backoff: { baseMs: 100, capMs: 1000, random: () => 0.99 },
    ...options,
  })
}

/** A JWT-shaped token (unsigned: the SDK never verifies) with these claims. */
export function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`
}
