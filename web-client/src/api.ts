// The hub's REST API for the page: the room's versions. Calls carry the page's token (a
// client JWT, which the room-scoped endpoints accept within its rooms and role); without one,
// they are anonymous, which a hub allowing anonymous access on loopback accepts.

export interface Version {
  id: number
  name: string
  created: number
  bytes: number
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export class Api {
  constructor(
    private readonly room: string,
    /** The page's token, or the promise of one (a development token on its way). */
    private readonly token: string | null | Promise<string | null>,
    private readonly fetcher: typeof fetch = (...a) => fetch(...a),
  ) {}

  private async call(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {}
    const token = await this.token
    if (token) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await this.fetcher(`/v1/rooms/${encodeURIComponent(this.room)}${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })
    if (!res.ok) {
      let detail = res.statusText
      try {
        const problem: unknown = await res.json()
        if (problem && typeof problem === 'object' && 'detail' in problem && typeof problem.detail === 'string') {
          detail = problem.detail
        }
      } catch {
        // Not JSON: the status text says enough.
      }
      throw new ApiError(res.status, detail)
    }
    return res
  }

  async versions(): Promise<Version[]> {
    const body: unknown = await (await this.call('GET', '/versions')).json()
    const list = body && typeof body === 'object' && 'versions' in body && Array.isArray(body.versions) ? body.versions : []
    return list.filter(
      (v: unknown): v is Version =>
        !!v && typeof v === 'object' && 'id' in v && typeof v.id === 'number' && 'name' in v && typeof v.name === 'string',
    )
  }

  async saveVersion(name: string): Promise<void> {
    await this.call('POST', '/versions', { name })
  }

  /** The version's content as a Yjs update. */
  async versionUpdate(id: number): Promise<Uint8Array> {
    const res = await this.call('GET', `/versions/${id}?format=update`)
    return new Uint8Array(await res.arrayBuffer())
  }

  async restore(id: number): Promise<void> {
    await this.call('POST', `/versions/${id}/restore`)
  }
}

/**
 * A development token for `room` from a local hub (`GET /v1/dev-token`), or null where the hub
 * hands out none (anonymous access off, or this page is not local): the page then goes on
 * without a token.
 */
export async function devToken(room: string, fetcher: typeof fetch = (...a) => fetch(...a)): Promise<string | null> {
  try {
    const res = await fetcher(`/v1/dev-token?room=${encodeURIComponent(room)}`)
    if (!res.ok) return null
    const body: unknown = await res.json()
    return body && typeof body === 'object' && 'token' in body && typeof body.token === 'string' ? body.token : null
  } catch {
    return null
  }
}
