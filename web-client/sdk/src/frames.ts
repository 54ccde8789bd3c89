// The hub's extension frames (docs/PROTOCOL.md "Extension frames", docs/AI.md "Asking"): JSON
// text frames on a connection that opted in with `ext=1`. Everything from the hub is parsed
// as untrusted input: a frame that is not an object of a known type, version 1, with fields
// of the documented types, is dropped (`null`), never half-used. Fields keep their wire names,
// so the tables in the docs apply as they are.

/** Sent once after the upgrade: who the hub thinks this connection is. */
export interface WelcomeFrame {
  /** The frame's type. */
  type: 'welcome'
  /** The room, as the hub decoded it from the URL. */
  room: string
  /** The tenant the room belongs to. */
  tenant: string
  /** `write`, or `read` (updates are not accepted). */
  role: 'read' | 'write'
  /** The token's `sub`, if it has one. */
  user?: string
}

/** This connection's first `updates` update messages are durable. */
export interface SavedFrame {
  /** The frame's type. */
  type: 'saved'
  /** How many of this connection's update messages are stored (cumulative). */
  updates: number
}

/** Something this connection sent was refused; the connection goes on. */
export interface ErrorFrame {
  /** The frame's type. */
  type: 'error'
  /** `bad_request`, `forbidden`, `too_large`, `rate_limited`, `internal`, ... */
  code: string
  /** A message for people. */
  message: string
}

/** The answer to a `ping`. */
export interface PongFrame {
  /** The frame's type. */
  type: 'pong'
  /** The ping's id, echoed. */
  id?: number
}

/** The answer to `auth`: the session now runs until `expires`. */
export interface AuthenticatedFrame {
  /** The frame's type. */
  type: 'authenticated'
  /** The new token's expiry, in seconds since the epoch. */
  expires: number
}

/** A run's status changed: `queued`, `running`, `writing`; or the answer to a change of a run. */
export interface AiRunEvent {
  /** The frame's type. */
  type: 'ai.run'
  /** The run's id (`run_...`). */
  run: string
  /** Its status: `queued`, `running`, `writing`, or after a change `cancelled`, `reverted`, `accepted`, `rejected`. */
  status: string
  /** The `id` of the `ai.ask` that started it, when this connection asked. */
  request?: string
  /** While `queued`: runs ahead of it at the same position. */
  queued_behind?: number
}

/** A run ended. */
export interface AiDoneEvent {
  /** The frame's type. */
  type: 'ai.done'
  /** The run's id. */
  run: string
  /** How it ended: `done`, `cancelled`, `failed` or `interrupted`. */
  status: string
  /** Prompt tokens used. */
  prompt_tokens: number
  /** Completion tokens used. */
  completion_tokens: number
}

/** A request was refused, or a run failed (a failed run then ends with `ai.done`). */
export interface AiErrorEvent {
  /** The frame's type. */
  type: 'ai.error'
  /** The run, if one was started. */
  run?: string
  /** The `id` of the request, if it had one. */
  request?: string
  /** `ai_disabled`, `forbidden`, `budget_exhausted`, `rate_limited`, `provider_error`, `timeout`, `bad_request`, `not_found`, ... */
  code: string
  /** A message for people. */
  message: string
}

/** The assistant's events (docs/AI.md). */
export type AiEvent = AiRunEvent | AiDoneEvent | AiErrorEvent

/** Every frame the hub sends to an opted-in connection. */
export type ServerFrame = WelcomeFrame | SavedFrame | ErrorFrame | PongFrame | AuthenticatedFrame | AiEvent

type Json = Record<string, unknown>

const isString = (v: unknown): v is string => typeof v === 'string'
/** A count: a non-negative integer that a double holds exactly. */
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
const optional = <T>(v: unknown, is: (v: unknown) => v is T): boolean => v === undefined || v === null || is(v)

/** Copies `key` into `out` when it is present and of the right type. */
function copy<T>(from: Json, out: Json, key: string, is: (v: unknown) => v is T): void {
  const v = from[key]
  if (v !== undefined && v !== null && is(v)) out[key] = v
}

/** An assistant event from a JSON value, or `null` if it is not a well-formed one. */
export function aiEventOf(value: unknown): AiEvent | null {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return null
  const v = value as Json
  switch (v.type) {
    case 'ai.run': {
      if (!isString(v.run) || !isString(v.status)) return null
      if (!optional(v.request, isString) || !optional(v.queued_behind, isCount)) return null
      const out: Json = { type: v.type, run: v.run, status: v.status }
      copy(v, out, 'request', isString)
      copy(v, out, 'queued_behind', isCount)
      return out as unknown as AiRunEvent
    }
    case 'ai.done':
      if (!isString(v.run) || !isString(v.status)) return null
      return {
        type: v.type,
        run: v.run,
        status: v.status,
        prompt_tokens: isCount(v.prompt_tokens) ? v.prompt_tokens : 0,
        completion_tokens: isCount(v.completion_tokens) ? v.completion_tokens : 0,
      }
    case 'ai.error': {
      if (!isString(v.code) || !optional(v.run, isString) || !optional(v.request, isString)) return null
      const out: Json = { type: v.type, code: v.code, message: isString(v.message) ? v.message : '' }
      copy(v, out, 'run', isString)
      copy(v, out, 'request', isString)
      return out as unknown as AiErrorEvent
    }
    default:
      return null
  }
}

/** A frame from a text message of the hub, or `null` if it is not one this SDK understands. */
export function parseServerFrame(text: string): ServerFrame | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return null
  const v = value as Json
  if (v.v !== 1) return null
  switch (v.type) {
    case 'welcome': {
      if (!isString(v.room) || !isString(v.tenant) || (v.role !== 'read' && v.role !== 'write')) return null
      if (!optional(v.user, isString)) return null
      const out: Json = { type: v.type, room: v.room, tenant: v.tenant, role: v.role }
      copy(v, out, 'user', isString)
      return out as unknown as WelcomeFrame
    }
    case 'saved':
      return isCount(v.updates) ? { type: v.type, updates: v.updates } : null
    case 'error':
      return isString(v.code) ? { type: v.type, code: v.code, message: isString(v.message) ? v.message : '' } : null
    case 'pong':
      return isCount(v.id) ? { type: v.type, id: v.id } : { type: v.type }
    case 'authenticated':
      return isCount(v.expires) ? { type: v.type, expires: v.expires } : null
    default:
      return aiEventOf(v)
  }
}

/** What to ask the assistant; see {@link RoomSession.ask}. */
export interface AskFields {
  /** The request's id, echoed as `request` in the answers. */
  id: string
  /** What the asker wants. */
  prompt: string
  /** `chat` (default) or `document`. */
  target?: 'chat' | 'document'
  /** The document root (default `default`, what Tiptap's Collaboration extension uses). */
  field?: string
  /** `xml` (a Y.XmlFragment, the default) or `text` (a Y.Text). */
  field_type?: 'xml' | 'text'
  /** Where to write: base64 of `Y.encodeRelativePosition`. */
  position?: string
  /** Replace the text between two positions (base64 relative positions of one text). */
  range?: [string, string]
  /** `direct` (default) or `suggest`. */
  apply?: 'direct' | 'suggest'
  /** A model the tenant allows. */
  model?: string
  /** The chat message this answers. */
  reply_to?: string
  /** A cancel removes the partial answer instead of keeping it. */
  revert_on_cancel?: boolean
}

/** The `ai.ask` frame (fields left undefined are left out). */
export function askFrame(fields: AskFields): string {
  const out: Json = { v: 1, type: 'ai.ask' }
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v
  return JSON.stringify(out)
}

/** The changes a member with write access can make to a run. */
export type RunChange = 'ai.cancel' | 'ai.revert' | 'ai.accept' | 'ai.reject'

/** `ai.cancel`, `ai.revert`, `ai.accept` or `ai.reject` of `run`. */
export function runChangeFrame(type: RunChange, run: string): string {
  return JSON.stringify({ v: 1, type, run })
}

/** `auth`: renew the session's token before it expires. */
export function authFrame(token: string): string {
  return JSON.stringify({ v: 1, type: 'auth', token })
}

/** `ping`, answered with a `pong` carrying the same id. */
export function pingFrame(id: number): string {
  return JSON.stringify({ v: 1, type: 'ping', id })
}
