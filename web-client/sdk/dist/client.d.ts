import { type JoinOptions, RoomSession } from './session.js';
import type { WebSocketConstructor } from './socket.js';
/** Reconnect delays: full jitter below a ceiling that doubles from `baseMs` to `capMs`. */
export interface BackoffOptions {
    /** The first ceiling, in milliseconds (default 250). */
    baseMs?: number;
    /** The largest ceiling, in milliseconds (default 30000). */
    capMs?: number;
    /** Numbers in [0, 1) (default `Math.random`; tests fix it). */
    random?: () => number;
}
/** Options of {@link ChorusClient}. */
export interface ChorusClientOptions {
    /** The hub: `http(s)://host:port` or `ws(s)://host:port` (a path prefix is kept). */
    url: string;
    /** A JWT for the rooms (docs/PROTOCOL.md "Authentication"); none: anonymous, where the hub allows it. */
    token?: string;
    /**
     * Gets a fresh token for a room: called when the hub refuses or expires the current one
     * (close 4401), before it expires (renewed over the open socket), and at the first connect
     * when `token` is not given. A rejection stops the session with an `unauthenticated` error.
     */
    getToken?: (room: string) => string | Promise<string>;
    /** The WebSocket class: default `globalThis.WebSocket` (browsers, Node 22); in Node 20 pass the `ws` package's. */
    WebSocket?: WebSocketConstructor;
    /** Reconnect delays. */
    backoff?: BackoffOptions;
    /**
     * Skip y-websocket's BroadcastChannel between sessions of one room in one browser (default:
     * skipped outside browsers, where it would hide what the hub does).
     */
    disableBc?: boolean;
}
/**
 * A connection to a Chorus hub, from a browser or Node.
 *
 * ```ts
 * const client = new ChorusClient({ url: 'http://127.0.0.1:8080', token, WebSocket: ws })
 * const room = client.join('notes')
 * await room.whenSynced()
 * room.doc.getText('body').insert(0, 'hello')
 * await room.whenSaved()
 * client.close()
 * ```
 */
export declare class ChorusClient {
    private readonly options;
    private readonly WS;
    private readonly base;
    private readonly open;
    constructor(options: ChorusClientOptions);
    /** Joins `room`: the session connects at once and reconnects by close code until it is left. */
    join(room: string, options?: JoinOptions): RoomSession;
    /** The sessions joined and not left. */
    get sessions(): RoomSession[];
    /** Leaves every room. */
    close(): void;
}
