import { describe, expect, it } from 'vitest'

import { Backoff, closeAction, nextHome } from '../src/reconnect.js'

describe('reconnecting by close code', () => {
  const top = () => 0.999_999
  it('refreshes the token on 4401', () => {
    expect(closeAction(4401, 'token expired', new Backoff())).toEqual({ kind: 'refresh-token' })
  })

  it('stops with a typed error on 4403, 4404 and 4413, and quietly on 1000', () => {
    const b = new Backoff()
    expect(closeAction(4403, 'room not granted', b)).toEqual({
      kind: 'stop', error: { code: 4403, kind: 'forbidden', reason: 'room not granted' },
    })
    expect(closeAction(4404, 'room deleted', b)).toMatchObject({ kind: 'stop', error: { kind: 'deleted' } })
    expect(closeAction(4413, 'document too large', b)).toMatchObject({ kind: 'stop', error: { kind: 'too_large' } })
    expect(closeAction(1000, '', b)).toEqual({ kind: 'stop' })
  })

  it('stops on the other refusals a retry cannot fix (4400-4499), but not on 4429', () => {
    const b = new Backoff()
    expect(closeAction(4422, 'update nests deeper than the limit', b)).toEqual({
      kind: 'stop', error: { code: 4422, kind: 'too_deep', reason: 'update nests deeper than the limit' },
    })
    expect(closeAction(4400, 'x', b)).toEqual({ kind: 'stop', error: { code: 4400, kind: 'refused', reason: 'x' } })
    expect(closeAction(4429, 'message rate limit exceeded', b).kind).toBe('retry')
    expect(closeAction(4500, '', b).kind).toBe('retry')
    expect(closeAction(1007, '', b).kind).toBe('retry')
  })

  it('backs off with jitter on 4429, 1013, 4503 and dropped connections, growing to a cap', () => {
    for (const code of [4429, 1013, 4503, 1006, 1011]) {
      const b = new Backoff(100, 1000, top)
      const delays = [1, 2, 3, 4, 5, 6].map(() => {
        const a = closeAction(code, '', b)
        expect(a.kind).toBe('retry')
        return a.kind === 'retry' ? a.delayMs : -1
      })
      expect(delays).toEqual([99, 199, 399, 799, 999, 999])
    }
    const low = new Backoff(100, 1000, () => 0)
    expect(low.next()).toBe(0)
    const b = new Backoff(100, 1000, top)
    b.next()
    b.next()
    b.reset()
    expect(b.next()).toBe(99)
  })

  it('goes to the next home a draining node names (1012)', () => {
    const b = new Backoff(100, 1000, top)
    expect(closeAction(1012, 'server shutting down; next: http://10.0.0.2:8080', b)).toEqual({
      kind: 'retry', delayMs: 99, url: 'http://10.0.0.2:8080/',
    })
    expect(closeAction(1012, 'server shutting down', b)).toEqual({ kind: 'retry', delayMs: 199 })
    expect(nextHome('x; next: javascript:alert(1)')).toBeUndefined()
    expect(nextHome('x; next: not a url')).toBeUndefined()
    expect(nextHome('x; next: wss://chorus-2.example')).toBe('wss://chorus-2.example/')
  })
})
