/** Listener signatures by event name. */
export type EventMap = {
    /** An event's name and the signature of its listeners. */
    [event: string]: (...args: never[]) => void;
};
/** Subscribes to and emits the events named in `Events`. */
export declare class Emitter<Events extends EventMap> {
    private readonly listeners;
    /** Calls `listener` on every `event` until the returned function is called. */
    on<E extends keyof Events>(event: E, listener: Events[E]): () => void;
    /** Calls `listener` on the next `event` only. */
    once<E extends keyof Events>(event: E, listener: Events[E]): () => void;
    /** Removes a listener added with {@link Emitter.on}. */
    off<E extends keyof Events>(event: E, listener: Events[E]): void;
    /**
     * Calls the listeners of `event` in the order they were added. A listener that throws does
     * not keep the others (or the SDK's own bookkeeping) from running: the error is reported
     * asynchronously instead.
     */
    protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void;
    /** Whether anything listens to `event` (to skip work nobody would see). */
    protected listening(event: keyof Events): boolean;
    /** Drops every listener. */
    protected removeAllListeners(): void;
}
