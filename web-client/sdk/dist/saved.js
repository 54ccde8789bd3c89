// "Saved" from the hub's `saved` frames. The hub acknowledges the first N update messages a
// connection sent (every SyncStep2 `0,1` and Update `0,2`, in order, empty ones included), so
// the client counts what it sends and compares. Counts are per connection: after a reconnect
// the provider answers the hub's SyncStep1 with a SyncStep2 holding everything the hub lacks,
// so once that is acknowledged, whatever an earlier connection left unacknowledged (or an edit
// made offline) is durable too. Sans-IO, so each case is tested alone.
/** Whether a binary frame the client sends is an update message (`0,1` or `0,2`). */
export function isUpdateMessage(frame) {
    return frame.length >= 2 && frame[0] === 0 && (frame[1] === 1 || frame[1] === 2);
}
/** Whether a binary frame is a SyncStep2 (`0,1`), which carries everything the hub lacks. */
export function isSyncStep2(frame) {
    return frame.length >= 2 && frame[0] === 0 && frame[1] === 1;
}
/** Counts one connection's update messages against the hub's acknowledgements. */
export class SavedTracker {
    sent = 0;
    acked = 0;
    open = false;
    /**
     * Local changes exist that no sent message covers (made while no socket was open, or sent
     * on a connection that closed before acknowledging them): only the next SyncStep2 covers
     * them. True at first, so "saved" waits for the first connection's sync.
     */
    uncovered = true;
    /** Every update this process sent is durable, as far as the hub has said. */
    get saved() {
        return !this.uncovered && this.acked >= this.sent;
    }
    /** A socket opened: counting starts over for it. */
    opened() {
        this.open = true;
        this.sent = 0;
        this.acked = 0;
    }
    /** The socket closed: what it did not get acknowledged needs the next connection's sync. */
    closed() {
        this.open = false;
        if (this.acked < this.sent)
            this.uncovered = true;
        this.sent = 0;
        this.acked = 0;
    }
    /** The client sent a binary frame on the open socket. */
    sentFrame(frame) {
        if (!this.open || !isUpdateMessage(frame))
            return;
        this.sent += 1;
        if (isSyncStep2(frame))
            this.uncovered = false;
    }
    /**
     * The document changed locally. `sent`: the provider sent the change at once (it does
     * while its socket is open; counted by {@link SavedTracker.sentFrame}); otherwise the next
     * SyncStep2 carries it.
     */
    localChange(sent) {
        if (!sent || !this.open)
            this.uncovered = true;
    }
    /** The hub's `saved` frame: the first `updates` update messages are durable. */
    ack(updates) {
        // From the network: a count below what was already acknowledged changes nothing.
        if (Number.isSafeInteger(updates) && updates > this.acked)
            this.acked = updates;
    }
    /** Update messages sent on this connection, and how many of them are acknowledged. */
    counts() {
        return { sent: this.sent, acked: this.acked };
    }
}
