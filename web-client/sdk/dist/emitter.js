// A small typed event emitter: the SDK runs in browsers and in Node, so it uses neither
// Node's EventEmitter nor the DOM's EventTarget.
/** Subscribes to and emits the events named in `Events`. */
export class Emitter {
    listeners = new Map();
    /** Calls `listener` on every `event` until the returned function is called. */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (!set) {
            set = new Set();
            this.listeners.set(event, set);
        }
        set.add(listener);
        return () => this.off(event, listener);
    }
    /** Calls `listener` on the next `event` only. */
    once(event, listener) {
        const wrapped = ((...args) => {
            this.off(event, wrapped);
            listener(...args);
        });
        return this.on(event, wrapped);
    }
    /** Removes a listener added with {@link Emitter.on}. */
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
    }
    /**
     * Calls the listeners of `event` in the order they were added. A listener that throws does
     * not keep the others (or the SDK's own bookkeeping) from running: the error is reported
     * asynchronously instead.
     */
    emit(event, ...args) {
        const set = this.listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                ;
                listener(...args);
            }
            catch (e) {
                queueMicrotask(() => {
                    throw e;
                });
            }
        }
    }
    /** Whether anything listens to `event` (to skip work nobody would see). */
    listening(event) {
        return (this.listeners.get(event)?.size ?? 0) > 0;
    }
    /** Drops every listener. */
    removeAllListeners() {
        this.listeners.clear();
    }
}
