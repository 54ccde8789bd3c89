// The page: a room picker, or the room the URL names.
import { useState } from 'react'

import { devToken } from './api'
import { loadIdentity } from './identity'
import { Room } from './Room'
import { roomFromUrl, tokenFromUrl, urlForRoom, validRoom } from './url'

function Picker() {
  const [name, setName] = useState('')
  const go = (room: string) => {
    window.location.assign(urlForRoom(window.location.href, room))
  }
  return (
    <main className="picker">
      <h1>Chorus</h1>
      <p>Write together, in real time, with an assistant. Pick a room; share its link to invite others.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault()
          if (validRoom(name.trim())) go(name.trim())
        }}
      >
        <label htmlFor="room">Room</label>
        <input id="room" value={name} onChange={(e) => setName(e.target.value)} placeholder="team-notes" maxLength={128} autoFocus />
        <button type="submit" disabled={!validRoom(name.trim())}>Open</button>
      </form>
    </main>
  )
}

export function App() {
  const room = roomFromUrl(window.location.href)
  const [identity] = useState(() => loadIdentity(window.localStorage))
  // The embedding app's token, or else a local hub's development token (null: none). A
  // promise: the room paints, loads its editor and opens its socket meanwhile.
  const [token] = useState<Promise<string | null>>(() => {
    const given = tokenFromUrl(window.location.href)
    return given || !room ? Promise.resolve(given) : devToken(room)
  })
  if (!room) return <Picker />
  return <Room key={room} room={room} token={token} identity={identity} />
}
