// What a client does when the hub closes its socket, by close code (docs/PROTOCOL.md):
//   4401 (token missing, bad or expired)   get a fresh token, then reconnect
//   4429, 1013, 4503 (rate, try again later, unavailable), a dropped connection (1006) and
//   1011 (the room restarted)              back off with jitter, then reconnect
//   1012 (the node is draining)            the same, to the next home the reason names
//   4403, 4404, 4413 (forbidden, deleted, too large)   stop, and report why
//   4422 and any other 4400-4499           stop, and report why: the hub keeps that range for
//                                          refusals a retry cannot fix (a reconnect would
//                                          send the same update again)
//   1000 (closed on purpose)               stop
// The session (session.ts) follows these; kept apart so each case is tested alone.

/** A close that stops the session, with the hub's reason. */
export interface CloseError {
  /** The close code: 4403, 4404, 4413, 4422, or another of 4400-4499. */
  code: number
  /** `forbidden` (4403), `deleted` (4404), `too_large` (4413), `too_deep` (4422), `refused` (the others). */
  kind: 'forbidden' | 'deleted' | 'too_large' | 'too_deep' | 'refused'
  /** The hub's reason. */
  reason: string
}

/** Get a fresh token, then reconnect (4401). */
export interface RefreshTokenAction {
  /** The action's tag. */
  kind: 'refresh-token'
}

/** Reconnect after a delay (4429, 1013, 4503, 1011, 1006, 1012 and unknown codes). */
export interface RetryAction {
  /** The action's tag. */
  kind: 'retry'
  /** How long to wait, in milliseconds. */
  delayMs: number
  /** Where to reconnect instead (the next home a draining node named, 1012). */
  url?: string
}

/** Do not reconnect (1000, and refusals a retry cannot fix). */
export interface StopAction {
  /** The action's tag. */
  kind: 'stop'
  /** Why, unless the close was a normal one (1000). */
  error?: CloseError
}

/** What to do after a close: fetch a token and reconnect, reconnect after a delay, or stop. */
export type CloseAction = RefreshTokenAction | RetryAction | StopAction

/** Delays that grow exponentially to a cap, each drawn at random below it ("full jitter"). */
export class Backoff {
  private attempt = 0

  /**
   * @param baseMs the first delay's ceiling
   * @param capMs the largest ceiling
   * @param random a source of numbers in [0, 1), `Math.random` unless a test fixes it
   */
  constructor(
    private readonly baseMs = 250,
    private readonly capMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  /** The next delay in milliseconds; each call raises the ceiling until the cap. */
  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30))
    this.attempt += 1
    return Math.floor(this.random() * ceiling)
  }

  /** Connected and synced again: start over. */
  reset(): void {
    this.attempt = 0
  }
}

/** The next home a draining node names in its 1012 reason (`...; next: <url>`), if valid. */
export function nextHome(reason: string): string | undefined {
  const m = /next:\s*(\S+)\s*$/.exec(reason)
  if (!m?.[1]) return undefined
  try {
    const url = new URL(m[1])
    return ['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol) ? url.toString() : undefined
  } catch {
    return undefined
  }
}

/** The action for a close with `code` and `reason`; retries draw their delay from `backoff`. */
export function closeAction(code: number, reason: string, backoff: Backoff): CloseAction {
  switch (code) {
    case 4401:
      return { kind: 'refresh-token' }
    case 4403:
      return { kind: 'stop', error: { code, kind: 'forbidden', reason } }
    case 4404:
      return { kind: 'stop', error: { code, kind: 'deleted', reason } }
    case 4413:
      return { kind: 'stop', error: { code, kind: 'too_large', reason } }
    case 4422:
      return { kind: 'stop', error: { code, kind: 'too_deep', reason } }
    case 1000:
      return { kind: 'stop' }
    case 1012: {
      const url = nextHome(reason)
      return { kind: 'retry', delayMs: backoff.next(), ...(url ? { url } : {}) }
    }
    default:
      // 4429 is the one 44xx code a wait fixes (slow down, then reconnect).
      if (code >= 4400 && code < 4500 && code !== 4429) {
        return { kind: 'stop', error: { code, kind: 'refused', reason } }
      }
      // 4429, 1013, 4503, 1011, 1006 and anything unknown: the hub may be back soon.
      return { kind: 'retry', delayMs: backoff.next() }
  }
}
