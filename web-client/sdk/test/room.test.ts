// Presence, chat, welcome and the hub's error frames through the session.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Awareness } from 'y-protocols/awareness'
import * as Y from 'yjs'

import { chatOf, messages, send } from '../src/chat.js'
import { type ChatMessage, ChorusClient, type ChorusError, type Peer } from '../src/index.js'
import { awarenessMessage, connectAndSync, FakeSocket, fakeClient, jwt } from './fake.js'

beforeEach(() => {
  vi.useFakeTimers()
  FakeSocket.all = []
})
afterEach(() => vi.useRealTimers())

describe('presence', () => {
  it('publishes this member\'s state and lists the others', () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const seen: Peer[][] = []
    room.on('presence', (p) => seen.push(p))
    room.setPresence({ cursor: { anchor: 1 } })
    room.setPresence({ typing: true })
    expect(room.awareness.getLocalState()).toEqual({ cursor: { anchor: 1 }, typing: true })
    expect(socket.sent.some((m) => typeof m !== 'string' && m[0] === 1)).toBe(true)
    const other = new Awareness(new Y.Doc())
    other.setLocalState({ user: { name: 'Bob', color: '#f00' }, cursor: null })
    socket.receive(awarenessMessage(other))
    expect(room.peers()).toEqual([
      { clientId: other.clientID, user: { name: 'Bob', color: '#f00' }, state: { user: { name: 'Bob', color: '#f00' }, cursor: null } },
    ])
    expect(seen.at(-1)).toEqual(room.peers())
    // A peer with a malformed user still counts, without a name.
    other.setLocalState({ user: { name: 7 } })
    socket.receive(awarenessMessage(other))
    expect(room.peers()[0]?.user).toEqual({})
    other.destroy()
    room.leave()
  })
})

describe('chat', () => {
  it('round-trips messages between two replicas, oldest first, and keeps the last ones', () => {
    const a = new Y.Doc()
    const b = new Y.Doc()
    a.on('update', (u: Uint8Array) => Y.applyUpdate(b, u))
    send(a, 'alice', 'hello', 1000)
    send(a, 'alice', 'again', 2000, 'm_x')
    const got = messages(b)
    expect(got.map((m) => [m.author, m.role, m.text, m.status, m.time, m.reply_to])).toEqual([
      ['alice', 'user', 'hello', 'done', 1000, undefined],
      ['alice', 'user', 'again', 'done', 2000, 'm_x'],
    ])
    expect(messages(b, 1).map((m) => m.text)).toEqual(['again'])
  })

  it('reads an assistant answer as it streams, and skips what is not a message', () => {
    const doc = new Y.Doc()
    const text = new Y.Text()
    doc.transact(() => {
      const m = new Y.Map<unknown>()
      for (const [k, v] of Object.entries({ id: 'a1', role: 'assistant', author: 'assistant', status: 'streaming', run: 'run_1', model: 'm', asked_by: 'bob', time: 'x' })) m.set(k, v)
      m.set('text', text)
      const broken = new Y.Map<unknown>()
      broken.set('text', 'no id')
      chatOf(doc).push([m, broken])
    })
    text.insert(0, 'Part')
    text.insert(4, 'ial')
    expect(messages(doc)).toEqual([
      { id: 'a1', author: 'assistant', role: 'assistant', text: 'Partial', status: 'streaming', run: 'run_1', model: 'm', asked_by: 'bob', time: 0 },
    ])
  })

  it('signs messages with the hub\'s user, and tells listeners', () => {
    const room = fakeClient({ token: jwt({ sub: 'from-token' }) }).join('r')
    expect(room.messages()).toEqual([])
    room.send('before welcome')
    const socket = connectAndSync()
    const seen: ChatMessage[][] = []
    room.on('chat', (m) => seen.push(m))
    room.send('after welcome')
    room.send('as someone', { author: 'bot' })
    expect(room.messages().map((m) => [m.author, m.text])).toEqual([
      ['from-token', 'before welcome'],
      ['alice', 'after welcome'],
      ['bot', 'as someone'],
    ])
    expect(seen).toHaveLength(2)
    expect(socket.updates().length).toBeGreaterThanOrEqual(3)
    room.leave()
  })
})

describe('the hub\'s frames', () => {
  it('reports welcome and non-fatal error frames; ignores garbage; answers pings', async () => {
    const room = fakeClient().join('r')
    const errors: ChorusError[] = []
    room.on('error', (e) => errors.push(e))
    const socket = connectAndSync()
    expect(room.welcome).toEqual({ type: 'welcome', room: 'r', tenant: 'default', role: 'write', user: 'alice' })
    socket.frame({ type: 'error', code: 'forbidden', message: 'read-only' })
    socket.receive('not json')
    socket.receive('{"v":1,"type":"saved","updates":"lots"}')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatchObject({ kind: 'hub', code: 'forbidden', fatal: false })
    expect(room.status).toBe('connected')
    const rtt = room.ping()
    const [ping] = socket.texts().filter((t) => t.type === 'ping')
    socket.frame({ type: 'pong', id: ping?.id })
    await expect(rtt).resolves.toBeGreaterThanOrEqual(0)
    room.leave()
    await expect(room.ping()).rejects.toMatchObject({ kind: 'disconnected' })
  })
})

describe('the client', () => {
  it('turns http(s) into ws(s), keeps a path prefix, and wants a WebSocket class', () => {
    const c = new ChorusClient({ url: 'https://example.test/chorus/', WebSocket: FakeSocket })
    c.join('r')
    expect(FakeSocket.last().url).toBe('wss://example.test/chorus/ws/r?ext=1')
    c.close()
    expect(c.sessions).toEqual([])
    expect(() => new ChorusClient({ url: 'ftp://x' , WebSocket: FakeSocket })).toThrow()
    const saved = (globalThis as { WebSocket?: unknown }).WebSocket
    try {
      ;(globalThis as { WebSocket?: unknown }).WebSocket = undefined
      expect(() => new ChorusClient({ url: 'http://x' })).toThrow(/WebSocket/)
    } finally {
      ;(globalThis as { WebSocket?: unknown }).WebSocket = saved
    }
  })
})
