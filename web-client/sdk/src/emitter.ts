// A small typed event emitter: the SDK runs in browsers and in Node, so it uses neither
// Node's EventEmitter nor the DOM's EventTarget.

/** Listener signatures by event name. */
export type EventMap = {
  /** An event's name and the signature of its listeners. */
  [event: string]: (...args: never[]) => void
}

/** Subscribes to and emits the events named in `Events`. */
export class Emitter<Events extends EventMap> {
  private readonly listeners = new Map<keyof Events, Set<Events[keyof Events]>>()

  /** Calls `listener` on every `event` until the returned function is called. */
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener)
    return () => this.off(event, listener)
  }

  /** Calls `listener` on the next `event` only. */
  once<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    const wrapped = ((...args: Parameters<Events[E]>) => {
      this.off(event, wrapped)
      listener(...args)
    }) as Events[E]
    return this.on(event, wrapped)
  }

  /** Removes a listener added with {@link Emitter.on}. */
  off<E extends keyof Events>(event: E, listener: Events[E]): void {
    this.listeners.get(event)?.delete(listener)
  }

  /**
   * Calls the listeners of `event` in the order they were added. A listener that throws does
   * not keep the others (or the SDK's own bookkeeping) from running: the error is reported
   * asynchronously instead.
   */
  protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
    const set = this.listeners.get(event)
    if (!set) return
    for (const listener of [...set]) {
      try {
        ;(listener as (...a: Parameters<Events[E]>) => void)(...args)
      } catch (e) {
        queueMicrotask(() => {
          throw e
        })
      }
    }
  }

  /** Whether anything listens to `event` (to skip work nobody would see). */
  protected listening(event: keyof Events): boolean {
    return (this.listeners.get(event)?.size ?? 0) > 0
  }

  /** Drops every listener. */
  protected removeAllListeners(): void {
    this.listeners.clear()
  }
}
