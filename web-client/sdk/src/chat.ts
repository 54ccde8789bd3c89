// The room's chat, as the hub documents it (docs/AI.md "The chat"): a root Y.Array `chat` of
// Y.Map messages; `text` is a Y.Text that grows while an assistant's answer streams. The
// chat is part of the document, so late joiners see its history and it persists with it.
// Other members (and the assistant) write it too: every entry is read defensively.
import * as Y from 'yjs'

/** One chat message, read from the document. */
export interface ChatMessage {
  /** The message's id. */
  id: string
  /** The user (`sub`) who wrote it, or `assistant`. */
  author: string
  /** `user` or `assistant`. */
  role: 'user' | 'assistant'
  /** Its text so far (an assistant's answer grows while `status` is `streaming`). */
  text: string
  /** `done`, or for an answer `streaming`, `cancelled`, `interrupted`, `failed`. */
  status: string
  /** The run that wrote it (assistant messages). */
  run?: string
  /** The model that wrote it (assistant messages). */
  model?: string
  /** Who asked for it (assistant messages). */
  asked_by?: string
  /** The message it answers. */
  reply_to?: string
  /** Milliseconds since the epoch. */
  time: number
}

/** The chat's root type in `doc`. */
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
    const time = Number(m.get('time') ?? 0)
    const message: ChatMessage = {
      id,
      author: String(m.get('author') ?? ''),
      role: m.get('role') === 'assistant' ? 'assistant' : 'user',
      text: text instanceof Y.Text ? text.toString() : typeof text === 'string' ? text : '',
      status: String(m.get('status') ?? 'done'),
      time: Number.isFinite(time) ? time : 0,
    }
    for (const key of ['run', 'model', 'asked_by', 'reply_to'] as const) {
      const v = m.get(key)
      if (typeof v === 'string') message[key] = v
    }
    out.push(message)
  })
  return out
}

/** Appends a person's message and returns its id. */
export function send(doc: Y.Doc, author: string, text: string, now = Date.now(), replyTo?: string): string {
  const id = `m_${now.toString(36)}_${Math.random().toString(36).slice(2, 10)}`
  doc.transact(() => {
    const m = new Y.Map<unknown>()
    m.set('id', id)
    m.set('author', author)
    m.set('role', 'user')
    m.set('text', new Y.Text(text))
    m.set('status', 'done')
    m.set('time', now)
    if (replyTo !== undefined) m.set('reply_to', replyTo)
    chatOf(doc).push([m])
  })
  return id
}
