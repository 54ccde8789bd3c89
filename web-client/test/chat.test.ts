import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'

import { chatOf, messages, send } from '../src/chat'

describe('chat', () => {
  it('round-trips messages between two replicas, oldest first', () => {
    const a = new Y.Doc()
    const b = new Y.Doc()
    a.on('update', (u: Uint8Array) => Y.applyUpdate(b, u))
    send(a, 'Otter 12', 'hello', 1000)
    send(a, 'Otter 12', 'again', 2000)
    const got = messages(b)
    expect(got.map((m) => [m.author, m.role, m.text, m.status, m.time])).toEqual([
      ['Otter 12', 'user', 'hello', 'done', 1000],
      ['Otter 12', 'user', 'again', 'done', 2000],
    ])
    expect(new Set(got.map((m) => m.id)).size).toBe(2)
  })

  it('shows an assistant answer as it streams, and skips what is not a message', () => {
    const doc = new Y.Doc()
    const text = new Y.Text()
    doc.transact(() => {
      const m = new Y.Map<unknown>()
      m.set('id', 'run-msg')
      m.set('role', 'assistant')
      m.set('author', 'assistant')
      m.set('status', 'streaming')
      m.set('run', 'run_1')
      m.set('text', text)
      const broken = new Y.Map<unknown>()
      broken.set('text', 'no id')
      chatOf(doc).push([m, broken])
    })
    text.insert(0, 'Part')
    text.insert(4, 'ial')
    const [m, ...rest] = messages(doc)
    expect(rest).toEqual([])
    expect(m).toMatchObject({ role: 'assistant', text: 'Partial', status: 'streaming', run: 'run_1' })
  })

  it('keeps the last messages only', () => {
    const doc = new Y.Doc()
    for (let i = 0; i < 5; i++) send(doc, 'x', `m${i}`, i)
    expect(messages(doc, 2).map((m) => m.text)).toEqual(['m3', 'm4'])
  })
})
