import { WebsocketProvider } from 'y-websocket';
import type { Awareness } from 'y-protocols/awareness';
import * as Y from 'yjs';
import { AiRun, type AskOptions } from './ai.js';
import { type ChatMessage } from './chat.js';
import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { type AiEvent, type WelcomeFrame } from './frames.js';
import { Backoff, type CloseAction } from './reconnect.js';
import { type WebSocketConstructor } from './socket.js';
/** The connection's state, as the provider reports it (`disconnected` also once the session stopped). */
export type SessionStatus = 'connecting' | 'connected' | 'disconnected';
/** Who a peer is, as far as its awareness state says. */
export interface PeerUser {
    /** The display name. */
    name?: string;
    /** A CSS colour. */
    color?: string;
}
/** Someone else in the room, from their awareness state. */
export interface Peer {
    /** Their Yjs client id. */
    clientId: number;
    /** `user.name` and `user.color` (the hub writes them from the token's `name` and `color` claims). */
    user: PeerUser;
    /** Their whole awareness state (cursors, selections, whatever their client publishes). */
    state: Record<string, unknown>;
}
/** A close by the hub and what the session does about it. */
export interface CloseInfo {
    /** The WebSocket close code (1006: the connection dropped or could not be made). */
    code: number;
    /** The hub's reason. */
    reason: string;
    /** What follows: a reconnect after `delayMs` (perhaps elsewhere), a token refresh, or a stop. */
    action: CloseAction;
}
/** A session's events. */
export type RoomSessionEvents = {
    /** The connection's state changed. */
    status: (status: SessionStatus) => void;
    /** The document is (or is no longer) in sync with the hub's. */
    synced: (synced: boolean) => void;
    /** Every change made here is (or is no longer) durable on the hub, as its `saved` frames say. */
    saved: (saved: boolean) => void;
    /** The hub's `welcome` frame: room, tenant, role and user of this connection. */
    welcome: (welcome: WelcomeFrame) => void;
    /** Someone joined, left, or changed their presence. */
    presence: (peers: Peer[]) => void;
    /** The chat changed (a message, or a streaming answer's text); the last 200 messages. */
    chat: (messages: ChatMessage[]) => void;
    /** Any assistant event on this connection (also those of runs asked elsewhere and answered here). */
    ai: (event: AiEvent) => void;
    /** The hub closed the socket, and what happens next. */
    close: (close: CloseInfo) => void;
    /**
     * Something failed. When `error.fatal`, the session stopped (4403 forbidden, 4404 deleted,
     * 4413 too large, 4401 without a fresh token, ...); otherwise the hub refused one thing
     * this connection sent (an `error` frame) and the connection goes on.
     */
    error: (error: ChorusError) => void;
};
/** Options of {@link ChorusClient.join}. */
export interface JoinOptions {
    /** The document to sync (default: a new one). */
    doc?: Y.Doc;
}
/** @internal What the client hands each session. */
export interface SessionConfig {
    room: string;
    /** `ws(s)://host[/path]/ws`: the provider adds `/<room>`. */
    serverUrl: string;
    WebSocket: WebSocketConstructor;
    token: string | undefined;
    getToken: ((room: string) => string | Promise<string>) | undefined;
    backoff: Backoff;
    disableBc: boolean;
    onLeave: (session: RoomSession) => void;
}
/** `ws(s)://.../ws` for a hub's base URL (`http(s)://` or `ws(s)://`, any path prefix kept). */
export declare function socketBase(hub: string): string;
/**
 * A room joined with {@link ChorusClient.join}: its document, presence, chat, assistant, and
 * the connection's state. Reconnects by close code until {@link RoomSession.leave} or a stop.
 */
export declare class RoomSession extends Emitter<RoomSessionEvents> {
    /** The room's name. */
    readonly room: string;
    /** The room's document, kept in sync with the hub's. */
    readonly doc: Y.Doc;
    /** The stock y-websocket provider behind the session (for bindings that want one). */
    readonly provider: WebsocketProvider;
    /** Presence (Yjs awareness), shared with the provider. */
    readonly awareness: Awareness;
    /** The hub's `welcome` on the current (or last) connection. */
    welcome: WelcomeFrame | undefined;
    /** The connection's state. */
    status: SessionStatus;
    private readonly config;
    private readonly tracker;
    private readonly runs;
    private current;
    private token;
    private lastSaved;
    /** Why the session stopped: set once, never cleared. */
    private stopped;
    private retryTimer;
    private readonly renewal;
    /** Token refreshes since the last sync: a token the hub keeps refusing is asked for with backoff. */
    private refreshes;
    /** `ai.ask` frames waiting for the document to be in sync (positions refer to its content). */
    private readonly queued;
    private readonly pings;
    /** whenSynced()/whenSaved() callers, told when the session stops. */
    private readonly stopWaiters;
    private pingId;
    private readonly onUpdate;
    private readonly onChat;
    private readonly onAwareness;
    /** @internal Use {@link ChorusClient.join}. */
    constructor(config: SessionConfig, options?: JoinOptions);
    /** Whether the document is in sync with the hub's (the hub's SyncStep2 arrived on this connection). */
    get synced(): boolean;
    /** Whether every change made here is durable on the hub (see the `saved` event). */
    get saved(): boolean;
    /** Why the session stopped, if it did. */
    get error(): ChorusError | undefined;
    /** Resolves once synced; rejects with the error that stops the session first. */
    whenSynced(): Promise<void>;
    /** Resolves once everything changed here is durable; rejects with the error that stops the session first. */
    whenSaved(): Promise<void>;
    private when;
    /**
     * Merges `fields` into this member's presence (its awareness state), e.g.
     * `{ cursor: {...} }`. `user.name` and `user.color` are overwritten by the hub with the
     * token's claims when it has them.
     */
    setPresence(fields: Record<string, unknown>): void;
    /** Removes this member's presence: the others see it leave. */
    clearPresence(): void;
    /** Everyone else in the room. */
    peers(): Peer[];
    /** The chat's last `limit` messages, oldest first. */
    messages(limit?: number): ChatMessage[];
    /**
     * Posts a chat message and returns its id. The author is the token's user (the hub's
     * `welcome`, or the token's `sub`) unless `author` is given.
     */
    send(text: string, options?: {
        author?: string;
        replyTo?: string;
    }): string;
    /**
     * Asks the assistant. The request goes out once the document is in sync (a position refers
     * to content the hub must have); the returned run streams its events and settles `done`.
     */
    ask(options: AskOptions): AiRun;
    /**
     * Measures a round trip to the hub (`ping` / `pong`), in milliseconds. Rejects if the
     * connection is not open, or closes before the answer.
     */
    ping(): Promise<number>;
    /** Leaves the room: closes the socket, stops reconnecting and removes this member's presence. */
    leave(): void;
    private params;
    private setToken;
    /** Sends an extension frame on the open socket; `false` if there is none. */
    private sendText;
    private setStatus;
    private onSync;
    private emitSaved;
    private onFrame;
    private onClose;
    private retryIn;
    /** Gets a token from `getToken` (after `delayMs`), then connects with it. */
    private refreshThenConnect;
    /** Renews the token over the open socket (`auth`) a while before it expires. */
    private scheduleRenewal;
    private stop;
    /** What waited for an answer on the connection will not get it. */
    private connectionLost;
}
