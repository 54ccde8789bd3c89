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
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import { AiRun, AiRuns } from './ai.js';
import { chatOf, messages as readMessages, send as sendMessage } from './chat.js';
import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { authFrame, parseServerFrame, pingFrame } from './frames.js';
import { Backoff, closeAction } from './reconnect.js';
import { SavedTracker } from './saved.js';
import { ChorusSocket, socketClass } from './socket.js';
import { freshToken, RenewalTimer, tokenClaims } from './token.js';
const OPEN = 1;
/** `ws(s)://.../ws` for a hub's base URL (`http(s)://` or `ws(s)://`, any path prefix kept). */
export function socketBase(hub) {
    const url = new URL(hub);
    if (url.protocol === 'http:')
        url.protocol = 'ws:';
    else if (url.protocol === 'https:')
        url.protocol = 'wss:';
    else if (url.protocol !== 'ws:' && url.protocol !== 'wss:')
        throw new Error(`not an http(s) or ws(s) URL: ${hub}`);
    url.search = '';
    url.hash = '';
    return `${url.toString().replace(/\/+$/, '')}/ws`;
}
/**
 * A room joined with {@link ChorusClient.join}: its document, presence, chat, assistant, and
 * the connection's state. Reconnects by close code until {@link RoomSession.leave} or a stop.
 */
export class RoomSession extends Emitter {
    /** The room's name. */
    room;
    /** The room's document, kept in sync with the hub's. */
    doc;
    /** The stock y-websocket provider behind the session (for bindings that want one). */
    provider;
    /** Presence (Yjs awareness), shared with the provider. */
    awareness;
    /** The hub's `welcome` on the current (or last) connection. */
    welcome;
    /** The connection's state. */
    status = 'connecting';
    config;
    tracker = new SavedTracker();
    runs;
    current = null;
    token;
    lastSaved = false;
    /** Why the session stopped: set once, never cleared. */
    stopped;
    retryTimer;
    renewal = new RenewalTimer();
    /** Token refreshes since the last sync: a token the hub keeps refusing is asked for with backoff. */
    refreshes = 0;
    /** `ai.ask` frames waiting for the document to be in sync (positions refer to its content). */
    queued = [];
    pings = new Map();
    /** whenSynced()/whenSaved() callers, told when the session stops. */
    stopWaiters = new Set();
    pingId = 0;
    onUpdate;
    onChat;
    onAwareness;
    /** @internal Use {@link ChorusClient.join}. */
    constructor(config, options = {}) {
        super();
        this.config = config;
        this.room = config.room;
        this.doc = options.doc ?? new Y.Doc();
        this.token = config.token;
        this.runs = new AiRuns({ sendText: (text) => this.sendText(text) });
        const WS = socketClass(config.WebSocket, {
            created: (socket) => {
                this.current = socket;
            },
            opened: (socket) => {
                if (socket === this.current)
                    this.tracker.opened();
            },
            sent: (socket, frame) => {
                if (socket !== this.current)
                    return;
                this.tracker.sentFrame(frame);
                this.emitSaved();
            },
            text: (socket, text) => {
                if (socket !== this.current)
                    return;
                const frame = parseServerFrame(text);
                if (frame)
                    this.onFrame(frame);
            },
            closed: (socket, code, reason, local) => this.onClose(socket, code, reason, local),
        });
        this.provider = new WebsocketProvider(config.serverUrl, encodeURIComponent(config.room), this.doc, {
            connect: false,
            params: this.params(),
            // y-websocket uses a part of the WebSocket interface, which ChorusSocket implements.
            WebSocketPolyfill: WS,
            disableBc: config.disableBc,
            shouldReconnect: () => false,
        });
        this.awareness = this.provider.awareness;
        this.provider.on('status', ({ status }) => this.setStatus(status));
        this.provider.on('sync', (synced) => this.onSync(synced));
        this.onUpdate = (_update, origin) => {
            if (origin === this.provider)
                return;
            // The provider's own listener ran first: with its socket open, the change went out.
            const ws = this.provider.ws;
            this.tracker.localChange(this.provider.wsconnected && ws !== null && ws.readyState === OPEN);
            this.emitSaved();
        };
        this.doc.on('update', this.onUpdate);
        this.onChat = () => {
            if (this.listening('chat'))
                this.emit('chat', this.messages());
        };
        chatOf(this.doc).observeDeep(this.onChat);
        this.onAwareness = () => {
            if (this.listening('presence'))
                this.emit('presence', this.peers());
        };
        this.awareness.on('change', this.onAwareness);
        if (this.token === undefined && config.getToken) {
            void this.refreshThenConnect(0);
        }
        else {
            this.scheduleRenewal();
            this.provider.connect();
        }
    }
    // ---- state -------------------------------------------------------------------------------
    /** Whether the document is in sync with the hub's (the hub's SyncStep2 arrived on this connection). */
    get synced() {
        return this.provider.synced;
    }
    /** Whether every change made here is durable on the hub (see the `saved` event). */
    get saved() {
        return this.tracker.saved;
    }
    /** Why the session stopped, if it did. */
    get error() {
        return this.stopped;
    }
    /** Resolves once synced; rejects with the error that stops the session first. */
    whenSynced() {
        return this.when('synced', () => this.synced);
    }
    /** Resolves once everything changed here is durable; rejects with the error that stops the session first. */
    whenSaved() {
        return this.when('saved', () => this.saved);
    }
    when(event, ready) {
        if (ready())
            return Promise.resolve();
        if (this.stopped)
            return Promise.reject(this.stopped);
        return new Promise((resolve, reject) => {
            const off = this.on(event, (value) => {
                if (!value)
                    return;
                off();
                this.stopWaiters.delete(fail);
                resolve();
            });
            const fail = (error) => {
                off();
                reject(error);
            };
            this.stopWaiters.add(fail);
        });
    }
    // ---- presence and chat -------------------------------------------------------------------
    /**
     * Merges `fields` into this member's presence (its awareness state), e.g.
     * `{ cursor: {...} }`. `user.name` and `user.color` are overwritten by the hub with the
     * token's claims when it has them.
     */
    setPresence(fields) {
        this.awareness.setLocalState({ ...(this.awareness.getLocalState() ?? {}), ...fields });
    }
    /** Removes this member's presence: the others see it leave. */
    clearPresence() {
        this.awareness.setLocalState(null);
    }
    /** Everyone else in the room. */
    peers() {
        const out = [];
        this.awareness.getStates().forEach((state, clientId) => {
            if (clientId === this.doc.clientID || !state || typeof state !== 'object')
                return;
            const user = {};
            const u = state.user;
            if (u && typeof u === 'object') {
                const { name, color } = u;
                if (typeof name === 'string')
                    user.name = name;
                if (typeof color === 'string')
                    user.color = color;
            }
            out.push({ clientId, user, state });
        });
        return out;
    }
    /** The chat's last `limit` messages, oldest first. */
    messages(limit = 200) {
        return readMessages(this.doc, limit);
    }
    /**
     * Posts a chat message and returns its id. The author is the token's user (the hub's
     * `welcome`, or the token's `sub`) unless `author` is given.
     */
    send(text, options = {}) {
        const author = options.author ?? this.welcome?.user ?? (this.token !== undefined ? tokenClaims(this.token).sub : undefined) ?? 'anonymous';
        return sendMessage(this.doc, author, text, Date.now(), options.replyTo);
    }
    // ---- the assistant -----------------------------------------------------------------------
    /**
     * Asks the assistant. The request goes out once the document is in sync (a position refers
     * to content the hub must have); the returned run streams its events and settles `done`.
     */
    ask(options) {
        const { run, frame } = this.runs.ask(options);
        if (this.stopped) {
            run.disconnected();
        }
        else if (this.synced && this.sendText(frame)) {
            // sent
        }
        else {
            this.queued.push(frame);
        }
        return run;
    }
    /**
     * Measures a round trip to the hub (`ping` / `pong`), in milliseconds. Rejects if the
     * connection is not open, or closes before the answer.
     */
    ping() {
        const id = ++this.pingId;
        const started = Date.now();
        return new Promise((resolve, reject) => {
            if (!this.sendText(pingFrame(id))) {
                reject(new ChorusError('disconnected', 1006, 'not connected', false));
                return;
            }
            this.pings.set(id, { resolve: () => resolve(Date.now() - started), reject });
        });
    }
    // ---- leaving -----------------------------------------------------------------------------
    /** Leaves the room: closes the socket, stops reconnecting and removes this member's presence. */
    leave() {
        if (this.stopped?.kind === 'closed')
            return;
        this.stop(new ChorusError('closed', 1000, 'left the room', true), false);
        this.config.onLeave(this);
    }
    // ---- internals ---------------------------------------------------------------------------
    params() {
        return this.token !== undefined ? { token: this.token, ext: '1' } : { ext: '1' };
    }
    setToken(token) {
        this.token = token;
        // Read by the provider when it opens its next socket.
        this.provider.params = this.params();
        this.scheduleRenewal();
    }
    /** Sends an extension frame on the open socket; `false` if there is none. */
    sendText(text) {
        return this.current !== null && !this.stopped && this.current.sendText(text);
    }
    setStatus(status) {
        if (this.stopped && status !== 'disconnected')
            return;
        if (status === this.status)
            return;
        this.status = status;
        this.emit('status', status);
    }
    onSync(synced) {
        if (synced) {
            this.config.backoff.reset();
            this.refreshes = 0;
            for (const frame of this.queued.splice(0)) {
                if (!this.sendText(frame))
                    this.queued.push(frame);
            }
        }
        this.emit('synced', synced);
    }
    emitSaved() {
        const saved = this.tracker.saved;
        if (saved === this.lastSaved)
            return;
        this.lastSaved = saved;
        this.emit('saved', saved);
    }
    onFrame(frame) {
        switch (frame.type) {
            case 'welcome':
                this.welcome = frame;
                this.emit('welcome', frame);
                break;
            case 'saved':
                this.tracker.ack(frame.updates);
                this.emitSaved();
                break;
            case 'error':
                this.emit('error', new ChorusError('hub', frame.code, frame.message, false));
                break;
            case 'pong':
                if (frame.id !== undefined) {
                    this.pings.get(frame.id)?.resolve();
                    this.pings.delete(frame.id);
                }
                break;
            case 'authenticated':
                break;
            default:
                this.runs.route(frame);
                this.emit('ai', frame);
        }
    }
    onClose(socket, code, reason, local) {
        if (socket !== this.current)
            return;
        this.current = null;
        this.tracker.closed();
        this.emitSaved();
        this.connectionLost();
        // The provider closed it (a silent socket, or leave()): it reconnects by itself, or not.
        if (local || this.stopped)
            return;
        const action = closeAction(code, reason, this.config.backoff);
        this.emit('close', { code, reason, action });
        switch (action.kind) {
            case 'retry':
                if (action.url !== undefined)
                    this.provider.serverUrl = socketBase(action.url);
                this.retryIn(action.delayMs);
                break;
            case 'refresh-token':
                this.refreshes += 1;
                void this.refreshThenConnect(this.refreshes === 1 ? 0 : this.config.backoff.next(), reason);
                break;
            case 'stop':
                this.stop(action.error
                    ? new ChorusError(action.error.kind, action.error.code, action.error.reason, true)
                    : new ChorusError('closed', code, reason, true), action.error !== undefined);
                break;
        }
    }
    retryIn(delayMs) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            if (!this.stopped)
                this.provider.connect();
        }, delayMs);
    }
    /** Gets a token from `getToken` (after `delayMs`), then connects with it. */
    async refreshThenConnect(delayMs, reason = 'token refused') {
        const getToken = this.config.getToken;
        if (!getToken) {
            this.stop(new ChorusError('unauthenticated', 4401, reason, true), true);
            return;
        }
        if (delayMs > 0)
            await new Promise((resolve) => (this.retryTimer = setTimeout(resolve, delayMs)));
        if (this.stopped)
            return;
        let token;
        try {
            token = await freshToken(getToken, this.room, true);
        }
        catch (e) {
            this.stop(e, true);
            return;
        }
        if (this.stopped)
            return;
        this.setToken(token);
        this.provider.connect();
    }
    /** Renews the token over the open socket (`auth`) a while before it expires. */
    scheduleRenewal() {
        const getToken = this.config.getToken;
        if (!getToken || this.stopped)
            return;
        this.renewal.schedule(this.token, () => {
            freshToken(getToken, this.room, false).then((token) => {
                if (this.stopped)
                    return;
                this.setToken(token);
                // A session that is not connected now uses the token when it next connects.
                this.sendText(authFrame(token));
            }, 
            // Not fatal yet: when the token expires the hub closes with 4401, and that refresh decides.
            (e) => this.emit('error', e));
        });
    }
    stop(error, report) {
        if (this.stopped)
            return;
        this.stopped = error;
        clearTimeout(this.retryTimer);
        this.renewal.cancel();
        this.queued.length = 0;
        this.connectionLost();
        this.doc.off('update', this.onUpdate);
        chatOf(this.doc).unobserveDeep(this.onChat);
        this.awareness.off('change', this.onAwareness);
        // Tells the others this member left (its awareness state goes null), then closes.
        this.provider.destroy();
        // The provider made the awareness; its timer would keep a Node process alive.
        this.awareness.destroy();
        this.current = null;
        if (report)
            this.emit('error', error);
        this.setStatus('disconnected');
        for (const fail of [...this.stopWaiters])
            fail(error);
        this.stopWaiters.clear();
    }
    /** What waited for an answer on the connection will not get it. */
    connectionLost() {
        this.runs.disconnected();
        for (const { reject } of this.pings.values())
            reject(new ChorusError('disconnected', 1006, 'the connection closed', false));
        this.pings.clear();
    }
}
