// Asking the hub's assistant from the editor: the cursor (or the selection) becomes a Yjs
// relative position, as the hub expects (docs/AI.md), sent in a Hocuspocus stateless message.
import type { Editor } from '@tiptap/core'
import { absolutePositionToRelativePosition, ySyncPluginKey } from '@tiptap/y-tiptap'
import * as Y from 'yjs'

export type AiEvent =
  | { type: 'ai.run'; run: string; status: string; request?: string; queued_behind?: number }
  | { type: 'ai.done'; run: string; status: string }
  | { type: 'ai.error'; run?: string; request?: string; code: string; message: string }

function base64(bytes: Uint8Array): string {
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

/** The editor's selection as relative positions: `[head]` at a cursor, `[from, to]` over a range. */
export function selectionPositions(editor: Editor): string[] | null {
  const state = ySyncPluginKey.getState(editor.state)
  if (!state?.binding) return null
  const { from, to } = editor.state.selection
  const rel = (pos: number) =>
    base64(Y.encodeRelativePosition(absolutePositionToRelativePosition(pos, state.type, state.binding.mapping)))
  return from === to ? [rel(from)] : [rel(from), rel(to)]
}

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
