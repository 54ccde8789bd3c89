// Asking the hub's assistant over the socket (docs/AI.md "Asking"): `ai.ask` goes out with an
// id of ours, and the answers (`ai.run`, `ai.done`, `ai.error`) come back on the same
// connection, naming that id as `request` and the run's own id as `run`. Changes of a run
// (`ai.cancel`, `ai.revert`, `ai.accept`, `ai.reject`) are answered with an `ai.run` without
// `request` (the new status) or an `ai.error` without `request` (refused). A failed run sends
// `ai.error` with its `request`, then `ai.done`. Sans-IO: the session sends and feeds events.
import * as Y from 'yjs';
import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { askFrame, runChangeFrame } from './frames.js';
/** Base64 of `Y.encodeRelativePosition(position)`, as the hub reads positions. */
export function encodePosition(position) {
    if (typeof position === 'string')
        return position;
    let binary = '';
    for (const b of Y.encodeRelativePosition(position))
        binary += String.fromCharCode(b);
    return btoa(binary);
}
/** The `ai.ask` fields for `options`, with `id` as the request's id. */
export function askFields(id, options) {
    const fields = { id, prompt: options.prompt, target: options.target ?? 'chat' };
    if (options.apply !== undefined)
        fields.apply = options.apply;
    if (options.field !== undefined)
        fields.field = options.field;
    if (options.fieldType !== undefined)
        fields.field_type = options.fieldType;
    if (options.position !== undefined)
        fields.position = encodePosition(options.position);
    if (options.range !== undefined)
        fields.range = [encodePosition(options.range[0]), encodePosition(options.range[1])];
    if (options.model !== undefined)
        fields.model = options.model;
    if (options.replyTo !== undefined)
        fields.reply_to = options.replyTo;
    if (options.revertOnCancel)
        fields.revert_on_cancel = true;
    return fields;
}
/**
 * A request to the assistant and the run it started. Its events stream in as the hub sends
 * them; {@link AiRun.done} settles when the run ends.
 */
export class AiRun extends Emitter {
    request;
    channel;
    /** The run's id (`run_...`), once the hub named it. */
    id;
    /** `asking` until the hub answers, then the hub's latest status. */
    status = 'asking';
    /** The `ai.error` of a run that failed (the run then ends with `ai.done` `failed`). */
    error;
    /**
     * The run's `ai.done` (for any end: `done`, `cancelled`, `failed`, `interrupted`). Rejects
     * with a {@link ChorusError} when the request is refused (`kind` `hub`, `code` the
     * `ai.error` code), or when the connection closes first (`disconnected`: the run goes on in
     * the hub, and its text still reaches the document or the chat).
     */
    done;
    settle;
    finished = false;
    changes = [];
    waitingForId = [];
    /** @internal Created by {@link RoomSession.ask}. */
    constructor(
    /** The request's id, sent as the `ai.ask`'s `id`. */
    request, channel) {
        super();
        this.request = request;
        this.channel = channel;
        this.done = new Promise((resolve, reject) => {
            this.settle = { resolve, reject };
        });
        // Nobody has to await `done`: a refusal is also an event, not an unhandled rejection.
        this.done.catch(() => { });
    }
    /** Whether the run has ended (or its request was refused, or its connection closed). */
    get ended() {
        return this.finished;
    }
    /** Stops the run; resolves with the hub's answer (an `ai.run` with the new status). */
    cancel() {
        return this.change('ai.cancel');
    }
    /** Removes the run's content from the document, in one step, at any later time. */
    revert() {
        return this.change('ai.revert');
    }
    /** Accepts a suggestion: its mark goes, its content stays. */
    accept() {
        return this.change('ai.accept');
    }
    /** Rejects a suggestion: its content goes. */
    reject() {
        return this.change('ai.reject');
    }
    async change(type) {
        // A cancel right after asking: the hub has not named the run yet.
        if (this.id === undefined) {
            if (this.finished)
                throw new ChorusError('hub', 'not_found', 'the request did not start a run', false);
            await new Promise((resolve) => this.waitingForId.push(resolve));
        }
        const run = this.id;
        if (run === undefined)
            throw new ChorusError('hub', 'not_found', 'the request did not start a run', false);
        return new Promise((resolve, reject) => {
            if (!this.channel.sendText(runChangeFrame(type, run))) {
                reject(new ChorusError('disconnected', 1006, 'not connected', false));
                return;
            }
            this.changes.push({ resolve, reject });
        });
    }
    /** @internal An event for this run (the session routes them). */
    handle(event) {
        if (event.type !== 'ai.error' && this.id === undefined) {
            this.id = event.run;
            for (const wake of this.waitingForId.splice(0))
                wake();
        }
        switch (event.type) {
            case 'ai.run':
                if (event.request === undefined && this.changes.length > 0)
                    this.changes.shift()?.resolve(event);
                this.setStatus(event.status);
                break;
            case 'ai.error':
                if (event.request === undefined && this.changes.length > 0) {
                    this.changes.shift()?.reject(new ChorusError('hub', event.code, event.message, false));
                }
                else if (event.run === undefined && this.id === undefined) {
                    // The request itself was refused: no run, no `ai.done` to wait for.
                    this.finish();
                    this.settle.reject(new ChorusError('hub', event.code, event.message, false));
                    for (const wake of this.waitingForId.splice(0))
                        wake();
                }
                else {
                    if (this.id === undefined && event.run !== undefined)
                        this.id = event.run;
                    this.error = event;
                }
                break;
            case 'ai.done':
                this.setStatus(event.status);
                this.finish();
                this.settle.resolve(event);
                break;
        }
        this.emit('event', event);
    }
    /** @internal The connection closed: no more events will come on it. */
    disconnected() {
        for (const c of this.changes.splice(0))
            c.reject(new ChorusError('disconnected', 1006, 'the connection closed', false));
        if (!this.finished) {
            this.finish();
            this.settle.reject(new ChorusError('disconnected', 1006, 'the connection closed before the run ended', false));
            for (const wake of this.waitingForId.splice(0))
                wake();
        }
    }
    finish() {
        this.finished = true;
    }
    setStatus(status) {
        if (status === this.status)
            return;
        this.status = status;
        this.emit('status', status);
    }
}
/** Routes the assistant's events to the runs asked in one session (over any of its connections). */
export class AiRuns {
    channel;
    byRequest = new Map();
    byRun = new Map();
    counter = 0;
    constructor(channel) {
        this.channel = channel;
    }
    /** A new run handle and its `ai.ask` frame (the caller sends it). */
    ask(options) {
        this.counter += 1;
        const request = `q_${Date.now().toString(36)}_${this.counter}_${Math.random().toString(36).slice(2, 8)}`;
        const run = new AiRun(request, this.channel);
        this.byRequest.set(request, run);
        return { run, frame: askFrame(askFields(request, options)) };
    }
    /** The handle an event belongs to, if this connection asked for the run. */
    route(event) {
        const request = event.type === 'ai.done' ? undefined : event.request;
        const run = (request !== undefined ? this.byRequest.get(request) : undefined) ??
            (event.run !== undefined ? this.byRun.get(event.run) : undefined);
        if (!run)
            return undefined;
        run.handle(event);
        if (run.id !== undefined)
            this.byRun.set(run.id, run);
        // Kept after the end: a revert, accept or reject may follow at any later time.
        if (run.ended && run.id === undefined)
            this.byRequest.delete(run.request);
        return run;
    }
    /** The connection closed: every run still waiting for events hears it. */
    disconnected() {
        for (const run of new Set([...this.byRequest.values(), ...this.byRun.values()]))
            run.disconnected();
    }
}
