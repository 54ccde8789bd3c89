import * as Y from 'yjs';
/** One chat message, read from the document. */
export interface ChatMessage {
    /** The message's id. */
    id: string;
    /** The user (`sub`) who wrote it, or `assistant`. */
    author: string;
    /** `user` or `assistant`. */
    role: 'user' | 'assistant';
    /** Its text so far (an assistant's answer grows while `status` is `streaming`). */
    text: string;
    /** `done`, or for an answer `streaming`, `cancelled`, `interrupted`, `failed`. */
    status: string;
    /** The run that wrote it (assistant messages). */
    run?: string;
    /** The model that wrote it (assistant messages). */
    model?: string;
    /** Who asked for it (assistant messages). */
    asked_by?: string;
    /** The message it answers. */
    reply_to?: string;
    /** Milliseconds since the epoch. */
    time: number;
}
/** The chat's root type in `doc`. */
export declare function chatOf(doc: Y.Doc): Y.Array<Y.Map<unknown>>;
/** The last `limit` messages, oldest first (malformed entries are skipped). */
export declare function messages(doc: Y.Doc, limit?: number): ChatMessage[];
/** Appends a person's message and returns its id. */
export declare function send(doc: Y.Doc, author: string, text: string, now?: number, replyTo?: string): string;
