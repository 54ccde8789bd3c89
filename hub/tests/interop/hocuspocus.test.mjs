// Interop tests: the real @hocuspocus/provider against Chorus' Hocuspocus endpoint, and a
// Hocuspocus provider and a y-websocket provider editing the same room.
//
//   CHORUS_HP_URL=ws://127.0.0.1:PORT/hocuspocus CHORUS_WS_URL=ws://127.0.0.1:PORT/ws \
//   CHORUS_TOKEN_WRITE=... CHORUS_TOKEN_READ=... CHORUS_TOKEN_NARROW=... \
//   node --test hocuspocus.test.mjs
//
// WRITE grants every room, READ every room read-only, NARROW only rooms named `narrow-*`.
// Every test uses its own random rooms.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { inspect } from 'node:util'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'

const env = (name) => {
  const v = process.env[name]
  // Fail loudly instead of skipping: a run without a server must not look green.
  if (!v) throw new Error(`${name} must be set (got ${inspect(v)})`)
  return v
}
const HP_URL = env('CHORUS_HP_URL')
const WS_URL = env('CHORUS_WS_URL')
const WRITE = env('CHORUS_TOKEN_WRITE')
const READ = env('CHORUS_TOKEN_READ')
const NARROW = env('CHORUS_TOKEN_NARROW')

const WAIT_MS = 10_000
const TEST_TIMEOUT_MS = 45_000
const room = (label) => `hp-${label}-${randomUUID()}`

async function waitFor (what, cond, describe = () => '') {
  const deadline = Date.now() + WAIT_MS
  while (!cond()) {
    if (Date.now() >= deadline) assert.fail(`timed out after ${WAIT_MS} ms waiting for ${what}\n  ${describe()}`)
    await delay(20)
  }
}

/** A provider with its own socket (or a shared one), torn down after the test. */
function provider (t, name, token, { socket, document } = {}) {
  const events = { authenticated: null, failed: null, statuses: [] }
  const p = new HocuspocusProvider({
    ...(socket ? { websocketProvider: socket } : { url: HP_URL, WebSocketPolyfill: WebSocket }),
    name,
    token,
    document,
    onAuthenticated: ({ scope }) => { events.authenticated = scope },
    onAuthenticationFailed: ({ reason }) => { events.failed = reason }
  })
  if (socket) p.attach()
  p.events = events
  t.after(() => { p.destroy(); p.document.destroy() })
  return p
}

function sharedSocket (t) {
  const s = new HocuspocusProviderWebsocket({ url: HP_URL, WebSocketPolyfill: WebSocket })
  t.after(() => s.destroy())
  return s
}

const text = (p) => p.document.getText('text').toString()

test('two hocuspocus providers converge, and unsynced changes drain to zero once saved', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const name = room('converge')
  const a = provider(t, name, WRITE)
  const b = provider(t, name, WRITE)
  await waitFor('both synced', () => a.synced && b.synced)
  assert.equal(a.events.authenticated, 'read-write')
  a.document.getText('text').insert(0, 'alice ')
  b.document.getText('text').insert(0, 'bob ')
  a.document.getMap('map').set('k', { n: 1 })
  await waitFor('convergence', () => text(a) === text(b) && text(a).length === 10 &&
    b.document.getMap('map').get('k')?.n === 1, () => `${inspect(text(a))} vs ${inspect(text(b))}`)
  // Every update the providers sent is acknowledged by a sync status.
  await waitFor('no unsynced changes', () => !a.hasUnsyncedChanges && !b.hasUnsyncedChanges,
    () => `a=${a.unsyncedChanges} b=${b.unsyncedChanges}`)
  // A late joiner gets everything.
  const c = provider(t, name, WRITE)
  await waitFor('late joiner synced with content', () => c.synced && text(c) === text(a))
})

test('one socket carries several documents', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const socket = sharedSocket(t)
  const [n1, n2] = [room('mux1'), room('mux2')]
  const d1 = provider(t, n1, WRITE, { socket })
  const d2 = provider(t, n2, WRITE, { socket })
  await waitFor('both documents synced', () => d1.synced && d2.synced)
  d1.document.getText('text').insert(0, 'one')
  d2.document.getText('text').insert(0, 'two')
  // Separate readers (own sockets) see each document's own content only.
  const r1 = provider(t, n1, WRITE)
  const r2 = provider(t, n2, WRITE)
  await waitFor('each document kept apart', () => text(r1) === 'one' && text(r2) === 'two',
    () => `${inspect(text(r1))} ${inspect(text(r2))}`)
  // Detaching one document leaves the other live on the same socket.
  d1.destroy()
  d2.document.getText('text').insert(3, '!')
  await waitFor('the other document still live', () => text(r2) === 'two!')
})

test('refused tokens get permission-denied; the socket keeps serving other documents', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const socket = sharedSocket(t)
  const bad = provider(t, room('bad'), 'not-a-token', { socket })
  const narrow = provider(t, room('wide'), NARROW, { socket })
  const good = provider(t, `narrow-${randomUUID()}`, NARROW, { socket })
  await waitFor('refusals and the granted document',
    () => bad.events.failed && narrow.events.failed && good.synced,
    () => inspect([bad.events, narrow.events, good.synced]))
  assert.match(narrow.events.failed, /does not grant/)
  assert.equal(bad.synced, false)
  assert.equal(narrow.synced, false)
  assert.equal(good.events.authenticated, 'read-write')
})

test('a read-only provider syncs, its edits are refused and reach nobody', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const name = room('readonly')
  const w = provider(t, name, WRITE)
  await waitFor('writer synced', () => w.synced)
  w.document.getText('text').insert(0, 'from writer')
  const r = provider(t, name, READ)
  await waitFor('reader synced with content', () => r.synced && text(r) === 'from writer')
  assert.equal(r.events.authenticated, 'readonly')
  await waitFor('reader handshake acknowledged', () => !r.hasUnsyncedChanges, () => `${r.unsyncedChanges}`)
  r.document.getText('text').insert(0, 'sneaky ')
  await delay(300)
  assert.equal(text(w), 'from writer')
  // The refusal is a negative sync status: the change stays unsynced on the reader.
  assert.equal(r.hasUnsyncedChanges, true)
  const late = provider(t, name, WRITE)
  await waitFor('late joiner synced', () => late.synced)
  assert.equal(text(late), 'from writer')
})

test('hocuspocus and y-websocket providers share one room, document and awareness', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const name = room('mixed')
  const hp = provider(t, name, WRITE)
  const doc = new Y.Doc()
  const yws = new WebsocketProvider(WS_URL, name, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true, params: { token: WRITE }
  })
  t.after(() => { yws.destroy(); doc.destroy() })
  await waitFor('both synced', () => hp.synced && yws.synced)
  hp.document.getText('text').insert(0, 'hp ')
  doc.getText('text').insert(0, 'yws ')
  await waitFor('convergence', () => text(hp) === doc.getText('text').toString() && text(hp).length === 7,
    () => `${inspect(text(hp))} vs ${inspect(doc.getText('text').toString())}`)
  hp.setAwarenessField('user', { name: 'hocuspocus' })
  yws.awareness.setLocalStateField('user', { name: 'y-websocket' })
  const names = (aw) => [...aw.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort()
  await waitFor('awareness both ways',
    () => inspect(names(hp.awareness)) === inspect(['hocuspocus', 'y-websocket']) &&
      inspect(names(yws.awareness)) === inspect(['hocuspocus', 'y-websocket']),
    () => `${inspect(names(hp.awareness))} ${inspect(names(yws.awareness))}`)
})
