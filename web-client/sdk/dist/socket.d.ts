/** Listener types that accept the DOM's and the `ws` package's handlers alike. */
type Handler<E> = {
    bivarianceHack(event: E): void;
}['bivarianceHack'];
/**
 * What the SDK needs of a WebSocket: the browser's `WebSocket` and the `ws` package's class
 * both fit.
 */
export interface WebSocketLike {
    /** Set to `arraybuffer`. */
    binaryType: string;
    /** 0 connecting, 1 open, 2 closing, 3 closed. */
    readonly readyState: number;
    /** Called when the socket opens. */
    onopen: Handler<unknown> | null;
    /** Called for each message: `data` is a string for text frames, an ArrayBuffer for binary ones. */
    onmessage: Handler<{
        data: unknown;
    }> | null;
    /** Called once when the socket closed, with the close code and reason. */
    onclose: Handler<{
        code: number;
        reason: string;
    }> | null;
    /** Called on an error (a close follows). */
    onerror: Handler<unknown> | null;
    /** Sends a frame. */
    send(data: string | ArrayBufferLike | ArrayBufferView): void;
    /** Closes the socket. */
    close(code?: number, reason?: string): void;
}
/** A WebSocket class: `globalThis.WebSocket` in browsers (and Node 22), `ws` in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
/** What the session hears from its sockets. */
export interface SocketHooks {
    /** The provider made a new socket (it becomes the session's current one). */
    created(socket: ChorusSocket): void;
    /** The socket opened (called before the provider hears of it). */
    opened(socket: ChorusSocket): void;
    /** The provider sent a binary frame. */
    sent(socket: ChorusSocket, frame: Uint8Array): void;
    /** The hub sent a text frame (an extension frame). */
    text(socket: ChorusSocket, text: string): void;
    /** The socket closed (called after the provider heard of it); `local`: this side closed it. */
    closed(socket: ChorusSocket, code: number, reason: string, local: boolean): void;
}
/** A WebSocket for the provider around a real one; see the file's comment. */
export declare class ChorusSocket {
    /** Constants as on the standard WebSocket, which y-websocket reads from instances. */
    static readonly CONNECTING = 0;
    static readonly OPEN = 1;
    static readonly CLOSING = 2;
    static readonly CLOSED = 3;
    readonly CONNECTING = 0;
    readonly OPEN = 1;
    readonly CLOSING = 2;
    readonly CLOSED = 3;
    /** The provider sets `arraybuffer`; the real socket always gets `arraybuffer`. */
    binaryType: string;
    /** The provider's handlers. */
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: ArrayBuffer;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    private readonly real;
    private readonly hooks;
    private closedLocally;
    constructor(url: string, protocols: string | string[] | undefined, Real: WebSocketConstructor, hooks: SocketHooks);
    /** As the standard WebSocket's. */
    get readyState(): number;
    /** The provider's y-sync messages (binary). */
    send(data: ArrayBufferLike | ArrayBufferView): void;
    /** An extension frame from the session, if the socket is open; whether it went out. */
    sendText(text: string): boolean;
    /** Closes the socket (the provider does, when it disconnects or gives up on a silent one). */
    close(code?: number, reason?: string): void;
}
/** A class with the constructor y-websocket calls (`new WS(url, protocols)`), bound to `Real` and `hooks`. */
export declare function socketClass(Real: WebSocketConstructor, hooks: SocketHooks): new (url: string, protocols?: string | string[]) => ChorusSocket;
export {};
