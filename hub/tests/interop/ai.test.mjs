// The AI assistant seen by real Yjs clients (y-websocket providers), with the document
// checked against Tiptap StarterKit's ProseMirror schema at every state a member sees.
//
//   CHORUS_WS_URL=ws://127.0.0.1:PORT/ws CHORUS_HTTP_URL=http://127.0.0.1:PORT \
//   CHORUS_STANDIN_URL=http://127.0.0.1:PORT2 node --test ai.test.mjs
//
// The hub runs with the stand-in model server (not a model) as its provider.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { getSchema } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'

const WS = process.env.CHORUS_WS_URL
const HTTP = process.env.CHORUS_HTTP_URL
const STANDIN = process.env.CHORUS_STANDIN_URL
if (!WS || !HTTP || !STANDIN) {
  throw new Error('CHORUS_WS_URL, CHORUS_HTTP_URL and CHORUS_STANDIN_URL must be set')
}

const WAIT_MS = 20_000
const schema = getSchema([StarterKit])

async function until (what, cond) {
  const end = Date.now() + WAIT_MS
  while (Date.now() < end) {
    if (await cond()) return
    await delay(20)
  }
  throw new Error(`timed out waiting for ${what}`)
}

function connect (t, room) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(WS, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  t.after(() => { provider.destroy(); doc.destroy() })
  return { doc, provider, frag: doc.getXmlFragment('default') }
}

/** The fragment as ProseMirror JSON, then a node of the StarterKit schema; throws if invalid. */
function checkStarterKit (frag) {
  const toJSON = (node) => {
    if (node instanceof Y.XmlText) {
      return node.toDelta()
        .filter((d) => typeof d.insert === 'string' && d.insert.length > 0)
        .map((d) => ({
          type: 'text',
          text: d.insert,
          marks: Object.entries(d.attributes || {}).map(([type, attrs]) => ({ type, attrs }))
        }))
    }
    const attrs = node.getAttributes()
    return [{
      type: node.nodeName,
      attrs,
      content: node.toArray().flatMap(toJSON)
    }]
  }
  const json = { type: 'doc', content: frag.toArray().flatMap(toJSON) }
  if (json.content.length === 0) json.content = [{ type: 'paragraph' }]
  const node = schema.nodeFromJSON(json)
  node.check()
  return node
}

async function ask (room, body) {
  const res = await fetch(`${HTTP}/v1/rooms/${room}/ai/runs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  const json = await res.json()
  assert.equal(res.status, 201, JSON.stringify(json))
  return json.id
}

async function runStatus (room, id) {
  const res = await fetch(`${HTTP}/v1/rooms/${room}/ai/runs/${id}`)
  return (await res.json()).status
}

async function script (behaviors) {
  const res = await fetch(`${STANDIN}/_standin/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(behaviors)
  })
  assert.equal(res.status, 204)
}

const synced = (c) => until('sync', () => c.provider.synced)

function startParagraph (c, text) {
  c.doc.transact(() => {
    const p = new Y.XmlElement('paragraph')
    p.insert(0, [new Y.XmlText(text)])
    c.frag.insert(c.frag.length, [p])
  })
}

/** Asks at the end of the first paragraph; returns the XML once the run is done. */
async function cleanRun (t) {
  const room = `ai-clean-${randomUUID()}`
  const a = connect(t, room)
  await synced(a)
  startParagraph(a, 'Start.')
  const text = a.frag.get(0).get(0)
  const pos = Y.createRelativePositionFromTypeIndex(text, 6, -1)
  const id = await ask(room, {
    prompt: 'expand',
    target: 'document',
    field: 'default',
    position: Buffer.from(Y.encodeRelativePosition(pos)).toString('base64')
  })
  await until('done', async () => (await runStatus(room, id)) === 'done')
  await until('answer', () => a.frag.toString().includes('The end.'))
  return a.frag.toString()
}

test('a formatted answer streams to every member as valid StarterKit structure, while a person types at its insertion point', async (t) => {
  const clean = await cleanRun(t)
  const room = `ai-${randomUUID()}`
  const a = connect(t, room)
  const b = connect(t, room)
  await Promise.all([synced(a), synced(b)])
  startParagraph(a, 'Start.')
  await until('paragraph at b', () => b.frag.length === 1)

  // Every state b sees is a valid document of the editor's schema.
  let states = 0
  let invalid = null
  b.doc.on('afterTransaction', () => {
    try {
      checkStarterKit(b.frag)
      states++
    } catch (e) {
      invalid = invalid || `${e.message} in ${b.frag.toString()}`
    }
  })

  await script([{ tokens_per_second: 30, token_chars: 4 }])
  const text = a.frag.get(0).get(0)
  const pos = Y.createRelativePositionFromTypeIndex(text, 6, -1)
  const id = await ask(room, {
    prompt: 'expand',
    target: 'document',
    field: 'default',
    position: Buffer.from(Y.encodeRelativePosition(pos)).toString('base64')
  })

  // The assistant's cursor in awareness: a relative position at its insertion point.
  let cursor = null
  await until('the assistant\'s cursor', () => {
    for (const state of a.provider.awareness.getStates().values()) {
      if (state.ai && state.cursor && state.ai.status === 'writing') cursor = state.cursor.anchor
    }
    return cursor !== null
  })
  // A person types 200 characters there: the first at the assistant's insertion point, the
  // rest after their own previous one (their caret).
  const typed = Array.from({ length: 200 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('')
  const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(cursor), a.doc)
  assert.ok(abs && abs.type instanceof Y.XmlText, 'the cursor resolves into a text')
  let caret = null
  for (let i = 0; i < typed.length; i += 10) {
    const at = caret
      ? Y.createAbsolutePositionFromRelativePosition(caret, a.doc)
      : abs
    at.type.insert(at.index, typed.slice(i, i + 10))
    caret = Y.createRelativePositionFromTypeIndex(at.type, at.index + 10, -1)
    await delay(15)
  }
  await until('done', async () => (await runStatus(room, id)) === 'done')
  await until('converged', () =>
    a.frag.toString() === b.frag.toString() && b.frag.toString().includes('The end.'))

  assert.equal(invalid, null)
  assert.ok(states > 10, `only ${states} states seen`)
  const xml = b.frag.toString()
  assert.ok(xml.includes(typed), `the person's text was split: ${xml}`)
  assert.equal(xml.replace(typed, ''), clean, 'the answer stays in one piece')
  checkStarterKit(b.frag)
})

test('two runs asked at one position at once take turns and never interleave', async (t) => {
  const room = `ai-turns-${randomUUID()}`
  const a = connect(t, room)
  await synced(a)
  const one = 'First answer, all of it in one paragraph.'
  const two = 'Second answer, which must not mix with the first.'
  await script([
    { answer: one, tokens_per_second: 60, token_chars: 3 },
    { answer: two, tokens_per_second: 60, token_chars: 3 }
  ])
  const [x, y] = await Promise.all([
    ask(room, { prompt: 'one', target: 'document' }),
    ask(room, { prompt: 'two', target: 'document' })
  ])
  await until('both done', async () =>
    (await runStatus(room, x)) === 'done' && (await runStatus(room, y)) === 'done')
  await until('both arrived', () => a.frag.toString().includes(one) && a.frag.toString().includes(two))
  const xml = a.frag.toString()
  assert.ok(xml.includes(`<paragraph>${one}</paragraph>`), xml)
  assert.ok(xml.includes(`<paragraph>${two}</paragraph>`), xml)
  checkStarterKit(a.frag)
})
