// One room: the shared document in a Tiptap editor (Collaboration + carets), who is here,
// the connection and "saved" state, the chat, the assistant and the history. This file is
// the room's frame, in the page's first script; the live part (Yjs and the connection,
// live.ts) and the editor (EditorPane.tsx) are chunks of their own (chunks.ts), so the frame
// paints without waiting for them.
import { Component, lazy, type ReactNode, Suspense, useCallback, useEffect, useMemo, useState } from 'react'

import { type AiEvent, askMessage, parseEvent, runMessage } from './ai'
import { Api } from './api'
import type { ChatMessage } from './chat'
import { editorChunk, liveChunk } from './chunks'
import type { EditorHandle } from './EditorPane'
import { History } from './History'
import type { Identity } from './identity'
import type { AwarenessState, Live } from './live'
import { EDITOR_FIELD, type SearchHit } from './search'
import { Search } from './Search'
import { positionFromUrl, urlForHit, withoutPosition } from './url'

const EditorPane = lazy(editorChunk)

/** Where the editor's chunk failed to load (a lost network, a page older than the hub's build). */
class EditorFailed extends Component<{ children: ReactNode }, { failed: boolean }> {
  override state = { failed: false }
  static getDerivedStateFromError() {
    return { failed: true }
  }
  override render() {
    return this.state.failed ? <p className="error" role="alert">The editor could not load: reload the page.</p> : this.props.children
  }
}

interface Peer {
  clientId: number
  name: string
  color: string
  assistant: boolean
}

/** Who is here, from the awareness states (the assistant shows as itself). */
function peersOf(states: AwarenessState[]): Peer[] {
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

/**
 * `token`: the page's token (null: none), a promise while a development token is on its way:
 * the frame, the editor and the socket do not wait for it, only the socket's authentication.
 */
export function Room({ room, token, identity }: { room: string; token: Promise<string | null>; identity: Identity }) {
  const [live, setLive] = useState<Live | null>(null)
  const api = useMemo(() => new Api(room, token), [room, token])
  const [status, setStatus] = useState<string>('connecting')
  const [synced, setSynced] = useState(false)
  const [unsynced, setUnsynced] = useState(0)
  const [readOnly, setReadOnly] = useState(false)
  const [denied, setDenied] = useState<string | null>(null)
  const [loadError, setLoadError] = useState<string | null>(null)
  const [peers, setPeers] = useState<Peer[]>([])
  const [chat, setChat] = useState<ChatMessage[]>([])
  // Runs asked here: status, and whether each is a suggestion (by the request's id first).
  const [runs, setRuns] = useState<Map<string, { status: string; suggest: boolean }>>(new Map())
  const [asked] = useState(() => new Map<string, boolean>())
  const [aiError, setAiError] = useState<string | null>(null)

  // Both chunks at once.
  useEffect(() => {
    editorChunk().catch(() => {}) // (a failure shows where the editor would be: EditorFailed)
    liveChunk().catch((e: unknown) => setLoadError(String(e)))
  }, [])

  useEffect(() => {
    const onStateless = (payload: string) => {
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
    let made: Live | null = null
    let gone = false
    void liveChunk().then(({ connect }) => {
      if (gone) return
      made = connect(room, token, identity, {
        status: setStatus,
        synced: setSynced,
        unsynced: setUnsynced,
        authenticated: (scope) => setReadOnly(scope === 'readonly'),
        failed: (reason) => setDenied(reason || 'permission denied'),
        peers: (states) => setPeers(peersOf(states)),
        stateless: onStateless,
        chat: setChat,
      })
      setLive(made)
    }, () => {})
    return () => {
      gone = true
      made?.destroy()
      setLive(null)
    }
  }, [room, token, identity, asked])

  const [editor, setEditor] = useState<EditorHandle | null>(null)
  const onEditor = useCallback((handle: EditorHandle) => setEditor(handle), [])

  // A search hit to show (a relative position, base64): from `#at=` when a hit in another room
  // opened this page, or chosen here. Placed once the document has synced, then forgotten.
  const [at, setAt] = useState(() => positionFromUrl(window.location.href))
  useEffect(() => {
    if (!at || !editor || !synced || !editor.reveal(at)) return
    setAt(null)
    const plain = withoutPosition(window.location.href)
    if (plain) window.history.replaceState(window.history.state, '', plain)
  }, [at, editor, synced])
  const openHit = (hit: SearchHit) => {
    // Only the editor's own fragment can hold a cursor: a hit elsewhere opens the room at the top.
    const place = hit.field === null || hit.field === EDITOR_FIELD ? hit.relative : null
    if (hit.room === room) {
      if (place) setAt(place)
    } else {
      // As the picker opens a room: a new page (the token in the fragment stays).
      window.location.assign(urlForHit(window.location.href, hit.room, place))
    }
  }

  const [prompt, setPrompt] = useState('')
  const [apply, setApply] = useState<'direct' | 'suggest'>('direct')
  const [message, setMessage] = useState('')
  const ask = (target: 'document' | 'chat') => {
    if (!live || !editor || !prompt.trim()) return
    setAiError(null)
    const request = `q${Date.now().toString(36)}`
    asked.set(request, target === 'document' && apply === 'suggest')
    live.provider.sendStateless(
      askMessage({
        prompt: prompt.trim(),
        target,
        apply,
        positions: target === 'document' ? editor.positions() : null,
        request,
      }),
    )
    setPrompt('')
  }
  const act = (type: 'ai.cancel' | 'ai.revert' | 'ai.accept' | 'ai.reject', run: string) =>
    live?.provider.sendStateless(runMessage(type, run))

  const saved = status === 'connected' && synced && unsynced === 0
  const state = loadError ? `error: could not load the page (${loadError}); reload` : denied ? `refused: ${denied}` : status !== 'connected' ? status : !synced ? 'loading' : saved ? 'saved' : 'saving'
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
        <Search token={token} room={room} onOpen={openHit} />
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
          {live ? (
            <EditorFailed>
              <Suspense fallback={<p className="loading">Loading the editor…</p>}>
                <EditorPane doc={live.doc} provider={live.provider} identity={identity} editable={!readOnly && !denied} onReady={onEditor} />
              </Suspense>
            </EditorFailed>
          ) : (
            <p className="loading">Loading the editor…</p>
          )}
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
                if (live && message.trim() && !readOnly) {
                  live.send(identity.name, message.trim())
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
