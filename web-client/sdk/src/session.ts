// One room: a Yjs document kept in sync by a stock y-websocket provider on
// `ws(s)://<hub>/ws/<room>?token=...&ext=1`, plus what the hub adds on the same socket
// (extension frames: welcome, saved, error, pong, authenticated, the assistant's events).
//
// The provider keeps its own sync and awareness logic; the session takes over only its
// reconnecting. The provider is built with `shouldReconnect: () => false`, so after any close
// by the hub it stops (`shouldConnect = false`) and the session decides, by close code
// (reconnect.ts), whether and when to call `provider.connect()` again: after a delay, with a
// fresh token (`provider.params.token`), or at the next home (`provider.serverUrl`). Closes
// the provider makes itself (it dropped a silent socket) it retries on its own, as stock.
import { WebsocketProvider } from 'y-websocket'
import type { Awareness } from 'y-protocols/awareness'
import * as Y from 'yjs'

import { AiRun, AiRuns, type AskOptions } from './ai.js'
import { type ChatMessage, chatOf, messages as readMessages, send as sendMessage } from './chat.js'
import { Emitter } from './emitter.js'
import { ChorusError } from './errors.js'
import { type AiEvent, authFrame, parseServerFrame, pingFrame, type ServerFrame, type WelcomeFrame } from './frames.js'
import { Backoff, type CloseAction, closeAction } from './reconnect.js'
import { SavedTracker } from './saved.js'
import { ChorusSocket, socketClass, type WebSocketConstructor } from './socket.js'
import { freshToken, RenewalTimer, tokenClaims } from './token.js'

/** The connection's state, as the provider reports it (`disconnected` also once the session stopped). */
export type SessionStatus = 'connecting' | 'connected' | 'disconnected'

/** Who a peer is, as far as its awareness state says. */
export interface PeerUser {
  /** The display name. */
  name?: string
  /** A CSS colour. */
  color?: string
}

/** Someone else in the room, from their awareness state. */
export interface Peer {
  /** Their Yjs client id. */
  clientId: number
  /** `user.name` and `user.color` (the hub writes them from the token's `name` and `color` claims). */
  user: PeerUser
  /** Their whole awareness state (cursors, selections, whatever their client publishes). */
  state: Record<string, unknown>
}

/** A close by the hub and what the session does about it. */
export interface CloseInfo {
  /** The WebSocket close code (1006: the connection dropped or could not be made). */
  code: number
  /** The hub's reason. */
  reason: string
  /** What follows: a reconnect after `delayMs` (perhaps elsewhere), a token refresh, or a stop. */
  action: CloseAction
}

/** A session's events. */
export type RoomSessionEvents = {
  /** The connection's state changed. */
  status: (status: SessionStatus) => void
  /** The document is (or is no longer) in sync with the hub's. */
  synced: (synced: boolean) => void
  /** Every change made here is (or is no longer) durable on the hub, as its `saved` frames say. */
  saved: (saved: boolean) => void
  /** The hub's `welcome` frame: room, tenant, role and user of this connection. */
  welcome: (welcome: WelcomeFrame) => void
  /** Someone joined, left, or changed their presence. */
  presence: (peers: Peer[]) => void
  /** The chat changed (a message, or a streaming answer's text); the last 200 messages. */
  chat: (messages: ChatMessage[]) => void
  /** Any assistant event on this connection (also those of runs asked elsewhere and answered here). */
  ai: (event: AiEvent) => void
  /** The hub closed the socket, and what happens next. */
  close: (close: CloseInfo) => void
  /**
   * Something failed. When `error.fatal`, the session stopped (4403 forbidden, 4404 deleted,
   * 4413 too large, 4401 without a fresh token, ...); otherwise the hub refused one thing
   * this connection sent (an `error` frame) and the connection goes on.
   */
  error: (error: ChorusError) => void
}

/** Options of {@link ChorusClient.join}. */
export interface JoinOptions {
  /** The document to sync (default: a new one). */
  doc?: Y.Doc
}

/** @internal What the client hands each session. */
export interface SessionConfig {
  room: string
  /** `ws(s)://host[/path]/ws`: the provider adds `/<room>`. */
  serverUrl: string
  WebSocket: WebSocketConstructor
  token: string | undefined
  getToken: ((room: string) => string | Promise<string>) | undefined
  backoff: Backoff
  disableBc: boolean
  onLeave: (session: RoomSession) => void
}

const OPEN = 1

/** `ws(s)://.../ws` for a hub's base URL (`http(s)://` or `ws(s)://`, any path prefix kept). */
export function socketBase(hub: string): string {
  const url = new URL(hub)
  if (url.protocol === 'http:') url.protocol = 'ws:'
  else if (url.protocol === 'https:') url.protocol = 'wss:'
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new Error(`not an http(s) or ws(s) URL: ${hub}`)
  url.search = ''
  url.hash = ''
  return `${url.toString().replace(/\/+$/, '')}/ws`
}

/**
 * A room joined with {@link ChorusClient.join}: its document, presence, chat, assistant, and
 * the connection's state. Reconnects by close code until {@link RoomSession.leave} or a stop.
 */
export class RoomSession extends Emitter<RoomSessionEvents> {
  /** The room's name. */
  readonly room: string
  /** The room's document, kept in sync with the hub's. */
  readonly doc: Y.Doc
  /** The stock y-websocket provider behind the session (for bindings that want one). */
  readonly provider: WebsocketProvider
  /** Presence (Yjs awareness), shared with the provider. */
  readonly awareness: Awareness
  /** The hub's `welcome` on the current (or last) connection. */
  welcome: WelcomeFrame | undefined
  /** The connection's state. */
  status: SessionStatus = 'connecting'

  private readonly config: SessionConfig
  private readonly tracker = new SavedTracker()
  private readonly runs: AiRuns
  private current: ChorusSocket | null = null
  private token: string | undefined
  private lastSaved = false
  /** Why the session stopped: set once, never cleared. */
  private stopped: ChorusError | undefined
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private readonly renewal = new RenewalTimer()
  /** Token refreshes since the last sync: a token the hub keeps refusing is asked for with backoff. */
  private refreshes = 0
  /** `ai.ask` frames waiting for the document to be in sync (positions refer to its content). */
  private readonly queued: string[] = []
  private readonly pings = new Map<number, { resolve: () => void; reject: (e: ChorusError) => void }>()
  /** whenSynced()/whenSaved() callers, told when the session stops. */
  private readonly stopWaiters = new Set<(error: ChorusError) => void>()
  private pingId = 0
  private readonly onUpdate: (update: Uint8Array, origin: unknown) => void
  private readonly onChat: () => void
  private readonly onAwareness: () => void

  /** @internal Use {@link ChorusClient.join}. */
  constructor(config: SessionConfig, options: JoinOptions = {}) {
    super()
    this.config = config
    this.room = config.room
    this.doc = options.doc ?? new Y.Doc()
    this.token = config.token
    this.runs = new AiRuns({ sendText: (text) => this.sendText(text) })
    const WS = socketClass(config.WebSocket, {
      created: (socket) => {
        this.current = socket
      },
      opened: (socket) => {
        if (socket === this.current) this.tracker.opened()
      },
      sent: (socket, frame) => {
        if (socket !== this.current) return
        this.tracker.sentFrame(frame)
        this.emitSaved()
      },
      text: (socket, text) => {
        if (socket !== this.current) return
        const frame = parseServerFrame(text)
        if (frame) this.onFrame(frame)
      },
      closed: (socket, code, reason, local) => this.onClose(socket, code, reason, local),
    })
    this.provider = new WebsocketProvider(config.serverUrl, encodeURIComponent(config.room), this.doc, {
      connect: false,
      params: this.params(),
      // y-websocket uses a part of the WebSocket interface, which ChorusSocket implements.
      WebSocketPolyfill: WS as unknown as typeof WebSocket,
      disableBc: config.disableBc,
      shouldReconnect: () => false,
    })
    this.awareness = this.provider.awareness

    this.provider.on('status', ({ status }) => this.setStatus(status))
    this.provider.on('sync', (synced: boolean) => this.onSync(synced))
    this.onUpdate = (_update, origin) => {
      if (origin === this.provider) return
      // The provider's own listener ran first: with its socket open, the change went out.
      const ws = this.provider.ws
      this.tracker.localChange(this.provider.wsconnected && ws !== null && ws.readyState === OPEN)
      this.emitSaved()
    }
    this.doc.on('update', this.onUpdate)
    this.onChat = () => {
      if (this.listening('chat')) this.emit('chat', this.messages())
    }
    chatOf(this.doc).observeDeep(this.onChat)
    this.onAwareness = () => {
      if (this.listening('presence')) this.emit('presence', this.peers())
    }
    this.awareness.on('change', this.onAwareness)

    if (this.token === undefined && config.getToken) {
      void this.refreshThenConnect(0)
    } else {
      this.scheduleRenewal()
      this.provider.connect()
    }
  }

  // ---- state -------------------------------------------------------------------------------

  /** Whether the document is in sync with the hub's (the hub's SyncStep2 arrived on this connection). */
  get synced(): boolean {
    return this.provider.synced
  }

  /** Whether every change made here is durable on the hub (see the `saved` event). */
  get saved(): boolean {
    return this.tracker.saved
  }

  /** Why the session stopped, if it did. */
  get error(): ChorusError | undefined {
    return this.stopped
  }

  /** Resolves once synced; rejects with the error that stops the session first. */
  whenSynced(): Promise<void> {
    return this.when('synced', () => this.synced)
  }

  /** Resolves once everything changed here is durable; rejects with the error that stops the session first. */
  whenSaved(): Promise<void> {
    return this.when('saved', () => this.saved)
  }

  private when(event: 'synced' | 'saved', ready: () => boolean): Promise<void> {
    if (ready()) return Promise.resolve()
    if (this.stopped) return Promise.reject(this.stopped)
    return new Promise<void>((resolve, reject) => {
      const off = this.on(event, (value: boolean) => {
        if (!value) return
        off()
        this.stopWaiters.delete(fail)
        resolve()
      })
      const fail = (error: ChorusError) => {
        off()
        reject(error)
      }
      this.stopWaiters.add(fail)
    })
  }

  // ---- presence and chat -------------------------------------------------------------------

  /**
   * Merges `fields` into this member's presence (its awareness state), e.g.
   * `{ cursor: {...} }`. `user.name` and `user.color` are overwritten by the hub with the
   * token's claims when it has them.
   */
  setPresence(fields: Record<string, unknown>): void {
    this.awareness.setLocalState({ ...(this.awareness.getLocalState() ?? {}), ...fields })
  }

  /** Removes this member's presence: the others see it leave. */
  clearPresence(): void {
    this.awareness.setLocalState(null)
  }

  /** Everyone else in the room. */
  peers(): Peer[] {
    const out: Peer[] = []
    this.awareness.getStates().forEach((state, clientId) => {
      if (clientId === this.doc.clientID || !state || typeof state !== 'object') return
      const user: PeerUser = {}
      const u: unknown = state.user
      if (u && typeof u === 'object') {
        const { name, color } = u as Record<string, unknown>
        if (typeof name === 'string') user.name = name
        if (typeof color === 'string') user.color = color
      }
      out.push({ clientId, user, state })
    })
    return out
  }

  /** The chat's last `limit` messages, oldest first. */
  messages(limit = 200): ChatMessage[] {
    return readMessages(this.doc, limit)
  }

  /**
   * Posts a chat message and returns its id. The author is the token's user (the hub's
   * `welcome`, or the token's `sub`) unless `author` is given.
   */
  send(text: string, options: { author?: string; replyTo?: string } = {}): string {
    const author =
      options.author ?? this.welcome?.user ?? (this.token !== undefined ? tokenClaims(this.token).sub : undefined) ?? 'anonymous'
    return sendMessage(this.doc, author, text, Date.now(), options.replyTo)
  }

  // ---- the assistant -----------------------------------------------------------------------

  /**
   * Asks the assistant. The request goes out once the document is in sync (a position refers
   * to content the hub must have); the returned run streams its events and settles `done`.
   */
  ask(options: AskOptions): AiRun {
    const { run, frame } = this.runs.ask(options)
    if (this.stopped) {
      run.disconnected()
    } else if (this.synced && this.sendText(frame)) {
      // sent
    } else {
      this.queued.push(frame)
    }
    return run
  }

  /**
   * Measures a round trip to the hub (`ping` / `pong`), in milliseconds. Rejects if the
   * connection is not open, or closes before the answer.
   */
  ping(): Promise<number> {
    const id = ++this.pingId
    const started = Date.now()
    return new Promise<number>((resolve, reject) => {
      if (!this.sendText(pingFrame(id))) {
        reject(new ChorusError('disconnected', 1006, 'not connected', false))
        return
      }
      this.pings.set(id, { resolve: () => resolve(Date.now() - started), reject })
    })
  }

  // ---- leaving -----------------------------------------------------------------------------

  /** Leaves the room: closes the socket, stops reconnecting and removes this member's presence. */
  leave(): void {
    if (this.stopped?.kind === 'closed') return
    this.stop(new ChorusError('closed', 1000, 'left the room', true), false)
    this.config.onLeave(this)
  }

  // ---- internals ---------------------------------------------------------------------------

  private params(): Record<string, string> {
    return this.token !== undefined ? { token: this.token, ext: '1' } : { ext: '1' }
  }

  private setToken(token: string): void {
    this.token = token
    // Read by the provider when it opens its next socket.
    this.provider.params = this.params()
    this.scheduleRenewal()
  }

  /** Sends an extension frame on the open socket; `false` if there is none. */
  private sendText(text: string): boolean {
    return this.current !== null && !this.stopped && this.current.sendText(text)
  }

  private setStatus(status: SessionStatus): void {
    if (this.stopped && status !== 'disconnected') return
    if (status === this.status) return
    this.status = status
    this.emit('status', status)
  }

  private onSync(synced: boolean): void {
    if (synced) {
      this.config.backoff.reset()
      this.refreshes = 0
      for (const frame of this.queued.splice(0)) {
        if (!this.sendText(frame)) this.queued.push(frame)
      }
    }
    this.emit('synced', synced)
  }

  private emitSaved(): void {
    const saved = this.tracker.saved
    if (saved === this.lastSaved) return
    this.lastSaved = saved
    this.emit('saved', saved)
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'welcome':
        this.welcome = frame
        this.emit('welcome', frame)
        break
      case 'saved':
        this.tracker.ack(frame.updates)
        this.emitSaved()
        break
      case 'error':
        this.emit('error', new ChorusError('hub', frame.code, frame.message, false))
        break
      case 'pong':
        if (frame.id !== undefined) {
          this.pings.get(frame.id)?.resolve()
          this.pings.delete(frame.id)
        }
        break
      case 'authenticated':
        break
      default:
        this.runs.route(frame)
        this.emit('ai', frame)
    }
  }

  private onClose(socket: ChorusSocket, code: number, reason: string, local: boolean): void {
    if (socket !== this.current) return
    this.current = null
    this.tracker.closed()
    this.emitSaved()
    this.connectionLost()
    // The provider closed it (a silent socket, or leave()): it reconnects by itself, or not.
    if (local || this.stopped) return
    const action = closeAction(code, reason, this.config.backoff)
    this.emit('close', { code, reason, action })
    switch (action.kind) {
      case 'retry':
        if (action.url !== undefined) this.provider.serverUrl = socketBase(action.url)
        this.retryIn(action.delayMs)
        break
      case 'refresh-token':
        this.refreshes += 1
        void this.refreshThenConnect(this.refreshes === 1 ? 0 : this.config.backoff.next(), reason)
        break
      case 'stop':
        this.stop(
          action.error
            ? new ChorusError(action.error.kind, action.error.code, action.error.reason, true)
            : new ChorusError('closed', code, reason, true),
          action.error !== undefined,
        )
        break
    }
  }

  private retryIn(delayMs: number): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      if (!this.stopped) this.provider.connect()
    }, delayMs)
  }

  /** Gets a token from `getToken` (after `delayMs`), then connects with it. */
  private async refreshThenConnect(delayMs: number, reason = 'token refused'): Promise<void> {
    const getToken = this.config.getToken
    if (!getToken) {
      this.stop(new ChorusError('unauthenticated', 4401, reason, true), true)
      return
    }
    if (delayMs > 0) await new Promise((resolve) => (this.retryTimer = setTimeout(resolve, delayMs)))
    if (this.stopped) return
    let token: string
    try {
      token = await freshToken(getToken, this.room, true)
    } catch (e) {
      this.stop(e as ChorusError, true)
      return
    }
    if (this.stopped) return
    this.setToken(token)
    this.provider.connect()
  }

  /** Renews the token over the open socket (`auth`) a while before it expires. */
  private scheduleRenewal(): void {
    const getToken = this.config.getToken
    if (!getToken || this.stopped) return
    this.renewal.schedule(this.token, () => {
      freshToken(getToken, this.room, false).then(
        (token) => {
          if (this.stopped) return
          this.setToken(token)
          // A session that is not connected now uses the token when it next connects.
          this.sendText(authFrame(token))
        },
        // Not fatal yet: when the token expires the hub closes with 4401, and that refresh decides.
        (e: ChorusError) => this.emit('error', e),
      )
    })
  }

  private stop(error: ChorusError, report: boolean): void {
    if (this.stopped) return
    this.stopped = error
    clearTimeout(this.retryTimer)
    this.renewal.cancel()
    this.queued.length = 0
    this.connectionLost()
    this.doc.off('update', this.onUpdate)
    chatOf(this.doc).unobserveDeep(this.onChat)
    this.awareness.off('change', this.onAwareness)
    // Tells the others this member left (its awareness state goes null), then closes.
    this.provider.destroy()
    // The provider made the awareness; its timer would keep a Node process alive.
    this.awareness.destroy()
    this.current = null
    if (report) this.emit('error', error)
    this.setStatus('disconnected')
    for (const fail of [...this.stopWaiters]) fail(error)
    this.stopWaiters.clear()
  }

  /** What waited for an answer on the connection will not get it. */
  private connectionLost(): void {
    this.runs.disconnected()
    for (const { reject } of this.pings.values()) reject(new ChorusError('disconnected', 1006, 'the connection closed', false))
    this.pings.clear()
  }
}
