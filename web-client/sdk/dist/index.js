/**
 * The Chorus client SDK, for browsers and Node: a {@link ChorusClient} joins rooms; each
 * {@link RoomSession} is a Yjs document synced by a stock y-websocket provider, with presence,
 * the room's chat, the AI assistant, the hub's "saved" acknowledgements, and reconnection by
 * close code.
 *
 * @packageDocumentation
 */
export { ChorusClient } from './client.js';
export { RoomSession, } from './session.js';
export { AiRun, encodePosition } from './ai.js';
export {} from './chat.js';
export { ChorusError } from './errors.js';
export { Emitter } from './emitter.js';
export { Backoff, closeAction, nextHome, } from './reconnect.js';
