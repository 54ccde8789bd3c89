// The room's live part: its Yjs document, the connection to the hub (a stock Hocuspocus
// provider), this browser's copy (y-indexeddb) and the chat helpers. A chunk of its own
// (chunks.ts), so the room's frame paints before Yjs has loaded; the handlers are attached as
// the provider is made, so no event is missed.
import { HocuspocusProvider } from '@hocuspocus/provider'
import { IndexeddbPersistence } from 'y-indexeddb'
import * as Y from 'yjs'

import { type ChatMessage, messages, send } from './chat'
import type { Identity } from './identity'
import { socketUrl } from './url'

/** An awareness state as the provider reports it. */
export interface AwarenessState {
  clientId: number
  [key: string]: unknown
}

/** What the room hears from its connection. */
export interface Handlers {
  status(status: string): void
  synced(synced: boolean): void
  /** Updates sent and not yet acknowledged by the hub. */
  unsynced(count: number): void
  authenticated(scope: string): void
  failed(reason: string): void
  peers(states: AwarenessState[]): void
  /** A stateless message: the assistant's events. */
  stateless(payload: string): void
  chat(messages: ChatMessage[]): void
}

export interface Live {
  doc: Y.Doc
  provider: HocuspocusProvider
  /** Posts to the room's chat. */
  send(author: string, text: string): void
  destroy(): void
}

/** `token`: none is anonymous; the socket opens at once and authenticates once it is there. */
export function connect(room: string, token: Promise<string | null>, identity: Identity, on: Handlers): Live {
  const doc = new Y.Doc()
  const provider = new HocuspocusProvider({
    url: socketUrl(window.location),
    name: room,
    document: doc,
    token: async () => (await token) ?? '',
  })
  provider.on('status', ({ status }: { status: string }) => on.status(status))
  provider.on('synced', ({ state }: { state: boolean }) => on.synced(state))
  provider.on('unsyncedChanges', ({ number }: { number: number }) => on.unsynced(number))
  provider.on('authenticated', ({ scope }: { scope: string }) => on.authenticated(scope))
  provider.on('authenticationFailed', ({ reason }: { reason: string }) => on.failed(reason))
  provider.on('awarenessChange', ({ states }: { states: AwarenessState[] }) => on.peers(states))
  provider.on('stateless', ({ payload }: { payload: string }) => on.stateless(payload))
  provider.setAwarenessField('user', identity)
  // Edits made while the hub is out of reach survive a reload; they sync once it is back.
  const local = new IndexeddbPersistence(`chorus:${room}`, doc)
  const refreshChat = () => on.chat(messages(doc))
  doc.getArray('chat').observeDeep(refreshChat)
  refreshChat()
  return {
    doc,
    provider,
    send: (author, text) => send(doc, author, text),
    destroy() {
      doc.getArray('chat').unobserveDeep(refreshChat)
      provider.destroy()
      void local.destroy()
    },
  }
}
