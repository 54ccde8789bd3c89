/** A close that stops the session, with the hub's reason. */
export interface CloseError {
    /** The close code: 4403, 4404, 4413, 4422, or another of 4400-4499. */
    code: number;
    /** `forbidden` (4403), `deleted` (4404), `too_large` (4413), `too_deep` (4422), `refused` (the others). */
    kind: 'forbidden' | 'deleted' | 'too_large' | 'too_deep' | 'refused';
    /** The hub's reason. */
    reason: string;
}
/** Get a fresh token, then reconnect (4401). */
export interface RefreshTokenAction {
    /** The action's tag. */
    kind: 'refresh-token';
}
/** Reconnect after a delay (4429, 1013, 4503, 1011, 1006, 1012 and unknown codes). */
export interface RetryAction {
    /** The action's tag. */
    kind: 'retry';
    /** How long to wait, in milliseconds. */
    delayMs: number;
    /** Where to reconnect instead (the next home a draining node named, 1012). */
    url?: string;
}
/** Do not reconnect (1000, and refusals a retry cannot fix). */
export interface StopAction {
    /** The action's tag. */
    kind: 'stop';
    /** Why, unless the close was a normal one (1000). */
    error?: CloseError;
}
/** What to do after a close: fetch a token and reconnect, reconnect after a delay, or stop. */
export type CloseAction = RefreshTokenAction | RetryAction | StopAction;
/** Delays that grow exponentially to a cap, each drawn at random below it ("full jitter"). */
export declare class Backoff {
    private readonly baseMs;
    private readonly capMs;
    private readonly random;
    private attempt;
    /**
     * @param baseMs the first delay's ceiling
     * @param capMs the largest ceiling
     * @param random a source of numbers in [0, 1), `Math.random` unless a test fixes it
     */
    constructor(baseMs?: number, capMs?: number, random?: () => number);
    /** The next delay in milliseconds; each call raises the ceiling until the cap. */
    next(): number;
    /** Connected and synced again: start over. */
    reset(): void;
}
/** The next home a draining node names in its 1012 reason (`...; next: <url>`), if valid. */
export declare function nextHome(reason: string): string | undefined;
/** The action for a close with `code` and `reason`; retries draw their delay from `backoff`. */
export declare function closeAction(code: number, reason: string, backoff: Backoff): CloseAction;
