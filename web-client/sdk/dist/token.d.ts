/** The claims the SDK uses. */
export interface TokenClaims {
    /** Expiry, seconds since the epoch. */
    exp?: number;
    /** The user. */
    sub?: string;
}
/** The `exp` and `sub` of a JWT, as far as they are present and well-typed. */
export declare function tokenClaims(token: string): TokenClaims;
/**
 * Milliseconds from `nowMs` until a token expiring at `exp` (seconds) should be renewed: a
 * minute before it expires; a short-lived token (under five minutes left) after four fifths
 * of what is left, so renewals of short tokens do not follow each other at once.
 */
export declare function renewalDelay(exp: number, nowMs: number): number;
/** Calls `getToken` and checks its answer: a non-empty string, or a ChorusError `unauthenticated` (4401). */
export declare function freshToken(getToken: (room: string) => string | Promise<string>, room: string, fatal: boolean): Promise<string>;
/** One pending renewal of a session's token. */
export declare class RenewalTimer {
    private timer;
    /**
     * Calls `renew` a while before `token` expires (see {@link renewalDelay}); replaces any
     * earlier one. Nothing for a token already expired: the hub refuses it (4401), and that
     * refresh is the one that counts.
     */
    schedule(token: string | undefined, renew: () => void): void;
    /** Drops the pending renewal. */
    cancel(): void;
}
