// The errors the SDK reports, typed so an application can tell "the token does not grant this
// room" from "the room was deleted" without parsing messages.
/** An error with a {@link ErrorKind}, and the close code or the hub's error code behind it. */
export class ChorusError extends Error {
    kind;
    code;
    reason;
    fatal;
    /** `ChorusError`. */
    name = 'ChorusError';
    constructor(
    /** What went wrong, as a type to switch on. */
    kind, 
    /** The WebSocket close code (a number), or the code of the hub's `error` frame (a string). */
    code, 
    /** The hub's reason or message (never more than the hub chose to say). */
    reason, 
    /** Whether the session stopped because of it: no reconnect follows. */
    fatal) {
        super(reason ? `${kind} (${code}): ${reason}` : `${kind} (${code})`);
        this.kind = kind;
        this.code = code;
        this.reason = reason;
        this.fatal = fatal;
    }
}
