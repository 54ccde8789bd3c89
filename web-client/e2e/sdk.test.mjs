// End to end: the SDK (`@chorus/client`, the committed web-client/sdk/dist) in Node against a
// real hub. Started by the hub's test `web_e2e` (hub/tests/web_e2e.rs), like editor.test.mjs,
// with:
//   CHORUS_URL     the hub (http://127.0.0.1:port)
//   STANDIN_URL    the stand-in model server, to script answers
//   WRITE_TOKEN    a JWT with the write role on every room
// Tokens the environment does not carry (another room's, an expired one) are signed here with
// the secret that hub's tokens use (`SECRET` in hub/tests/common/mod.rs), or JWT_SECRET.
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { after, test } from 'node:test'

import { ChorusClient } from '@chorus/client'
import WebSocket from 'ws'

const HUB = process.env.CHORUS_URL
const STANDIN = process.env.STANDIN_URL
const WRITE = process.env.WRITE_TOKEN
const SECRET = process.env.JWT_SECRET ?? 'test-secret-for-chorus-0123456789abcdef'
const PATIENCE_MS = 15_000

assert.ok(HUB && STANDIN && WRITE, 'CHORUS_URL, STANDIN_URL and WRITE_TOKEN are set')

const clients = []
after(() => {
  for (const c of clients) c.close()
})

function client (options = {}) {
  const c = new ChorusClient({ url: HUB, token: WRITE, WebSocket, ...options })
  clients.push(c)
  return c
}

/** An HS256 JWT with `claims` over the defaults of hub/tests/common/mod.rs `token()`. */
function sign (claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = { sub: 'user-1', rooms: ['*'], role: 'write', exp: Math.floor(Date.now() / 1000) + 3600, ...claims }
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(body)}`
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`
}

/** Resolves once `check()` is truthy (polled), or fails after a bounded patience. */
async function eventually (check, what) {
  const deadline = Date.now() + PATIENCE_MS
  for (;;) {
    const value = check()
    if (value) return value
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const roomName = (what) => `sdk-${what}-${Date.now()}-${Math.random().toString(36).slice(2, 6)}`

test('two SDK clients in one room converge, see each other, and hear "saved"', async () => {
  const room = roomName('converge')
  const a = client().join(room)
  const b = client().join(room)
  const savedEvents = []
  a.on('saved', (s) => savedEvents.push(s))
  await Promise.all([a.whenSynced(), b.whenSynced()])
  assert.equal(a.welcome?.role, 'write')
  assert.equal(a.welcome?.room, room)

  a.doc.getText('body').insert(0, 'from a. ')
  b.doc.getText('body').insert(0, 'from b. ')
  await eventually(() => a.doc.getText('body').toString().length === 16 &&
    a.doc.getText('body').toString() === b.doc.getText('body').toString(), 'both texts to converge')
  assert.match(a.doc.getText('body').toString(), /from a\. /)
  assert.match(a.doc.getText('body').toString(), /from b\. /)

  await Promise.all([a.whenSaved(), b.whenSaved()])
  assert.equal(a.saved, true)
  assert.equal(savedEvents.at(-1), true)

  a.setPresence({ status: 'editing' })
  const peer = await eventually(() => b.peers().find((p) => p.state.status === 'editing'), "a's presence at b")
  assert.equal(peer.clientId, a.doc.clientID)
  assert.equal(await a.ping() >= 0, true)
})

test('a chat message sent by one client is seen by the other', async () => {
  const room = roomName('chat')
  const a = client().join(room)
  const b = client().join(room)
  await Promise.all([a.whenSynced(), b.whenSynced()])
  const heard = []
  b.on('chat', (messages) => heard.push(messages))
  const id = a.send('hello over the hub')
  const got = await eventually(() => b.messages().find((m) => m.id === id), 'the message at b')
  assert.equal(got.text, 'hello over the hub')
  assert.equal(got.author, 'user-1')
  assert.equal(got.role, 'user')
  assert.ok(heard.length > 0, 'b heard a chat event')
  await a.whenSaved()
})

test('an AI answer asked into the chat streams run events to ai.done', async () => {
  const script = await fetch(`${STANDIN}/_standin/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([{ answer: 'Hello from the **stand-in**.', tokens_per_second: 200, token_chars: 4 }]),
  })
  assert.equal(script.status, 204)
  const room = roomName('ai')
  const a = client().join(room)
  const b = client().join(room)
  await Promise.all([a.whenSynced(), b.whenSynced()])
  const run = a.ask({ prompt: 'Say hello', target: 'chat' })
  const statuses = []
  run.on('status', (s) => statuses.push(s))
  const done = await run.done
  assert.equal(done.type, 'ai.done')
  assert.equal(done.status, 'done')
  assert.equal(done.run, run.id)
  assert.ok(statuses.includes('running') || statuses.includes('writing'), `run statuses: ${statuses}`)
  assert.equal(statuses.at(-1), 'done')
  const answer = await eventually(() => b.messages().find((m) => m.run === run.id && m.status === 'done'),
    "the assistant's message at b")
  assert.equal(answer.role, 'assistant')
  assert.match(answer.text, /stand-in/)
})

test('a token for another room stops with a typed 4403 error', async () => {
  const room = roomName('forbidden')
  const s = client({ token: sign({ rooms: ['somewhere-else'] }) }).join(room)
  const errors = []
  s.on('error', (e) => errors.push(e))
  await assert.rejects(s.whenSynced(), (e) => e.name === 'ChorusError' && e.kind === 'forbidden' && e.code === 4403 && e.fatal)
  assert.deepEqual(errors.map((e) => [e.kind, e.code]), [['forbidden', 4403]])
  assert.equal(s.status, 'disconnected')
})

test('an expired token gets a fresh one from the refresh callback, then connects', async () => {
  const room = roomName('refresh')
  let asked = 0
  const closes = []
  const s = client({
    token: sign({ exp: Math.floor(Date.now() / 1000) - 120 }),
    getToken: async (r) => {
      assert.equal(r, room)
      asked += 1
      return WRITE
    },
  }).join(room)
  s.on('close', (c) => closes.push(c.code))
  await s.whenSynced()
  assert.equal(asked, 1)
  assert.deepEqual(closes, [4401])
  s.doc.getMap('m').set('k', 'v')
  await s.whenSaved()
})
