// The errors the SDK reports, typed so an application can tell "the token does not grant this
// room" from "the room was deleted" without parsing messages.

/**
 * Why something failed:
 * - `forbidden` (4403): the token does not grant the room, or the page's origin may not connect;
 * - `deleted` (4404): the room was deleted;
 * - `too_large` (4413): the document would grow past its size limit;
 * - `too_deep` (4422): an update nests deeper than the hub allows;
 * - `refused` (another 4400-4499 close): a refusal a retry cannot fix;
 * - `unauthenticated` (4401): the token was refused and no fresh one could be had;
 * - `hub`: the hub answered something this connection sent with an `error` frame (the
 *   connection goes on);
 * - `disconnected`: the connection closed before an answer arrived;
 * - `closed`: the session was left, or the client closed.
 */
export type ErrorKind =
  | 'forbidden'
  | 'deleted'
  | 'too_large'
  | 'too_deep'
  | 'refused'
  | 'unauthenticated'
  | 'hub'
  | 'disconnected'
  | 'closed'

/** An error with a {@link ErrorKind}, and the close code or the hub's error code behind it. */
export class ChorusError extends Error {
  /** `ChorusError`. */
  override readonly name = 'ChorusError'

  constructor(
    /** What went wrong, as a type to switch on. */
    readonly kind: ErrorKind,
    /** The WebSocket close code (a number), or the code of the hub's `error` frame (a string). */
    readonly code: number | string,
    /** The hub's reason or message (never more than the hub chose to say). */
    readonly reason: string,
    /** Whether the session stopped because of it: no reconnect follows. */
    readonly fatal: boolean,
  ) {
    super(reason ? `${kind} (${code}): ${reason}` : `${kind} (${code})`)
  }
}
