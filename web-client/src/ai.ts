// Asking the hub's assistant from the editor, in Hocuspocus stateless messages (docs/AI.md);
// the cursor or the selection goes as Yjs relative positions (EditorPane.tsx computes them).

export type AiEvent =
  | { type: 'ai.run'; run: string; status: string; request?: string; queued_behind?: number }
  | { type: 'ai.done'; run: string; status: string }
  | { type: 'ai.error'; run?: string; request?: string; code: string; message: string }

export interface Ask {
  prompt: string
  target: 'document' | 'chat'
  apply: 'direct' | 'suggest'
  positions: string[] | null
  request: string
}

/** The `ai.ask` message for `ask`. */
export function askMessage(ask: Ask): string {
  const msg: Record<string, unknown> = {
    v: 1,
    type: 'ai.ask',
    id: ask.request,
    prompt: ask.prompt,
    target: ask.target,
  }
  if (ask.target === 'document') {
    msg.apply = ask.apply
    if (ask.positions?.length === 1) msg.position = ask.positions[0]
    if (ask.positions?.length === 2) msg.range = ask.positions
  }
  return JSON.stringify(msg)
}

/** `ai.cancel`, `ai.revert`, `ai.accept` or `ai.reject` of a run. */
export function runMessage(type: 'ai.cancel' | 'ai.revert' | 'ai.accept' | 'ai.reject', run: string): string {
  return JSON.stringify({ v: 1, type, run })
}

/** An assistant event from a stateless payload, or null if it is not one. */
export function parseEvent(payload: string): AiEvent | null {
  let v: unknown
  try {
    v = JSON.parse(payload)
  } catch {
    return null
  }
  if (!v || typeof v !== 'object' || !('type' in v) || typeof v.type !== 'string') return null
  switch (v.type) {
    case 'ai.run':
    case 'ai.done':
      return 'run' in v && typeof v.run === 'string' && 'status' in v && typeof v.status === 'string'
        ? (v as AiEvent)
        : null
    case 'ai.error':
      return 'code' in v && typeof v.code === 'string' ? (v as AiEvent) : null
    default:
      return null
  }
}
