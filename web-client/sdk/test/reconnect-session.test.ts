// Each close code, through the real session and y-websocket provider, on a fake socket.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'

import { ChorusError, type CloseInfo } from '../src/index.js'
import { connectAndSync, FakeSocket, fakeClient, jwt } from './fake.js'

beforeEach(() => {
  vi.useFakeTimers()
  FakeSocket.all = []
})
afterEach(() => {
  vi.useRealTimers()
})

describe('the session reconnects by close code', () => {
  it('connects to /ws/<room> with the token and the extension opt-in', () => {
    const room = fakeClient().join('notes/2026 Q1')
    expect(FakeSocket.last().url).toBe('ws://hub.test/ws/notes%2F2026%20Q1?token=tok&ext=1')
    room.leave()
  })

  it('refreshes the token on 4401 and reconnects with it; a second refusal backs off', async () => {
    const getToken = vi.fn(async () => 'fresh')
    const room = fakeClient({ getToken }).join('r')
    connectAndSync()
    const closes: CloseInfo[] = []
    room.on('close', (c) => closes.push(c))
    FakeSocket.last().serverClose(4401, 'token expired')
    await vi.advanceTimersByTimeAsync(0)
    expect(getToken).toHaveBeenCalledWith('r')
    expect(closes).toEqual([{ code: 4401, reason: 'token expired', action: { kind: 'refresh-token' } }])
    expect(FakeSocket.all).toHaveLength(2)
    expect(FakeSocket.last().url).toBe('ws://hub.test/ws/r?token=fresh&ext=1')
    // Refused again before any sync: the next refresh waits (backoff), so a hub that keeps
    // refusing is not hammered.
    FakeSocket.last().open()
    FakeSocket.last().serverClose(4401, 'invalid token signature')
    await vi.advanceTimersByTimeAsync(50)
    expect(getToken).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(100)
    expect(getToken).toHaveBeenCalledTimes(2)
    expect(FakeSocket.all).toHaveLength(3)
    connectAndSync()
    expect(room.synced).toBe(true)
    room.leave()
  })

  it('asks for one token, not two, when it starts with an expired one', async () => {
    const getToken = vi.fn(async () => 'fresh')
    const room = fakeClient({ token: jwt({ exp: Math.floor(Date.now() / 1000) - 60 }), getToken }).join('r')
    await vi.advanceTimersByTimeAsync(10)
    expect(getToken).not.toHaveBeenCalled()
    FakeSocket.last().open()
    FakeSocket.last().serverClose(4401, 'token expired')
    await vi.advanceTimersByTimeAsync(10)
    expect(getToken).toHaveBeenCalledTimes(1)
    room.leave()
  })

  it('stops with an unauthenticated error on 4401 when it has no way to get a token', async () => {
    const room = fakeClient().join('r')
    const errors: ChorusError[] = []
    room.on('error', (e) => errors.push(e))
    const synced = room.whenSynced()
    FakeSocket.last().open()
    FakeSocket.last().serverClose(4401, 'token expired')
    await expect(synced).rejects.toMatchObject({ kind: 'unauthenticated', code: 4401, fatal: true })
    expect(errors.map((e) => e.kind)).toEqual(['unauthenticated'])
    await vi.advanceTimersByTimeAsync(60_000)
    expect(FakeSocket.all).toHaveLength(1)
    expect(room.status).toBe('disconnected')
  })

  it('stops with an unauthenticated error when getToken fails', async () => {
    const room = fakeClient({ getToken: () => Promise.reject(new Error('signed out')) }).join('r')
    connectAndSync()
    FakeSocket.last().serverClose(4401, 'token expired')
    await vi.advanceTimersByTimeAsync(0)
    expect(room.error).toMatchObject({ kind: 'unauthenticated', code: 4401 })
    expect(room.error?.message).toContain('signed out')
    await vi.advanceTimersByTimeAsync(60_000)
    expect(FakeSocket.all).toHaveLength(1)
  })

  for (const code of [4429, 1013, 1011, 1006, 4503]) {
    it(`backs off with jitter and reconnects on ${code}`, async () => {
      const room = fakeClient().join('r')
      connectAndSync()
      const closes: CloseInfo[] = []
      room.on('close', (c) => closes.push(c))
      FakeSocket.last().serverClose(code, 'later')
      // The ceiling starts at 100 ms; random() = 0.99 gives 99 ms.
      expect(closes).toEqual([{ code, reason: 'later', action: { kind: 'retry', delayMs: 99 } }])
      await vi.advanceTimersByTimeAsync(98)
      expect(FakeSocket.all).toHaveLength(1)
      await vi.advanceTimersByTimeAsync(1)
      expect(FakeSocket.all).toHaveLength(2)
      expect(FakeSocket.last().url).toBe('ws://hub.test/ws/r?token=tok&ext=1')
      // Failing again before a sync: the ceiling doubles.
      FakeSocket.last().serverClose(code, 'later')
      expect(closes[1]?.action).toEqual({ kind: 'retry', delayMs: 198 })
      await vi.advanceTimersByTimeAsync(198)
      expect(FakeSocket.all).toHaveLength(3)
      // A sync resets the backoff.
      connectAndSync()
      FakeSocket.last().serverClose(code, 'later')
      expect(closes[2]?.action).toEqual({ kind: 'retry', delayMs: 99 })
      room.leave()
    })
  }

  it('goes to the next home a draining node names (1012)', async () => {
    const room = fakeClient().join('r')
    connectAndSync()
    FakeSocket.last().serverClose(1012, 'server shutting down; next: http://10.0.0.2:8080')
    await vi.advanceTimersByTimeAsync(99)
    expect(FakeSocket.last().url).toBe('ws://10.0.0.2:8080/ws/r?token=tok&ext=1')
    // Without a next home: the same hub, later.
    connectAndSync()
    FakeSocket.last().serverClose(1012, 'server shutting down')
    await vi.advanceTimersByTimeAsync(99)
    expect(FakeSocket.all).toHaveLength(3)
    expect(FakeSocket.last().url).toBe('ws://10.0.0.2:8080/ws/r?token=tok&ext=1')
    room.leave()
  })

  for (const [code, kind] of [
    [4403, 'forbidden'],
    [4404, 'deleted'],
    [4413, 'too_large'],
    [4422, 'too_deep'],
    [4499, 'refused'],
  ] as const) {
    it(`stops and reports ${kind} on ${code}`, async () => {
      const client = fakeClient()
      const room = client.join('r')
      const errors: ChorusError[] = []
      room.on('error', (e) => errors.push(e))
      const statuses: string[] = []
      room.on('status', (s) => statuses.push(s))
      const synced = room.whenSynced()
      FakeSocket.last().open()
      FakeSocket.last().serverClose(code, 'no')
      await expect(synced).rejects.toBeInstanceOf(ChorusError)
      expect(errors).toHaveLength(1)
      expect(errors[0]).toMatchObject({ kind, code, reason: 'no', fatal: true })
      expect(room.error).toBe(errors[0])
      expect(statuses).toEqual(['connected', 'disconnected'])
      await vi.advanceTimersByTimeAsync(120_000)
      expect(FakeSocket.all).toHaveLength(1)
      await expect(room.whenSaved()).rejects.toBe(errors[0])
      // A stopped session is still the client's until left.
      expect(client.sessions).toEqual([room])
      room.leave()
      expect(client.sessions).toEqual([])
    })
  }

  it('stops quietly on 1000', async () => {
    const room = fakeClient().join('r')
    const errors: ChorusError[] = []
    room.on('error', (e) => errors.push(e))
    connectAndSync()
    FakeSocket.last().serverClose(1000, 'bye')
    await vi.advanceTimersByTimeAsync(60_000)
    expect(errors).toEqual([])
    expect(FakeSocket.all).toHaveLength(1)
    expect(room.error).toMatchObject({ kind: 'closed', code: 1000 })
  })

  it('leaves the provider to retry a socket it closed itself (no message for 30 s)', async () => {
    const room = fakeClient().join('r')
    connectAndSync()
    const closes: CloseInfo[] = []
    room.on('close', (c) => closes.push(c))
    // y-websocket's clock is lib0's `Date.now`, taken before the timers were faked: age the
    // last message instead of waiting 30 s.
    room.provider.wsLastMessageReceived = 0
    await vi.advanceTimersByTimeAsync(3_000)
    expect(room.provider.ws).toBeNull()
    await vi.advanceTimersByTimeAsync(2_500)
    expect(closes).toEqual([])
    expect(FakeSocket.all).toHaveLength(2)
    expect(room.error).toBeUndefined()
    room.leave()
  })

  it('gets its first token from getToken when given none', async () => {
    const room = fakeClient({ token: undefined, getToken: async (r) => `for-${r}` }).join('r')
    expect(FakeSocket.all).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(0)
    expect(FakeSocket.last().url).toBe('ws://hub.test/ws/r?token=for-r&ext=1')
    room.leave()
  })

  it('connects anonymously without a token', () => {
    const room = fakeClient({ token: undefined }).join('r')
    expect(FakeSocket.last().url).toBe('ws://hub.test/ws/r?ext=1')
    room.leave()
  })

  it('renews the token over the open socket before it expires', async () => {
    const now = Math.floor(Date.now() / 1000)
    const first = jwt({ sub: 'alice', exp: now + 3600 })
    const second = jwt({ sub: 'alice', exp: now + 7200 })
    const room = fakeClient({ token: first, getToken: async () => second }).join('r')
    const socket = connectAndSync()
    await vi.advanceTimersByTimeAsync(3_538_000)
    expect(socket.texts().filter((t) => t.type === 'auth')).toEqual([])
    // A minute before expiry.
    await vi.advanceTimersByTimeAsync(2_000)
    expect(FakeSocket.all).toEqual([socket])
    expect(socket.texts().filter((t) => t.type === 'auth')).toEqual([{ v: 1, type: 'auth', token: second }])
    // A later reconnect uses it too.
    expect(room.provider.params.token).toBe(second)
    room.leave()
  })

  it('reports a failed renewal without stopping (the hub\'s 4401 at expiry decides)', async () => {
    const now = Math.floor(Date.now() / 1000)
    const room = fakeClient({ token: jwt({ exp: now + 100 }), getToken: () => Promise.reject(new Error('offline')) }).join('r')
    const errors: ChorusError[] = []
    room.on('error', (e) => errors.push(e))
    connectAndSync()
    await vi.advanceTimersByTimeAsync(80_000)
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatchObject({ kind: 'unauthenticated', fatal: false })
    expect(room.status).toBe('connected')
    expect(room.error).toBeUndefined()
    room.leave()
  })
})
