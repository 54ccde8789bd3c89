import * as Y from 'yjs';
import { Emitter } from './emitter.js';
import type { AiDoneEvent, AiErrorEvent, AiEvent, AiRunEvent, AskFields } from './frames.js';
/** A place in the document: a Yjs relative position, or one already encoded (base64). */
export type Position = Y.RelativePosition | string;
/** What to ask; see docs/AI.md for each field's meaning on the hub. */
export interface AskOptions {
    /** What the asker wants. */
    prompt: string;
    /** Where the answer goes: a new chat message (default) or the shared document. */
    target?: 'chat' | 'document';
    /** `direct` (default), or `suggest`: marked as the run's suggestion until accepted or rejected. */
    apply?: 'direct' | 'suggest';
    /** The document root (default `default`, what Tiptap's Collaboration extension uses). */
    field?: string;
    /** The root's type: `xml` (Y.XmlFragment, default) or `text` (Y.Text). */
    fieldType?: 'xml' | 'text';
    /** Where to write (absent: the end of the document). */
    position?: Position;
    /** Replace the text between two positions of one text. */
    range?: [Position, Position];
    /** A model the tenant allows (absent: the tenant's default). */
    model?: string;
    /** The chat message this answers. */
    replyTo?: string;
    /** A cancel removes the partial answer instead of keeping it. */
    revertOnCancel?: boolean;
}
/** Base64 of `Y.encodeRelativePosition(position)`, as the hub reads positions. */
export declare function encodePosition(position: Position): string;
/** The `ai.ask` fields for `options`, with `id` as the request's id. */
export declare function askFields(id: string, options: AskOptions): AskFields;
/** Events of one run. */
export type AiRunEvents = {
    /** Every event of the run, in order: `ai.run` status changes, `ai.error`, `ai.done`. */
    event: (event: AiEvent) => void;
    /** The run's status changed (`queued`, `running`, `writing`, then how it ended). */
    status: (status: string) => void;
};
/** How a run reaches the socket: the session implements it. */
export interface RunChannel {
    /** Sends an extension frame; `false` if the connection is not open. */
    sendText(text: string): boolean;
}
/**
 * A request to the assistant and the run it started. Its events stream in as the hub sends
 * them; {@link AiRun.done} settles when the run ends.
 */
export declare class AiRun extends Emitter<AiRunEvents> {
    /** The request's id, sent as the `ai.ask`'s `id`. */
    readonly request: string;
    private readonly channel;
    /** The run's id (`run_...`), once the hub named it. */
    id: string | undefined;
    /** `asking` until the hub answers, then the hub's latest status. */
    status: string;
    /** The `ai.error` of a run that failed (the run then ends with `ai.done` `failed`). */
    error: AiErrorEvent | undefined;
    /**
     * The run's `ai.done` (for any end: `done`, `cancelled`, `failed`, `interrupted`). Rejects
     * with a {@link ChorusError} when the request is refused (`kind` `hub`, `code` the
     * `ai.error` code), or when the connection closes first (`disconnected`: the run goes on in
     * the hub, and its text still reaches the document or the chat).
     */
    readonly done: Promise<AiDoneEvent>;
    private settle;
    private finished;
    private readonly changes;
    private readonly waitingForId;
    /** @internal Created by {@link RoomSession.ask}. */
    constructor(
    /** The request's id, sent as the `ai.ask`'s `id`. */
    request: string, channel: RunChannel);
    /** Whether the run has ended (or its request was refused, or its connection closed). */
    get ended(): boolean;
    /** Stops the run; resolves with the hub's answer (an `ai.run` with the new status). */
    cancel(): Promise<AiRunEvent>;
    /** Removes the run's content from the document, in one step, at any later time. */
    revert(): Promise<AiRunEvent>;
    /** Accepts a suggestion: its mark goes, its content stays. */
    accept(): Promise<AiRunEvent>;
    /** Rejects a suggestion: its content goes. */
    reject(): Promise<AiRunEvent>;
    private change;
    /** @internal An event for this run (the session routes them). */
    handle(event: AiEvent): void;
    /** @internal The connection closed: no more events will come on it. */
    disconnected(): void;
    private finish;
    private setStatus;
}
/** Routes the assistant's events to the runs asked in one session (over any of its connections). */
export declare class AiRuns {
    private readonly channel;
    private readonly byRequest;
    private readonly byRun;
    private counter;
    constructor(channel: RunChannel);
    /** A new run handle and its `ai.ask` frame (the caller sends it). */
    ask(options: AskOptions): {
        run: AiRun;
        frame: string;
    };
    /** The handle an event belongs to, if this connection asked for the run. */
    route(event: AiEvent): AiRun | undefined;
    /** The connection closed: every run still waiting for events hears it. */
    disconnected(): void;
}
