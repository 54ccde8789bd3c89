// The entry point: where the hub is, how to get tokens, which WebSocket to use. Each joined
// room is a RoomSession with its own socket (y-websocket speaks one room per socket).
import { Backoff } from './reconnect.js';
import { RoomSession, socketBase } from './session.js';
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
export class ChorusClient {
    options;
    WS;
    base;
    open = new Set();
    constructor(options) {
        this.options = options;
        this.base = socketBase(options.url);
        const WS = options.WebSocket ?? globalThis.WebSocket;
        if (!WS)
            throw new Error('no WebSocket class: pass one as `WebSocket` (in Node 20, the `ws` package)');
        this.WS = WS;
    }
    /** Joins `room`: the session connects at once and reconnects by close code until it is left. */
    join(room, options = {}) {
        const b = this.options.backoff ?? {};
        const session = new RoomSession({
            room,
            serverUrl: this.base,
            WebSocket: this.WS,
            token: this.options.token,
            getToken: this.options.getToken,
            backoff: new Backoff(b.baseMs, b.capMs, b.random),
            disableBc: this.options.disableBc ?? typeof window === 'undefined',
            onLeave: (s) => this.open.delete(s),
        }, options);
        this.open.add(session);
        return session;
    }
    /** The sessions joined and not left. */
    get sessions() {
        return [...this.open];
    }
    /** Leaves every room. */
    close() {
        for (const session of [...this.open])
            session.leave();
    }
}
