// The header's search box: every room the page's token grants, hits listed with their
// highlighted snippets (a combobox: the focus stays in the box, the arrow keys move through
// the hits, Enter opens one, Escape closes the list). Small and free of Yjs and Tiptap, so it
// is part of the page's first script.
import { useCallback, useEffect, useId, useRef, useState } from 'react'

import { MIN_QUERY, type SearchHit, type SearchResults, searchRooms, SearchError, snippetSegments } from './search'

/** Typing pauses this long before the box searches by itself. */
const DEBOUNCE_MS = 300

function Snippet({ hit }: { hit: SearchHit }) {
  // Text nodes and <mark> elements only: the snippet is the server's, never markup.
  return (
    <span className="search-snippet">
      {snippetSegments(hit.snippet, hit.highlights).map((s, i) => (s.mark ? <mark key={i}>{s.text}</mark> : <span key={i}>{s.text}</span>))}
    </span>
  )
}

/**
 * `room`: the room on screen (its hits say so); `onOpen`: a hit was chosen.
 */
export function Search({ token, room, onOpen }: { token: Promise<string | null>; room: string; onOpen: (hit: SearchHit) => void }) {
  const [query, setQuery] = useState('')
  const [results, setResults] = useState<SearchResults | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [loading, setLoading] = useState(false)
  const [open, setOpen] = useState(false)
  const [active, setActive] = useState(-1)
  const pending = useRef<AbortController | null>(null)
  // The query last sent: the debounce does not repeat what Enter has just asked.
  const sent = useRef('')
  const id = useId()
  const listId = `${id}-hits`
  const optionId = (i: number) => `${id}-hit-${i}`

  const run = useCallback(
    (text: string, again: boolean) => {
      const q = text.trim()
      if (Array.from(q).length < MIN_QUERY || (!again && q === sent.current)) return
      sent.current = q
      pending.current?.abort()
      const ctl = new AbortController()
      pending.current = ctl
      setLoading(true)
      setOpen(true)
      searchRooms(q, token, { signal: ctl.signal }).then(
        (found) => {
          if (ctl.signal.aborted) return
          setResults(found)
          setError(null)
          setActive(-1)
          setLoading(false)
        },
        (e: unknown) => {
          if (ctl.signal.aborted) return
          setResults(null)
          setError(e instanceof SearchError ? e.message : 'Search failed')
          setActive(-1)
          setLoading(false)
        },
      )
    },
    [token],
  )

  useEffect(() => {
    const q = query.trim()
    if (Array.from(q).length < MIN_QUERY) {
      // Too short to search: whatever was on its way no longer answers this box.
      pending.current?.abort()
      sent.current = ''
      setResults(null)
      setError(null)
      setLoading(false)
      setActive(-1)
      return
    }
    const timer = setTimeout(() => run(q, false), DEBOUNCE_MS)
    return () => clearTimeout(timer)
  }, [query, run])

  useEffect(() => () => pending.current?.abort(), [])

  const hits = results?.results ?? []
  const shown = open && (loading || error !== null || results !== null)
  const listed = shown && hits.length > 0

  useEffect(() => {
    if (active >= 0) document.getElementById(`${id}-hit-${active}`)?.scrollIntoView({ block: 'nearest' })
  }, [active, id])

  const choose = (hit: SearchHit) => {
    setOpen(false)
    setActive(-1)
    onOpen(hit)
  }

  return (
    <form
      role="search"
      className="search"
      onSubmit={(e) => {
        e.preventDefault()
        run(query, true)
      }}
      onBlur={(e) => {
        if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setOpen(false)
      }}
    >
      <input
        type="search"
        data-testid="search"
        aria-label="Search all rooms"
        placeholder="Search rooms"
        role="combobox"
        aria-autocomplete="list"
        aria-expanded={listed}
        aria-controls={listed ? listId : undefined}
        aria-activedescendant={listed && active >= 0 ? optionId(active) : undefined}
        autoComplete="off"
        spellCheck={false}
        maxLength={500}
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        onFocus={() => setOpen(true)}
        onKeyDown={(e) => {
          if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
            e.preventDefault()
            if (!open) {
              setOpen(true)
              return
            }
            if (hits.length === 0) return
            const step = e.key === 'ArrowDown' ? 1 : -1
            setActive((a) => (a < 0 ? (step > 0 ? 0 : hits.length - 1) : (a + step + hits.length) % hits.length))
          } else if (e.key === 'Enter' && listed && active >= 0) {
            e.preventDefault()
            const hit = hits[active]
            if (hit) choose(hit)
          } else if (e.key === 'Escape' && shown) {
            // (Otherwise Escape empties a search box: that only once the list is closed.)
            e.preventDefault()
            setOpen(false)
            setActive(-1)
          }
        }}
      />
      {shown && (
        <div className="search-results" data-testid="search-results">
          {loading && <p className="search-message" role="status">Searching…</p>}
          {!loading && error !== null && (
            <p className="search-message error" role="alert">
              {error}
            </p>
          )}
          {!loading && results !== null && hits.length === 0 && (
            <p className="search-message" role="status">
              No matches
            </p>
          )}
          {results !== null && !results.semantic && <p className="search-note">text matches only</p>}
          {hits.length > 0 && (
            <ul role="listbox" id={listId} aria-label="Search results">
              {hits.map((hit, i) => (
                <li
                  key={i}
                  id={optionId(i)}
                  role="option"
                  aria-selected={i === active}
                  className="search-hit"
                  data-testid="search-hit"
                  data-room={hit.room}
                  // Keeps the focus in the box, so its blur does not close the list under the click.
                  onMouseDown={(e) => e.preventDefault()}
                  onClick={() => choose(hit)}
                >
                  <span className="search-room">
                    {hit.room}
                    {hit.room === room && <span className="search-here"> (this room)</span>}
                  </span>
                  <Snippet hit={hit} />
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </form>
  )
}
