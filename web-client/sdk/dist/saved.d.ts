/** Whether a binary frame the client sends is an update message (`0,1` or `0,2`). */
export declare function isUpdateMessage(frame: Uint8Array): boolean;
/** Whether a binary frame is a SyncStep2 (`0,1`), which carries everything the hub lacks. */
export declare function isSyncStep2(frame: Uint8Array): boolean;
/** Counts one connection's update messages against the hub's acknowledgements. */
export declare class SavedTracker {
    private sent;
    private acked;
    private open;
    /**
     * Local changes exist that no sent message covers (made while no socket was open, or sent
     * on a connection that closed before acknowledging them): only the next SyncStep2 covers
     * them. True at first, so "saved" waits for the first connection's sync.
     */
    private uncovered;
    /** Every update this process sent is durable, as far as the hub has said. */
    get saved(): boolean;
    /** A socket opened: counting starts over for it. */
    opened(): void;
    /** The socket closed: what it did not get acknowledged needs the next connection's sync. */
    closed(): void;
    /** The client sent a binary frame on the open socket. */
    sentFrame(frame: Uint8Array): void;
    /**
     * The document changed locally. `sent`: the provider sent the change at once (it does
     * while its socket is open; counted by {@link SavedTracker.sentFrame}); otherwise the next
     * SyncStep2 carries it.
     */
    localChange(sent: boolean): void;
    /** The hub's `saved` frame: the first `updates` update messages are durable. */
    ack(updates: number): void;
    /** Update messages sent on this connection, and how many of them are acknowledged. */
    counts(): {
        sent: number;
        acked: number;
    };
}
