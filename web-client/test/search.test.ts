import { describe, expect, it } from 'vitest'

import {
  bytesFromBase64,
  parseSearchResults,
  SearchError,
  searchErrorMessage,
  searchRooms,
  snippetSegments,
  type Segment,
} from '../src/search'
import { positionFromUrl, roomFromUrl, tokenFromUrl, urlForHit, withoutPosition } from '../src/url'

const marked = (segments: Segment[]) => segments.map((s) => (s.mark ? `[${s.text}]` : s.text)).join('')

describe('snippet segments', () => {
  it('marks the highlighted ranges', () => {
    expect(snippetSegments('we decided the pricing for the', [[15, 22]])).toEqual([
      { text: 'we decided the ', mark: false },
      { text: 'pricing', mark: true },
      { text: ' for the', mark: false },
    ])
    expect(marked(snippetSegments('abc', [[0, 3]]))).toBe('[abc]')
    expect(marked(snippetSegments('abc', []))).toBe('abc')
    expect(snippetSegments('', [[0, 1]])).toEqual([])
  })

  it('counts code points, so an emoji or an astral character is one', () => {
    // 👩‍💻 is three code points (woman, zero-width joiner, laptop); 𝒳 one, two UTF-16 units.
    expect(marked(snippetSegments('😀 café 𝒳 ok', [[2, 6], [7, 8]]))).toBe('😀 [café] [𝒳] ok')
    expect(marked(snippetSegments('👩‍💻 dev', [[0, 3]]))).toBe('[👩‍💻] dev')
    // Never half a surrogate pair.
    for (const s of snippetSegments('😀😀😀', [[1, 2]])) expect(s.text).not.toMatch(/^[\udc00-\udfff]|[\ud800-\udbff]$/)
    expect(marked(snippetSegments('😀😀😀', [[1, 2]]))).toBe('😀[😀]😀')
  })

  it('survives whatever a hostile server sends', () => {
    const s = 'hello world'
    expect(marked(snippetSegments(s, [[-5, 2]]))).toBe('[he]llo world')
    expect(marked(snippetSegments(s, [[9, 1000]]))).toBe('hello wor[ld]')
    expect(marked(snippetSegments(s, [[50, 60]]))).toBe('hello world')
    expect(marked(snippetSegments(s, [[4, 2]]))).toBe('hello world') // inverted
    expect(marked(snippetSegments(s, [[3, 3]]))).toBe('hello world') // empty
    expect(marked(snippetSegments(s, [[0, 4], [2, 7], [6, 8]]))).toBe('[hello wo]rld') // overlapping
    expect(marked(snippetSegments(s, [[6, 11], [0, 5]]))).toBe('[hello] [world]') // out of order
    expect(marked(snippetSegments(s, [[0, 2], [2, 4]]))).toBe('[hell]o world') // touching
    expect(marked(snippetSegments(s, [[1.7, 3.2]]))).toBe('h[el]lo world')
    expect(marked(snippetSegments(s, [[NaN, 3], [0, Infinity], [-Infinity, 1]]))).toBe('[hello world]')
    const garbage = [null, 'x', [1], ['1', '3'], { 0: 1, 1: 3 }, [1, null], 42] as unknown as [number, number][]
    expect(marked(snippetSegments(s, garbage))).toBe('hello world')
    expect(marked(snippetSegments(s, 'nope' as unknown as [number, number][]))).toBe('hello world')
    expect(marked(snippetSegments(s, null as unknown as [number, number][]))).toBe('hello world')
    // Markup stays text.
    expect(snippetSegments('<img src=x onerror=alert(1)>', [[0, 4]])[0]).toEqual({ text: '<img', mark: true })
  })

  it('keeps a long snippet and many highlights bounded', () => {
    const long = 'a'.repeat(100_000)
    const many = Array.from({ length: 10_000 }, (_, i) => [i * 2, i * 2 + 1] as [number, number])
    const out = snippetSegments(long, many)
    expect(out.map((s) => s.text).join('').length).toBeLessThanOrEqual(2000)
    expect(out.filter((s) => s.mark).length).toBeLessThanOrEqual(200)
  })
})

describe('search answers', () => {
  const hit = {
    room: 'team/notes',
    score: 0.0323,
    snippet: '…we decided the pricing for the…',
    highlights: [[16, 23]],
    position: { field: 'default', offset: 120, relative: 'AQLN8L3OCAYA' },
    matched: ['text', 'semantic'],
  }

  it('reads an answer', () => {
    expect(parseSearchResults({ query: 'pricing', mode: 'hybrid', semantic: true, took_ms: 3, results: [hit] })).toEqual({
      query: 'pricing',
      mode: 'hybrid',
      semantic: true,
      results: [
        {
          room: 'team/notes',
          score: 0.0323,
          snippet: '…we decided the pricing for the…',
          highlights: [[16, 23]],
          field: 'default',
          relative: 'AQLN8L3OCAYA',
          matched: ['text', 'semantic'],
        },
      ],
    })
    expect(parseSearchResults({ query: 'x', mode: 'text', semantic: false, results: [] })?.semantic).toBe(false)
  })

  it('drops malformed hits and fields', () => {
    const parsed = parseSearchResults({
      semantic: 'yes',
      results: [
        null,
        { ...hit, room: '' },
        { ...hit, room: 'bad\u0000room' },
        { ...hit, snippet: 7 },
        { ...hit, position: { field: 'default', relative: '<script>' } },
        { ...hit, position: undefined, highlights: [[1, 'x'], [2, 3]], score: 'high', matched: ['text', 1] },
      ],
    })
    expect(parsed?.semantic).toBe(true)
    expect(parsed?.results).toHaveLength(2)
    expect(parsed?.results[0]).toMatchObject({ field: 'default', relative: null })
    expect(parsed?.results[1]).toMatchObject({ field: null, relative: null, highlights: [[2, 3]], score: 0, matched: ['text'] })
    expect(parseSearchResults(null)).toBeNull()
    expect(parseSearchResults({ results: 'none' })).toBeNull()
    expect(parseSearchResults([])).toBeNull()
  })

  it('decodes base64 and base64url, and refuses what is neither', () => {
    expect(Array.from(bytesFromBase64('AQID') ?? [])).toEqual([1, 2, 3])
    expect(Array.from(bytesFromBase64('+/8=') ?? [])).toEqual([251, 255])
    expect(Array.from(bytesFromBase64('-_8') ?? [])).toEqual([251, 255])
    expect(bytesFromBase64('a')).toBeNull()
    expect(bytesFromBase64('not base64!')).toBeNull()
  })
})

describe('search errors', () => {
  it('says what went wrong', () => {
    expect(searchErrorMessage(503, { code: 'unavailable', detail: 'search is disabled' })).toBe('Search is off on this hub')
    expect(searchErrorMessage(503, { code: 'overloaded', detail: 'try later' })).toBe('try later')
    expect(searchErrorMessage(401, { code: 'unauthenticated', detail: 'token expired' })).toBe('Not allowed')
    expect(searchErrorMessage(403, null)).toBe('Not allowed')
    expect(searchErrorMessage(400, { code: 'bad_request', detail: 'q is required' })).toBe('q is required')
    expect(searchErrorMessage(429, null)).toBe('Too many searches: try again in a moment')
    expect(searchErrorMessage(500, 'oops')).toBe('Search failed (HTTP 500)')
    expect(searchErrorMessage(400, { detail: 'x'.repeat(5000) })).toHaveLength(300)
  })
})

describe('searching', () => {
  function fake(response: Response | Error) {
    const calls: { url: string; init: RequestInit | undefined }[] = []
    const fetcher = (async (url: RequestInfo | URL, init?: RequestInit) => {
      calls.push({ url: String(url), init })
      if (response instanceof Error) throw response
      return response
    }) as typeof fetch
    return { calls, fetcher }
  }

  it('asks with the page’s token and reads the hits', async () => {
    const { calls, fetcher } = fake(new Response(JSON.stringify({ query: 'a b', mode: 'hybrid', semantic: false, results: [] })))
    const found = await searchRooms('a b&c', Promise.resolve('tok'), { fetcher })
    expect(found.semantic).toBe(false)
    expect(calls[0]?.url).toBe('/v1/search?q=a+b%26c&mode=hybrid&limit=10')
    expect((calls[0]?.init?.headers as Record<string, string>).authorization).toBe('Bearer tok')
  })

  it('is anonymous without a token, and throws the message to show', async () => {
    const off = fake(new Response(JSON.stringify({ code: 'unavailable', detail: 'off' }), { status: 503 }))
    const refused = await searchRooms('pricing', null, { fetcher: off.fetcher }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(SearchError)
    expect(refused).toMatchObject({ status: 503, message: 'Search is off on this hub' })
    expect((off.calls[0]?.init?.headers as Record<string, string>).authorization).toBeUndefined()
    const html = fake(new Response('<html>', { status: 502 }))
    await expect(searchRooms('pricing', null, { fetcher: html.fetcher })).rejects.toMatchObject({ message: 'Search failed (HTTP 502)' })
    const down = fake(new TypeError('network'))
    await expect(searchRooms('pricing', null, { fetcher: down.fetcher })).rejects.toMatchObject({ status: 0 })
    const odd = fake(new Response('{"hits":[]}'))
    await expect(searchRooms('pricing', null, { fetcher: odd.fetcher })).rejects.toBeInstanceOf(SearchError)
  })
})

describe('a hit’s position in the URL', () => {
  // Y.encodeRelativePosition bytes in base64 use +, / and =, all of which a URL mangles unless escaped.
  const at = 'AQL+8L3/CAYA+w=='

  it('goes to the hit’s room, keeping the token, and comes back unchanged', () => {
    const url = urlForHit('http://h/?room=old&x=1#token=abc.def-_g', 'team/notes', at)
    expect(url).toBe(`/?room=team%2Fnotes#token=abc.def-_g&at=${encodeURIComponent(at)}`)
    const href = `http://h${url}`
    expect(roomFromUrl(href)).toBe('team/notes')
    expect(tokenFromUrl(href)).toBe('abc.def-_g')
    expect(positionFromUrl(href)).toBe(at)
  })

  it('carries no position for a hit that cannot be placed, and replaces an old one', () => {
    expect(urlForHit('http://h/?room=a#token=t&at=old', 'b', null)).toBe('/?room=b#token=t')
    expect(urlForHit('http://h/?room=a#at=old', 'b', at)).toBe(`/?room=b#at=${encodeURIComponent(at)}`)
    expect(urlForHit('http://h/', 'b', null)).toBe('/?room=b')
    expect(positionFromUrl('http://h/?room=b#token=t')).toBeNull()
    expect(positionFromUrl(`http://h/?room=b#at=${'A'.repeat(5000)}`)).toBeNull()
  })

  it('is dropped once used, the token kept', () => {
    const href = `http://h${urlForHit('http://h/?room=a#token=t', 'b', at)}`
    expect(withoutPosition(href)).toBe('/?room=b#token=t')
    expect(withoutPosition(`http://h${urlForHit('http://h/?room=a', 'b', at)}`)).toBe('/?room=b')
    expect(withoutPosition('http://h/?room=b#token=t')).toBeNull()
  })
})
