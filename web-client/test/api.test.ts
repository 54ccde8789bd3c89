import { describe, expect, it } from 'vitest'

import { Api, ApiError } from '../src/api'

function fake(responses: Response[]) {
  const calls: { url: string; init: RequestInit | undefined }[] = []
  const fetcher = (async (url: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(url), init })
    const next = responses.shift()
    if (!next) throw new Error('no more responses')
    return next
  }) as typeof fetch
  return { calls, fetcher }
}

describe('api', () => {
  it('sends the token and reads versions, skipping malformed entries', async () => {
    const { calls, fetcher } = fake([
      new Response(JSON.stringify({ versions: [{ id: 1, name: 'v1', created: 5, bytes: 9 }, { id: 'x' }, null] })),
    ])
    const api = new Api('team notes', 'tok', fetcher)
    expect(await api.versions()).toEqual([{ id: 1, name: 'v1', created: 5, bytes: 9 }])
    expect(calls[0]?.url).toBe('/v1/rooms/team%20notes/versions')
    expect((calls[0]?.init?.headers as Record<string, string>).authorization).toBe('Bearer tok')
  })

  it('waits for a token still on its way (a development token)', async () => {
    const { calls, fetcher } = fake([new Response(JSON.stringify({ versions: [] }))])
    let give: (t: string | null) => void = () => {}
    const api = new Api('r', new Promise<string | null>((resolve) => (give = resolve)), fetcher)
    const listed = api.versions()
    expect(calls).toHaveLength(0)
    give('dev.jwt')
    expect(await listed).toEqual([])
    expect((calls[0]?.init?.headers as Record<string, string>).authorization).toBe('Bearer dev.jwt')
  })

  it('is anonymous without a token, and reports the problem detail of a refusal', async () => {
    const { calls, fetcher } = fake([
      new Response(JSON.stringify({ detail: 'this token may not write' }), { status: 403 }),
      new Response('not json', { status: 502, statusText: 'Bad Gateway' }),
    ])
    const api = new Api('r', null, fetcher)
    const refused = await api.saveVersion('v').catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(ApiError)
    expect(refused).toMatchObject({ status: 403, message: 'this token may not write' })
    expect((calls[0]?.init?.headers as Record<string, string>).authorization).toBeUndefined()
    expect(calls[0]?.init?.body).toBe('{"name":"v"}')
    await expect(api.restore(3)).rejects.toMatchObject({ status: 502, message: 'Bad Gateway' })
    expect(calls[1]?.url).toBe('/v1/rooms/r/versions/3/restore')
  })
})

describe('development tokens', () => {
  it('come from a local hub, and their absence is no error', async () => {
    const { devToken } = await import('../src/api')
    const ok = fake([new Response(JSON.stringify({ token: 'dev.jwt', room: 'r', role: 'write', expires: 1 }))])
    expect(await devToken('team notes', ok.fetcher)).toBe('dev.jwt')
    expect(ok.calls[0]?.url).toBe('/v1/dev-token?room=team%20notes')
    const none = fake([new Response('{"detail":"off"}', { status: 404 }), new Response('{}')])
    expect(await devToken('r', none.fetcher)).toBeNull()
    expect(await devToken('r', none.fetcher)).toBeNull()
    const broken = (async () => {
      throw new TypeError('network down')
    }) as typeof fetch
    expect(await devToken('r', broken)).toBeNull()
  })
})
