// Interop tests: real Yjs clients (y-websocket's WebsocketProvider) against a
// y-websocket protocol server (Chorus, or the reference @y/websocket-server).
//
//   CHORUS_WS_URL=ws://127.0.0.1:39211/ws [CHORUS_TOKEN=...] node --test interop.test.mjs
//
// The provider connects to `${CHORUS_WS_URL}/${room}` (plus `?token=...` when
// CHORUS_TOKEN is set). Every test uses its own random room, so the tests are
// independent of each other and of whatever else the server holds.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { inspect, isDeepStrictEqual } from 'node:util'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const SERVER_URL = process.env.CHORUS_WS_URL
const TOKEN = process.env.CHORUS_TOKEN || ''

if (!SERVER_URL || !/^wss?:\/\//.test(SERVER_URL)) {
  // Fail loudly instead of skipping: a run without a server must not look green.
  throw new Error(
    `CHORUS_WS_URL must be set to the server's WebSocket base URL, e.g. ws://127.0.0.1:39211/ws (got ${inspect(SERVER_URL)})`
  )
}

/** Upper bound for every "eventually" condition. */
const WAIT_MS = 10_000
const POLL_MS = 20
/** Per-test timeout; several bounded waits may happen in one test. */
const TEST_TIMEOUT_MS = 45_000

const roomName = (label) => `interop-${label}-${randomUUID()}`

/**
 * Creates a Y.Doc plus a WebsocketProvider for `room`, and registers its
 * teardown on the test context so the process can exit even when a test fails.
 * `prepare(doc)` runs before the provider exists, so its edits are "offline"
 * state that the provider uploads in reply to the server's SyncStep1.
 */
function connectClient (t, room, name, { prepare } = {}) {
  const doc = new Y.Doc()
  if (prepare) prepare(doc)
  const provider = new WebsocketProvider(SERVER_URL, room, doc, {
    // Node has no global WebSocket that y-websocket can rely on; use `ws`.
    WebSocketPolyfill: WebSocket,
    // Without this, providers in one process also sync over BroadcastChannel,
    // which would hide any server bug.
    disableBc: true,
    params: TOKEN ? { token: TOKEN } : {}
  })
  const client = { name, doc, provider, lastClose: null, lastError: null, destroyed: false }
  // Kept only to make timeout messages explain *why* a client never synced.
  provider.on('connection-close', (ev) => {
    if (ev) client.lastClose = { code: ev.code, reason: String(ev.reason || '') }
  })
  provider.on('connection-error', (ev) => {
    client.lastError = ev?.message ?? ev?.error?.message ?? String(ev)
  })
  client.destroy = () => {
    if (client.destroyed) return
    client.destroyed = true
    provider.destroy()
    // Destroying the doc also destroys the provider's Awareness, whose
    // interval timer would otherwise keep the process alive.
    doc.destroy()
  }
  t.after(client.destroy)
  return client
}

/** Plain-JSON view of the shared types used by these tests. */
function snapshot (doc) {
  return {
    text: doc.getText('text').toString(),
    map: doc.getMap('map').toJSON(),
    array: doc.getArray('array').toJSON()
  }
}

function describeClient (c) {
  const p = c.provider
  return `${c.name}: ${inspect(snapshot(c.doc), { depth: 5, breakLength: Infinity })}` +
    `\n    connection: wsconnected=${p.wsconnected} wsconnecting=${p.wsconnecting} synced=${p.synced}` +
    ` lastClose=${inspect(c.lastClose)} lastError=${inspect(c.lastError)}`
}

/**
 * Polls `cond` until it holds or WAIT_MS elapses; on timeout fails with
 * `what` and the current state of `clients`.
 */
async function waitFor (what, cond, clients) {
  const deadline = Date.now() + WAIT_MS
  while (!cond()) {
    if (Date.now() >= deadline) {
      assert.fail(`timed out after ${WAIT_MS} ms waiting for ${what}\n  ` +
        clients.map(describeClient).join('\n  '))
    }
    await delay(POLL_MS)
  }
}

const waitSynced = (...clients) => waitFor(
  clients.map((c) => c.name).join(' and ') + ' to be synced with the server',
  () => clients.every((c) => c.provider.synced),
  clients)

const waitConverged = (what, clients) => waitFor(
  `${what}: all docs to reach identical content`,
  () => clients.every((c) => isDeepStrictEqual(snapshot(c.doc), snapshot(clients[0].doc))),
  clients)

/**
 * Resolves with the doc's content captured *inside* the provider's first
 * `sync(true)` handler, i.e. exactly what the server's SyncStep2 (plus any
 * update sent before it) delivered.
 */
function contentAtFirstSync (client) {
  return new Promise((resolve) => {
    const onSync = (isSynced) => {
      if (!isSynced) return
      client.provider.off('sync', onSync)
      resolve(snapshot(client.doc))
    }
    client.provider.on('sync', onSync)
  })
}

const PREFILLED = {
  text: 'hello from A',
  map: { title: 'late joiner', n: 42, nested: { ok: true } },
  array: ['x', 'y', 'z']
}

function prefill (doc) {
  doc.transact(() => {
    doc.getText('text').insert(0, PREFILLED.text)
    const map = doc.getMap('map')
    for (const [k, v] of Object.entries(PREFILLED.map)) map.set(k, v)
    doc.getArray('array').push(PREFILLED.array)
  })
}

/**
 * Waits until a throw-away probe client receives `expected` from the server.
 * The protocol has no acknowledgement of updates, and A being 'synced' only
 * means the server's SyncStep2 reached A, not that A's own upload reached the
 * server. The probe proves the server holds the content, so the late-joiner
 * assertion that follows tests what the server sends, not a race with A.
 */
async function waitServerHolds (t, room, expected) {
  const probe = connectClient(t, room, 'probe')
  try {
    await waitFor('the server to hold the prefilled content (seen by a probe client)',
      () => isDeepStrictEqual(snapshot(probe.doc), expected), [probe])
  } finally {
    probe.destroy()
  }
}

test('two providers converge after concurrent edits on Y.Text, Y.Map and Y.Array', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = roomName('converge')
  const a = connectClient(t, room, 'A')
  const b = connectClient(t, room, 'B')
  await waitSynced(a, b)

  // Round 1: both sides edit in the same synchronous block, so neither has
  // seen the other's update yet: the edits are truly concurrent.
  a.doc.transact(() => {
    a.doc.getText('text').insert(0, 'alice ')
    a.doc.getMap('map').set('a', 1)
    a.doc.getMap('map').set('conflict', 'from-a')
    a.doc.getArray('array').push(['a1', 'a2'])
  })
  b.doc.transact(() => {
    b.doc.getText('text').insert(0, 'bob ')
    b.doc.getMap('map').set('b', 2)
    b.doc.getMap('map').set('conflict', 'from-b')
    b.doc.getArray('array').push(['b1'])
  })
  await waitConverged('round 1', [a, b])

  // Round 2: concurrent edits on top of the shared state, including deletes
  // and inserts in the middle, sent as several separate updates.
  a.doc.getText('text').insert(a.doc.getText('text').length, '!')
  b.doc.getText('text').insert(0, '> ')
  a.doc.getMap('map').delete('b')
  b.doc.getMap('map').set('b2', { nested: [1, 2, 3] })
  a.doc.getArray('array').insert(0, ['a0'])
  b.doc.getArray('array').delete(0, 1)
  b.doc.getArray('array').push(['b2'])
  await waitConverged('round 2', [a, b])

  const s = snapshot(a.doc)
  assert.deepEqual(snapshot(b.doc), s)
  for (const part of ['> ', 'alice ', 'bob ', '!']) {
    assert.ok(s.text.includes(part), `text ${inspect(s.text)} lacks ${inspect(part)}`)
  }
  assert.equal(s.map.a, 1)
  assert.equal(s.map.b, undefined, 'A deleted key b')
  assert.deepEqual(s.map.b2, { nested: [1, 2, 3] })
  assert.ok(['from-a', 'from-b'].includes(s.map.conflict), `conflict = ${inspect(s.map.conflict)}`)
  // Round 1 left 3 elements; B's delete(0, 1) removed whichever came first in
  // that merge, and a0 and b2 were added: 3 - 1 + 2.
  assert.ok(s.array.includes('a0') && s.array.includes('b2'), `array = ${inspect(s.array)}`)
  assert.equal(s.array.length, 4, `array = ${inspect(s.array)}`)
})

test('late joiner receives the full content in its first sync', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = roomName('late-joiner')
  // A's content exists before it connects, so it reaches the server as A's
  // SyncStep2 reply to the server's SyncStep1.
  const a = connectClient(t, room, 'A', { prepare: prefill })
  await waitSynced(a)
  assert.deepEqual(snapshot(a.doc), PREFILLED)
  await waitServerHolds(t, room, PREFILLED)

  const c = connectClient(t, room, 'C')
  const atSync = contentAtFirstSync(c)
  await waitSynced(c)
  assert.deepEqual(await atSync, PREFILLED,
    'C must already have the full content when its sync event fires')
})

test('late joiner gets the content after every earlier client left the room', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // The room is empty when C joins, so a server that unloads idle rooms must
  // have stored the content and load it before answering C's SyncStep1.
  const room = roomName('reload')
  const a = connectClient(t, room, 'A', { prepare: prefill })
  await waitSynced(a)
  await waitServerHolds(t, room, PREFILLED)
  a.destroy()

  const c = connectClient(t, room, 'C')
  const atSync = contentAtFirstSync(c)
  await waitSynced(c)
  assert.deepEqual(await atSync, PREFILLED,
    'C must already have the full content when its sync event fires')
})

test('offline edits merge after reconnect', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = roomName('offline')
  const a = connectClient(t, room, 'A')
  const b = connectClient(t, room, 'B')
  await waitSynced(a, b)

  a.doc.getText('text').insert(0, 'base')
  a.doc.getArray('array').push(['base'])
  await waitConverged('shared baseline', [a, b])

  b.provider.disconnect()
  assert.equal(b.provider.wsconnected, false)

  // Both sides edit while B is offline; B's edits stay local until reconnect.
  b.doc.transact(() => {
    b.doc.getText('text').insert(b.doc.getText('text').length, ' +offline-b')
    b.doc.getMap('map').set('b', 'offline')
    b.doc.getArray('array').push(['b-offline'])
  })
  a.doc.transact(() => {
    a.doc.getText('text').insert(0, 'online-a+ ')
    a.doc.getMap('map').set('a', 'online')
    a.doc.getArray('array').push(['a-online'])
  })
  // Neither edit can have crossed while B is disconnected.
  assert.equal(a.doc.getMap('map').get('b'), undefined)
  assert.equal(b.doc.getMap('map').get('a'), undefined)

  // On reconnect B gets A's edit in the server's SyncStep2 and uploads its own
  // offline edit in reply to the server's SyncStep1.
  b.provider.connect()
  await waitSynced(b)
  await waitConverged('after B reconnected', [a, b])

  const s = snapshot(a.doc)
  assert.equal(s.text, 'online-a+ base +offline-b')
  assert.deepEqual(s.map, { a: 'online', b: 'offline' })
  assert.equal(s.array[0], 'base')
  assert.deepEqual([...s.array.slice(1)].sort(), ['a-online', 'b-offline'])
})

test('awareness state propagates and is removed when its provider is destroyed', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = roomName('awareness')
  const a = connectClient(t, room, 'A')
  const b = connectClient(t, room, 'B')
  await waitSynced(a, b)
  const aId = a.doc.clientID

  a.provider.awareness.setLocalStateField('user', { name: 'alice' })
  await waitFor("B to see A's awareness state",
    () => b.provider.awareness.getStates().get(aId)?.user?.name === 'alice', [a, b])

  a.destroy()
  await waitFor("B to see A's awareness state removed",
    () => !b.provider.awareness.getStates().has(aId), [b])
  // A provider drops all remote awareness states when its *own* connection
  // closes, so the removal above only counts if B is still connected.
  assert.ok(b.provider.wsconnected && b.provider.synced, 'B must still be connected')
})

test('awareness state is removed when its client drops without saying goodbye', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // provider.destroy() sends an explicit "state = null" awareness update
  // before closing. Here the socket dies abruptly instead, so only the server
  // can tell B that A is gone.
  const room = roomName('awareness-drop')
  const a = connectClient(t, room, 'A')
  const b = connectClient(t, room, 'B')
  await waitSynced(a, b)
  const aId = a.doc.clientID

  a.provider.awareness.setLocalStateField('user', { name: 'alice' })
  await waitFor("B to see A's awareness state",
    () => b.provider.awareness.getStates().get(aId)?.user?.name === 'alice', [a, b])

  // Stop A from reconnecting, then kill its TCP connection without a close
  // frame or awareness update (ws's terminate()).
  a.provider.shouldConnect = false
  a.provider.ws.terminate()
  await waitFor("B to see A's awareness state removed after A's connection dropped",
    () => !b.provider.awareness.getStates().has(aId), [b])
  assert.ok(b.provider.wsconnected && b.provider.synced, 'B must still be connected')
})
