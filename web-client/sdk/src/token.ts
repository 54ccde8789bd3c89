// What the SDK reads from a JWT without verifying it (the hub verifies): its expiry, to renew
// the session's token before the hub closes it, and its subject, to sign chat messages
// before the hub's `welcome` arrives. A token that does not decode yields nothing.
import { ChorusError } from './errors.js'

/** The claims the SDK uses. */
export interface TokenClaims {
  /** Expiry, seconds since the epoch. */
  exp?: number
  /** The user. */
  sub?: string
}

function base64UrlDecode(part: string): string | null {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) return null
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (part.length % 4)) % 4)
  try {
    const binary = atob(b64)
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0))
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return null
  }
}

/** The `exp` and `sub` of a JWT, as far as they are present and well-typed. */
export function tokenClaims(token: string): TokenClaims {
  const payload = token.split('.')[1]
  if (payload === undefined) return {}
  const json = base64UrlDecode(payload)
  if (json === null) return {}
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return {}
  }
  if (!value || typeof value !== 'object') return {}
  const { exp, sub } = value as Record<string, unknown>
  const out: TokenClaims = {}
  if (typeof exp === 'number' && Number.isFinite(exp)) out.exp = exp
  if (typeof sub === 'string') out.sub = sub
  return out
}

/**
 * Milliseconds from `nowMs` until a token expiring at `exp` (seconds) should be renewed: a
 * minute before it expires; a short-lived token (under five minutes left) after four fifths
 * of what is left, so renewals of short tokens do not follow each other at once.
 */
export function renewalDelay(exp: number, nowMs: number): number {
  const left = exp * 1000 - nowMs
  if (left <= 0) return 0
  return Math.max(left - 60_000, left * 0.8)
}

/** Calls `getToken` and checks its answer: a non-empty string, or a ChorusError `unauthenticated` (4401). */
export async function freshToken(getToken: (room: string) => string | Promise<string>, room: string, fatal: boolean): Promise<string> {
  let token: unknown
  try {
    token = await getToken(room)
  } catch (e) {
    throw new ChorusError('unauthenticated', 4401, `getToken failed: ${String(e)}`, fatal)
  }
  if (typeof token !== 'string' || token === '') throw new ChorusError('unauthenticated', 4401, 'getToken gave no token', fatal)
  return token
}

/** setTimeout's largest delay; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** One pending renewal of a session's token. */
export class RenewalTimer {
  private timer: ReturnType<typeof setTimeout> | undefined

  /**
   * Calls `renew` a while before `token` expires (see {@link renewalDelay}); replaces any
   * earlier one. Nothing for a token already expired: the hub refuses it (4401), and that
   * refresh is the one that counts.
   */
  schedule(token: string | undefined, renew: () => void): void {
    this.cancel()
    const exp = token !== undefined ? tokenClaims(token).exp : undefined
    if (exp === undefined || exp * 1000 <= Date.now()) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      renew()
    }, Math.min(renewalDelay(exp, Date.now()), MAX_TIMER_MS))
  }

  /** Drops the pending renewal. */
  cancel(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
