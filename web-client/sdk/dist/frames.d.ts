/** Sent once after the upgrade: who the hub thinks this connection is. */
export interface WelcomeFrame {
    /** The frame's type. */
    type: 'welcome';
    /** The room, as the hub decoded it from the URL. */
    room: string;
    /** The tenant the room belongs to. */
    tenant: string;
    /** `write`, or `read` (updates are not accepted). */
    role: 'read' | 'write';
    /** The token's `sub`, if it has one. */
    user?: string;
}
/** This connection's first `updates` update messages are durable. */
export interface SavedFrame {
    /** The frame's type. */
    type: 'saved';
    /** How many of this connection's update messages are stored (cumulative). */
    updates: number;
}
/** Something this connection sent was refused; the connection goes on. */
export interface ErrorFrame {
    /** The frame's type. */
    type: 'error';
    /** `bad_request`, `forbidden`, `too_large`, `rate_limited`, `internal`, ... */
    code: string;
    /** A message for people. */
    message: string;
}
/** The answer to a `ping`. */
export interface PongFrame {
    /** The frame's type. */
    type: 'pong';
    /** The ping's id, echoed. */
    id?: number;
}
/** The answer to `auth`: the session now runs until `expires`. */
export interface AuthenticatedFrame {
    /** The frame's type. */
    type: 'authenticated';
    /** The new token's expiry, in seconds since the epoch. */
    expires: number;
}
/** A run's status changed: `queued`, `running`, `writing`; or the answer to a change of a run. */
export interface AiRunEvent {
    /** The frame's type. */
    type: 'ai.run';
    /** The run's id (`run_...`). */
    run: string;
    /** Its status: `queued`, `running`, `writing`, or after a change `cancelled`, `reverted`, `accepted`, `rejected`. */
    status: string;
    /** The `id` of the `ai.ask` that started it, when this connection asked. */
    request?: string;
    /** While `queued`: runs ahead of it at the same position. */
    queued_behind?: number;
}
/** A run ended. */
export interface AiDoneEvent {
    /** The frame's type. */
    type: 'ai.done';
    /** The run's id. */
    run: string;
    /** How it ended: `done`, `cancelled`, `failed` or `interrupted`. */
    status: string;
    /** Prompt tokens used. */
    prompt_tokens: number;
    /** Completion tokens used. */
    completion_tokens: number;
}
/** A request was refused, or a run failed (a failed run then ends with `ai.done`). */
export interface AiErrorEvent {
    /** The frame's type. */
    type: 'ai.error';
    /** The run, if one was started. */
    run?: string;
    /** The `id` of the request, if it had one. */
    request?: string;
    /** `ai_disabled`, `forbidden`, `budget_exhausted`, `rate_limited`, `provider_error`, `timeout`, `bad_request`, `not_found`, ... */
    code: string;
    /** A message for people. */
    message: string;
}
/** The assistant's events (docs/AI.md). */
export type AiEvent = AiRunEvent | AiDoneEvent | AiErrorEvent;
/** Every frame the hub sends to an opted-in connection. */
export type ServerFrame = WelcomeFrame | SavedFrame | ErrorFrame | PongFrame | AuthenticatedFrame | AiEvent;
/** An assistant event from a JSON value, or `null` if it is not a well-formed one. */
export declare function aiEventOf(value: unknown): AiEvent | null;
/** A frame from a text message of the hub, or `null` if it is not one this SDK understands. */
export declare function parseServerFrame(text: string): ServerFrame | null;
/** What to ask the assistant; see {@link RoomSession.ask}. */
export interface AskFields {
    /** The request's id, echoed as `request` in the answers. */
    id: string;
    /** What the asker wants. */
    prompt: string;
    /** `chat` (default) or `document`. */
    target?: 'chat' | 'document';
    /** The document root (default `default`, what Tiptap's Collaboration extension uses). */
    field?: string;
    /** `xml` (a Y.XmlFragment, the default) or `text` (a Y.Text). */
    field_type?: 'xml' | 'text';
    /** Where to write: base64 of `Y.encodeRelativePosition`. */
    position?: string;
    /** Replace the text between two positions (base64 relative positions of one text). */
    range?: [string, string];
    /** `direct` (default) or `suggest`. */
    apply?: 'direct' | 'suggest';
    /** A model the tenant allows. */
    model?: string;
    /** The chat message this answers. */
    reply_to?: string;
    /** A cancel removes the partial answer instead of keeping it. */
    revert_on_cancel?: boolean;
}
/** The `ai.ask` frame (fields left undefined are left out). */
export declare function askFrame(fields: AskFields): string;
/** The changes a member with write access can make to a run. */
export type RunChange = 'ai.cancel' | 'ai.revert' | 'ai.accept' | 'ai.reject';
/** `ai.cancel`, `ai.revert`, `ai.accept` or `ai.reject` of `run`. */
export declare function runChangeFrame(type: RunChange, run: string): string;
/** `auth`: renew the session's token before it expires. */
export declare function authFrame(token: string): string;
/** `ping`, answered with a `pong` carrying the same id. */
export declare function pingFrame(id: number): string;
