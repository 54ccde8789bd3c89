// Search over every room the page's token grants (`GET /v1/search`): the request, a wary
// reading of the answer (the server's text is untrusted: no markup, offsets checked), and the
// highlighted snippet as plain segments the UI turns into <mark> elements. No Yjs or Tiptap
// here: this is in the page's first script.
import { validRoom } from './url'

/** The Y.XmlFragment the editor shows (EditorPane's Collaboration field): only hits there can be placed. */
export const EDITOR_FIELD = 'default'

/** Shorter queries wait for Enter-less typing to go on; the hub would match too much. */
export const MIN_QUERY = 2

export type SearchMode = 'hybrid' | 'text' | 'semantic'

export interface SearchHit {
  room: string
  score: number
  snippet: string
  /** [start, end) in code points of `snippet`, checked for shape only: snippetSegments clamps them. */
  highlights: [number, number][]
  /** The root holding the hit (the editor's is EDITOR_FIELD), null if the hub named none. */
  field: string | null
  /** Y.encodeRelativePosition of the hit, base64, null if absent or malformed. */
  relative: string | null
  matched: string[]
}

export interface SearchResults {
  query: string
  mode: string
  /** False where the hub had no semantic ranking: the hits are text matches only. */
  semantic: boolean
  results: SearchHit[]
}

export class SearchError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

const MAX_MESSAGE = 300
const MAX_SNIPPET = 2000
const MAX_HIGHLIGHTS = 200
const MAX_RELATIVE = 4096

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * What the page says for a refused search (`body`: the parsed error body, if any): the hub
 * answers with an RFC 9457 problem, `{status, title, detail, code}`.
 */
export function searchErrorMessage(status: number, body: unknown): string {
  const code = isObject(body) && typeof body.code === 'string' ? body.code : null
  const message = isObject(body) && typeof body.detail === 'string' ? body.detail.trim().slice(0, MAX_MESSAGE) : ''
  if (status === 503 && code === 'unavailable') return 'Search is off on this hub'
  if (status === 401 || status === 403) return 'Not allowed'
  if (message) return message
  if (status === 429) return 'Too many searches: try again in a moment'
  return `Search failed (HTTP ${status})`
}

function relativeOf(v: unknown): string | null {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_RELATIVE) return null
  return /^[A-Za-z0-9+/_-]+={0,2}$/.test(v) ? v : null
}

function hitOf(v: unknown): SearchHit | null {
  if (!isObject(v) || typeof v.room !== 'string' || !validRoom(v.room) || typeof v.snippet !== 'string') return null
  const highlights: [number, number][] = []
  if (Array.isArray(v.highlights)) {
    for (const h of v.highlights.slice(0, MAX_HIGHLIGHTS)) {
      if (Array.isArray(h) && typeof h[0] === 'number' && typeof h[1] === 'number') highlights.push([h[0], h[1]])
    }
  }
  const position = isObject(v.position) ? v.position : {}
  return {
    room: v.room,
    score: typeof v.score === 'number' && Number.isFinite(v.score) ? v.score : 0,
    snippet: v.snippet,
    highlights,
    field: typeof position.field === 'string' ? position.field : null,
    relative: relativeOf(position.relative),
    matched: Array.isArray(v.matched) ? v.matched.filter((m): m is string => typeof m === 'string') : [],
  }
}

/** A 200 answer's body, read warily: malformed hits are dropped; null if it is no answer at all. */
export function parseSearchResults(body: unknown): SearchResults | null {
  if (!isObject(body) || !Array.isArray(body.results)) return null
  return {
    query: typeof body.query === 'string' ? body.query : '',
    mode: typeof body.mode === 'string' ? body.mode : '',
    // Only an explicit false says the semantic side was missing.
    semantic: body.semantic !== false,
    results: body.results.map(hitOf).filter((h): h is SearchHit => h !== null),
  }
}

/** Searches every room `token` grants; throws SearchError with the message to show. */
export async function searchRooms(
  query: string,
  token: string | null | Promise<string | null>,
  { mode = 'hybrid', limit = 10, signal, fetcher = (...a) => fetch(...a) }: {
    mode?: SearchMode
    limit?: number
    signal?: AbortSignal
    fetcher?: typeof fetch
  } = {},
): Promise<SearchResults> {
  const params = new URLSearchParams({ q: query, mode, limit: String(limit) })
  const headers: Record<string, string> = {}
  const bearer = await token
  if (bearer) headers.authorization = `Bearer ${bearer}`
  let res: Response
  try {
    res = await fetcher(`/v1/search?${params}`, { headers, ...(signal ? { signal } : {}) })
  } catch (e) {
    if (signal?.aborted) throw e
    throw new SearchError(0, 'Search failed: the hub is out of reach')
  }
  let body: unknown = null
  try {
    body = await res.json()
  } catch (e) {
    if (signal?.aborted) throw e
    // Not JSON: the status says enough.
  }
  if (!res.ok) throw new SearchError(res.status, searchErrorMessage(res.status, body))
  const results = parseSearchResults(body)
  if (!results) throw new SearchError(res.status, 'Search failed: the hub’s answer was not understood')
  return results
}

export interface Segment {
  text: string
  mark: boolean
}

/**
 * `snippet` cut into plain and highlighted runs. Offsets count code points (an emoji is one);
 * whatever the server sent, this never throws: ranges are truncated to integers, clamped to
 * the snippet, empty or inverted ones dropped, overlapping or touching ones merged.
 */
export function snippetSegments(snippet: string, highlights: readonly (readonly [number, number])[]): Segment[] {
  const chars = Array.from(snippet).slice(0, MAX_SNIPPET)
  const n = chars.length
  const clamp = (x: unknown) => (typeof x === 'number' && !Number.isNaN(x) ? Math.min(n, Math.max(0, Math.trunc(x))) : null)
  const ranges: [number, number][] = []
  for (const h of Array.isArray(highlights) ? highlights.slice(0, MAX_HIGHLIGHTS) : []) {
    if (!Array.isArray(h)) continue
    const start = clamp(h[0])
    const end = clamp(h[1])
    if (start !== null && end !== null && start < end) ranges.push([start, end])
  }
  ranges.sort((a, b) => a[0] - b[0])
  const merged: [number, number][] = []
  for (const r of ranges) {
    const last = merged[merged.length - 1]
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1])
    else merged.push([r[0], r[1]])
  }
  const out: Segment[] = []
  let at = 0
  for (const [start, end] of merged) {
    if (start > at) out.push({ text: chars.slice(at, start).join(''), mark: false })
    out.push({ text: chars.slice(start, end).join(''), mark: true })
    at = end
  }
  if (at < n) out.push({ text: chars.slice(at).join(''), mark: false })
  return out
}

/** The bytes of a base64 (or base64url) string, null if it is not one. */
export function bytesFromBase64(s: string): Uint8Array | null {
  try {
    const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/'))
    const out = new Uint8Array(bin.length)
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
    return out
  } catch {
    return null
  }
}
