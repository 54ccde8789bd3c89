/**
 * The Chorus client SDK, for browsers and Node: a {@link ChorusClient} joins rooms; each
 * {@link RoomSession} is a Yjs document synced by a stock y-websocket provider, with presence,
 * the room's chat, the AI assistant, the hub's "saved" acknowledgements, and reconnection by
 * close code.
 *
 * @packageDocumentation
 */
export { type BackoffOptions, ChorusClient, type ChorusClientOptions } from './client.js'
export {
  RoomSession,
  type CloseInfo,
  type JoinOptions,
  type Peer,
  type PeerUser,
  type RoomSessionEvents,
  type SessionStatus,
} from './session.js'
export { AiRun, type AiRunEvents, type AskOptions, type Position, encodePosition } from './ai.js'
export { type ChatMessage } from './chat.js'
export { ChorusError, type ErrorKind } from './errors.js'
export { Emitter, type EventMap } from './emitter.js'
export type {
  AiDoneEvent,
  AiErrorEvent,
  AiEvent,
  AiRunEvent,
  WelcomeFrame,
} from './frames.js'
export {
  Backoff,
  type CloseAction,
  type CloseError,
  closeAction,
  nextHome,
  type RefreshTokenAction,
  type RetryAction,
  type StopAction,
} from './reconnect.js'
export type { WebSocketConstructor, WebSocketLike } from './socket.js'
