// The WebSocket the y-websocket provider is given (its `WebSocketPolyfill`). y-websocket reads
// every message as a y-sync message, and the hub's extension frames are text: this wrapper
// hands binary frames to the provider and text frames to the session. It also lets the
// session count the update messages the provider sends (for "saved") and see the hub's close
// codes, while the provider keeps its own logic unchanged.
const OPEN = 1;
/** A WebSocket for the provider around a real one; see the file's comment. */
export class ChorusSocket {
    /** Constants as on the standard WebSocket, which y-websocket reads from instances. */
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    CONNECTING = 0;
    OPEN = 1;
    CLOSING = 2;
    CLOSED = 3;
    /** The provider sets `arraybuffer`; the real socket always gets `arraybuffer`. */
    binaryType = 'arraybuffer';
    /** The provider's handlers. */
    onopen = null;
    onmessage = null;
    onclose = null;
    onerror = null;
    real;
    hooks;
    closedLocally = false;
    constructor(url, protocols, Real, hooks) {
        this.hooks = hooks;
        // An empty list would make some implementations send an empty subprotocol header.
        this.real = protocols === undefined || protocols.length === 0 ? new Real(url) : new Real(url, protocols);
        this.real.binaryType = 'arraybuffer';
        this.real.onopen = (event) => {
            hooks.opened(this);
            this.onopen?.(event);
        };
        this.real.onmessage = (event) => {
            const { data } = event;
            if (typeof data === 'string') {
                hooks.text(this, data);
            }
            else if (data instanceof ArrayBuffer) {
                this.onmessage?.({ data });
            }
            else if (ArrayBuffer.isView(data)) {
                // A Node Buffer (a `ws` configured otherwise): copy out exactly its bytes.
                const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
                this.onmessage?.({ data: bytes.slice().buffer });
            }
            // Anything else (a Blob: binaryType was not honoured) is not a y-sync message we can read.
        };
        this.real.onerror = (event) => this.onerror?.(event);
        this.real.onclose = (event) => {
            // The provider first (it forgets this socket), then the session's policy.
            const local = this.closedLocally;
            const code = typeof event.code === 'number' ? event.code : 1006;
            const reason = typeof event.reason === 'string' ? event.reason : '';
            this.onclose?.({ code, reason });
            hooks.closed(this, code, reason, local);
        };
        hooks.created(this);
    }
    /** As the standard WebSocket's. */
    get readyState() {
        return this.real.readyState;
    }
    /** The provider's y-sync messages (binary). */
    send(data) {
        const bytes = ArrayBuffer.isView(data)
            ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
            : new Uint8Array(data);
        this.real.send(bytes);
        this.hooks.sent(this, bytes);
    }
    /** An extension frame from the session, if the socket is open; whether it went out. */
    sendText(text) {
        if (this.real.readyState !== OPEN)
            return false;
        this.real.send(text);
        return true;
    }
    /** Closes the socket (the provider does, when it disconnects or gives up on a silent one). */
    close(code, reason) {
        this.closedLocally = true;
        this.real.close(code, reason);
    }
}
/** A class with the constructor y-websocket calls (`new WS(url, protocols)`), bound to `Real` and `hooks`. */
export function socketClass(Real, hooks) {
    return class extends ChorusSocket {
        constructor(url, protocols) {
            super(url, protocols, Real, hooks);
        }
    };
}
