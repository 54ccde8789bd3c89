// The room's chat, as the hub documents it (docs/AI.md): a Y.Array `chat` of Y.Map
// messages; `text` is a Y.Text that grows while an answer streams.
import * as Y from 'yjs'

export interface ChatMessage {
  id: string
  author: string
  role: 'user' | 'assistant'
  text: string
  status: string
  run?: string
  time: number
}

export function chatOf(doc: Y.Doc): Y.Array<Y.Map<unknown>> {
  return doc.getArray<Y.Map<unknown>>('chat')
}

/** The last `limit` messages, oldest first (malformed entries are skipped). */
export function messages(doc: Y.Doc, limit = 200): ChatMessage[] {
  const arr = chatOf(doc)
  const out: ChatMessage[] = []
  const start = Math.max(0, arr.length - limit)
  arr.slice(start).forEach((m) => {
    if (!(m instanceof Y.Map)) return
    const id = m.get('id')
    const text = m.get('text')
    if (typeof id !== 'string') return
    const role = m.get('role') === 'assistant' ? 'assistant' : 'user'
    const run = m.get('run')
    out.push({
      id,
      author: String(m.get('author') ?? ''),
      role,
      text: text instanceof Y.Text ? text.toString() : typeof text === 'string' ? text : '',
      status: String(m.get('status') ?? 'done'),
      ...(typeof run === 'string' ? { run } : {}),
      time: Number(m.get('time') ?? 0),
    })
  })
  return out
}

/** Appends a person's message. */
export function send(doc: Y.Doc, author: string, text: string, now = Date.now()): string {
  const id = `m_${now.toString(36)}_${Math.random().toString(36).slice(2, 10)}`
  doc.transact(() => {
    const m = new Y.Map<unknown>()
    m.set('id', id)
    m.set('author', author)
    m.set('role', 'user')
    m.set('text', new Y.Text(text))
    m.set('status', 'done')
    m.set('time', now)
    chatOf(doc).push([m])
  })
  return id
}
