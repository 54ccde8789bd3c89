// One room: the shared document in a Tiptap editor (Collaboration + carets), who is here,
// the connection and "saved" state, the chat, and the assistant.
import { HocuspocusProvider } from '@hocuspocus/provider'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { EditorContent, useEditor } from '@tiptap/react'
import { useEffect, useMemo, useState } from 'react'
import { IndexeddbPersistence } from 'y-indexeddb'
import * as Y from 'yjs'

import { type AiEvent, askMessage, parseEvent, runMessage, selectionPositions } from './ai'
import { Api } from './api'
import { type ChatMessage, messages, send } from './chat'
import { History } from './History'
import { schemaExtensions } from './schema'
import type { Identity } from './identity'
import { socketUrl } from './url'

interface Peer {
  clientId: number
  name: string
  color: string
  assistant: boolean
}

/** Who is here, from the awareness states (the assistant shows as itself). */
function peersOf(states: { clientId: number; [key: string]: unknown }[]): Peer[] {
  const out: Peer[] = []
  for (const s of states) {
    const user = s.user as { name?: unknown; color?: unknown } | undefined
    if (!user || typeof user.name !== 'string') continue
    out.push({
      clientId: s.clientId,
      name: user.name.slice(0, 64),
      color: typeof user.color === 'string' && /^#[0-9a-f]{6}$/i.test(user.color) ? user.color : '#64748b',
      assistant: typeof s.ai === 'object' && s.ai !== null,
    })
  }
  return out
}

export function Room({ room, token, identity }: { room: string; token: string | null; identity: Identity }) {
  const doc = useMemo(() => new Y.Doc(), [])
  const provider = useMemo(
    () =>
      new HocuspocusProvider({
        url: socketUrl(window.location),
        name: room,
        document: doc,
        token: token ?? '',
      }),
    [doc, room, token],
  )
  const api = useMemo(() => new Api(room, token), [room, token])
  const [status, setStatus] = useState<string>('connecting')
  const [synced, setSynced] = useState(false)
  const [unsynced, setUnsynced] = useState(0)
  const [readOnly, setReadOnly] = useState(false)
  const [denied, setDenied] = useState<string | null>(null)
  const [peers, setPeers] = useState<Peer[]>([])
  const [chat, setChat] = useState<ChatMessage[]>([])
  // Runs asked here: status, and whether each is a suggestion (by the request's id first).
  const [runs, setRuns] = useState<Map<string, { status: string; suggest: boolean }>>(new Map())
  const [asked] = useState(() => new Map<string, boolean>())
  const [aiError, setAiError] = useState<string | null>(null)

  useEffect(() => {
    const onStatus = ({ status }: { status: string }) => setStatus(status)
    const onSynced = ({ state }: { state: boolean }) => setSynced(state)
    const onUnsynced = ({ number }: { number: number }) => setUnsynced(number)
    const onAuthenticated = ({ scope }: { scope: string }) => setReadOnly(scope === 'readonly')
    const onFailed = ({ reason }: { reason: string }) => setDenied(reason || 'permission denied')
    const onAwareness = ({ states }: { states: { clientId: number; [key: string]: unknown }[] }) =>
      setPeers(peersOf(states))
    const onStateless = ({ payload }: { payload: string }) => {
      const e: AiEvent | null = parseEvent(payload)
      if (!e) return
      if (e.type === 'ai.error') {
        setAiError(`${e.code}: ${e.message}`)
        return
      }
      const suggest = (e.type === 'ai.run' && e.request !== undefined && asked.get(e.request)) || false
      setRuns((old) => {
        const was = old.get(e.run)
        return new Map(old).set(e.run, { status: e.status, suggest: was?.suggest || suggest })
      })
    }
    provider.on('status', onStatus)
    provider.on('synced', onSynced)
    provider.on('unsyncedChanges', onUnsynced)
    provider.on('authenticated', onAuthenticated)
    provider.on('authenticationFailed', onFailed)
    provider.on('awarenessChange', onAwareness)
    provider.on('stateless', onStateless)
    provider.setAwarenessField('user', identity)
    // Edits made while the hub is out of reach survive a reload; they sync once it is back.
    const local = new IndexeddbPersistence(`chorus:${room}`, doc)
    const refreshChat = () => setChat(messages(doc))
    doc.getArray('chat').observeDeep(refreshChat)
    refreshChat()
    return () => {
      doc.getArray('chat').unobserveDeep(refreshChat)
      provider.destroy()
      void local.destroy()
    }
  }, [provider, doc, identity, asked, room])

  const editor = useEditor(
    {
      extensions: [
        ...schemaExtensions(),
        Collaboration.configure({ document: doc, field: 'default' }),
        CollaborationCaret.configure({ provider, user: identity }),
      ],
      editorProps: { attributes: { class: 'doc', 'aria-label': 'Document', role: 'textbox', 'aria-multiline': 'true' } },
    },
    [provider],
  )

  useEffect(() => {
    editor?.setEditable(!readOnly && !denied)
  }, [editor, readOnly, denied])

  const [prompt, setPrompt] = useState('')
  const [apply, setApply] = useState<'direct' | 'suggest'>('direct')
  const [message, setMessage] = useState('')
  const ask = (target: 'document' | 'chat') => {
    if (!editor || !prompt.trim()) return
    setAiError(null)
    const request = `q${Date.now().toString(36)}`
    asked.set(request, target === 'document' && apply === 'suggest')
    provider.sendStateless(
      askMessage({
        prompt: prompt.trim(),
        target,
        apply,
        positions: target === 'document' ? selectionPositions(editor) : null,
        request,
      }),
    )
    setPrompt('')
  }
  const act = (type: 'ai.cancel' | 'ai.revert' | 'ai.accept' | 'ai.reject', run: string) =>
    provider.sendStateless(runMessage(type, run))

  const saved = status === 'connected' && synced && unsynced === 0
  const state = denied ? `refused: ${denied}` : status !== 'connected' ? status : !synced ? 'loading' : saved ? 'saved' : 'saving'
  const lastRuns = [...runs.entries()].slice(-3).reverse()

  return (
    <div className="room">
      <header className="bar">
        <a className="brand" href="/">Chorus</a>
        <span className="room-name" title="Room">{room}</span>
        <span className={`state state-${state.split(':')[0]}`} role="status" data-testid="state">
          {state}
        </span>
        {readOnly && <span className="badge" data-testid="read-only">read only</span>}
        <ul className="presence" aria-label="Who is here">
          {peers.map((p) => (
            <li key={p.clientId} title={p.assistant ? 'assistant' : p.name} style={{ borderColor: p.color }}>
              {p.assistant ? '✦ ' : ''}
              {p.name}
            </li>
          ))}
        </ul>
      </header>
      <main className="layout">
        <section className="editor" aria-label="Editor">
          <EditorContent editor={editor} />
        </section>
        <aside className="side">
          <section aria-label="Assistant" className="panel">
            <h2>Assistant</h2>
            <textarea
              aria-label="Ask the assistant"
              placeholder="Ask the assistant (it writes at your cursor)"
              value={prompt}
              disabled={readOnly}
              onChange={(e) => setPrompt(e.target.value)}
            />
            <div className="row">
              <label>
                <input type="checkbox" checked={apply === 'suggest'} onChange={(e) => setApply(e.target.checked ? 'suggest' : 'direct')} />
                as a suggestion
              </label>
              <button type="button" disabled={readOnly || !prompt.trim()} onClick={() => ask('document')}>
                Ask AI
              </button>
              <button type="button" disabled={readOnly || !prompt.trim()} onClick={() => ask('chat')}>
                Ask in chat
              </button>
            </div>
            {aiError && <p className="error" role="alert">{aiError}</p>}
            <ul className="runs" aria-label="Runs">
              {lastRuns.map(([run, { status: s, suggest }]) => (
                <li key={run} data-testid="run" data-status={s}>
                  <span>{suggest ? `suggestion: ${s}` : s}</span>
                  {(s === 'queued' || s === 'running') && <button type="button" onClick={() => act('ai.cancel', run)}>Cancel</button>}
                  {!(s === 'queued' || s === 'running') && !readOnly && (
                    <>
                      {suggest && s === 'done' && <button type="button" onClick={() => act('ai.accept', run)}>Accept</button>}
                      {suggest && s === 'done' && <button type="button" onClick={() => act('ai.reject', run)}>Reject</button>}
                      <button type="button" onClick={() => act('ai.revert', run)}>Revert</button>
                    </>
                  )}
                </li>
              ))}
            </ul>
          </section>
          <History api={api} readOnly={readOnly} ready={synced && status === 'connected'} />
          <section aria-label="Chat" className="panel chat">
            <h2>Chat</h2>
            <ol className="messages" data-testid="chat">
              {chat.map((m) => (
                <li key={m.id} className={m.role}>
                  <b>{m.role === 'assistant' ? 'Assistant' : m.author}</b>
                  {m.status !== 'done' && <i> ({m.status})</i>}
                  <p>{m.text}</p>
                </li>
              ))}
            </ol>
            <form
              onSubmit={(e) => {
                e.preventDefault()
                if (message.trim() && !readOnly) {
                  send(doc, identity.name, message.trim())
                  setMessage('')
                }
              }}
            >
              <input aria-label="Message" placeholder="Message" value={message} disabled={readOnly} onChange={(e) => setMessage(e.target.value)} />
              <button type="submit" disabled={readOnly}>Send</button>
            </form>
          </section>
        </aside>
      </main>
    </div>
  )
}
