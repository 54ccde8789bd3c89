// What a client does when the hub closes its socket, by close code (docs/PROTOCOL.md):
//   4401 (token missing, bad or expired)   get a fresh token, then reconnect
//   4429, 1013, 4503 (rate, try again later, unavailable), a dropped connection (1006) and
//   1011 (the room restarted)              back off with jitter, then reconnect
//   1012 (the node is draining)            the same, to the next home the reason names
//   4403, 4404, 4413 (forbidden, deleted, too large)   stop, and report why
//   1000 (closed on purpose)               stop
// The SDK's connection follows these; kept apart so each case is tested alone.

export type CloseError =
  | { code: 4403; kind: 'forbidden'; reason: string }
  | { code: 4404; kind: 'deleted'; reason: string }
  | { code: 4413; kind: 'too_large'; reason: string }

export type CloseAction =
  | { kind: 'refresh-token' }
  | { kind: 'retry'; delayMs: number; url?: string }
  | { kind: 'stop'; error?: CloseError }

/** Delays that grow exponentially to a cap, each drawn at random below it ("full jitter"). */
export class Backoff {
  private attempt = 0

  constructor(
    private readonly baseMs = 250,
    private readonly capMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

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
    case 1000:
      return { kind: 'stop' }
    case 1012: {
      const url = nextHome(reason)
      return { kind: 'retry', delayMs: backoff.next(), ...(url ? { url } : {}) }
    }
    default:
      // 4429, 1013, 4503, 1011, 1006 and anything unknown: the hub may be back soon.
      return { kind: 'retry', delayMs: backoff.next() }
  }
}
