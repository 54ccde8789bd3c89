// What the page reads from its URL: the room (so a link opens the same room) and,
// optionally, a token handed over by an embedding app in the fragment (never sent to a
// server in a request line or a Referer).

/** Room names the hub accepts: 1-128 characters, no control characters. */
export function validRoom(name: string): boolean {
  return name.length > 0 && name.length <= 128 && !/[\u0000-\u001f\u007f]/.test(name)
}

/** The room named by `?room=`, if valid. */
export function roomFromUrl(href: string): string | null {
  const url = new URL(href)
  const room = url.searchParams.get('room')?.trim() ?? ''
  return validRoom(room) ? room : null
}

/** The page's URL for `room`. */
export function urlForRoom(href: string, room: string): string {
  const url = new URL(href)
  url.search = ''
  url.searchParams.set('room', room)
  return url.pathname + url.search + url.hash
}

/**
 * The page's URL for a search hit: `room`, with `#at=<relative position, base64>` beside the
 * fragment's other parameters (the token stays) when the hit can be placed. The fragment,
 * like the token's, never reaches a server; the room reads it once its editor has synced.
 */
export function urlForHit(href: string, room: string, at: string | null): string {
  const url = new URL(href)
  url.search = ''
  url.searchParams.set('room', room)
  const hash = new URLSearchParams(url.hash.replace(/^#/, ''))
  hash.delete('at')
  if (at) hash.set('at', at)
  url.hash = hash.toString()
  return url.pathname + url.search + url.hash
}

/** The position a search hit left in `#at=...`, if any. */
export function positionFromUrl(href: string): string | null {
  const at = new URLSearchParams(new URL(href).hash.replace(/^#/, '')).get('at')
  return at && at.length <= 4096 ? at : null
}

/** `href` without `#at=...` (once used, a reload or a copied link opens the room as usual), or null if it has none. */
export function withoutPosition(href: string): string | null {
  const url = new URL(href)
  const hash = new URLSearchParams(url.hash.replace(/^#/, ''))
  if (!hash.has('at')) return null
  hash.delete('at')
  url.hash = hash.toString()
  return url.pathname + url.search + url.hash
}

/** A token from `#token=...`, if any. */
export function tokenFromUrl(href: string): string | null {
  const hash = new URL(href).hash.replace(/^#/, '')
  const token = new URLSearchParams(hash).get('token')
  return token && token.length <= 8192 ? token : null
}

/** The hub's Hocuspocus endpoint, on the host that served the page. */
export function socketUrl(loc: { protocol: string; host: string }): string {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/hocuspocus`
}
