// The editor: Tiptap, ProseMirror and y-tiptap, more than half of the page's JavaScript. It is
// a chunk of its own (Room.tsx imports it lazily, and the page preloads it beside its first
// script), so the room's frame, its state and its panels paint without waiting for it.
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { TextSelection } from '@tiptap/pm/state'
import { absolutePositionToRelativePosition, relativePositionToAbsolutePosition, ySyncPluginKey } from '@tiptap/y-tiptap'
import { type Editor, EditorContent, useEditor } from '@tiptap/react'
import type { HocuspocusProvider } from '@hocuspocus/provider'
import { useEffect, useMemo } from 'react'
import * as Y from 'yjs'

import { schemaExtensions } from './schema'
import type { Identity } from './identity'
import { bytesFromBase64, EDITOR_FIELD } from './search'

/** What the room asks of its editor. */
export interface EditorHandle {
  /** The selection as relative positions, base64 (`[head]` at a cursor, `[from, to]` over a range), as the hub's `ai.ask` expects (docs/AI.md). */
  positions(): string[] | null
  /**
   * Puts the cursor at a search hit's relative position (base64) and scrolls it into view;
   * where it no longer resolves (its text or block deleted, another root's), nothing moves.
   * False if this editor is gone (the position is for the next one).
   */
  reveal(at: string): boolean
}

function base64(bytes: Uint8Array): string {
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

function selectionPositions(editor: Editor): string[] | null {
  const state = ySyncPluginKey.getState(editor.state)
  if (!state?.binding) return null
  const { from, to } = editor.state.selection
  const rel = (pos: number) =>
    base64(Y.encodeRelativePosition(absolutePositionToRelativePosition(pos, state.type, state.binding.mapping)))
  return from === to ? [rel(from)] : [rel(from), rel(to)]
}

/** Patience for a hit whose text this copy of the document has not received yet. */
const REVEAL_WAIT_MS = 5000

/** The ProseMirror position of `at`; 'pending' where its item has not arrived yet. */
function resolveHit(editor: Editor, at: string): number | null | 'pending' {
  const state = ySyncPluginKey.getState(editor.state)
  const bytes = bytesFromBase64(at)
  if (!state?.binding || !bytes) return null
  try {
    const rel = Y.decodeRelativePosition(bytes)
    // Looking up a root by name creates it: leave other roots alone.
    if (rel.tname !== null && rel.tname !== EDITOR_FIELD) return null
    const ref = rel.item ?? rel.type
    if (ref && Y.getState(state.doc.store, ref.client) <= ref.clock) return 'pending'
    return relativePositionToAbsolutePosition(state.doc, state.type, rel, state.binding.mapping)
  } catch {
    // Bytes that are no relative position, or one Yjs cannot follow (garbage-collected).
    return null
  }
}

function place(editor: Editor, pos: number) {
  const { view } = editor
  const doc = view.state.doc
  const selection = TextSelection.near(doc.resolve(Math.min(Math.max(pos, 0), doc.content.size)))
  view.dispatch(view.state.tr.setSelection(selection))
  const { node, offset } = view.domAtPos(selection.head)
  if (view.editable) {
    view.focus()
  } else {
    // ProseMirror leaves the DOM selection of a read-only view alone: set it, so the spot shows.
    window.getSelection()?.collapse(node, offset)
  }
  // Centred, not just within the edge as ProseMirror's scrollIntoView leaves it.
  ;(node instanceof Element ? node : node.parentElement)?.scrollIntoView({ block: 'center' })
}

function reveal(editor: Editor, at: string): boolean {
  if (editor.isDestroyed) return false
  const attempt = () => {
    if (editor.isDestroyed) return true
    const pos = resolveHit(editor, at)
    if (pos === 'pending') return false
    if (pos !== null) place(editor, pos)
    return true
  }
  if (attempt()) return true
  // Synced, yet the hit's update may trail (the hub indexed a change this page has not seen).
  const doc = ySyncPluginKey.getState(editor.state)?.doc
  if (!doc) return true
  let done = false
  const stop = () => {
    done = true
    doc.off('afterTransaction', onChange)
    clearTimeout(timer)
  }
  // Once the Yjs transaction is over (the binding has rendered it into the editor by then),
  // not inside it.
  const onChange = () =>
    queueMicrotask(() => {
      if (!done && attempt()) stop()
    })
  doc.on('afterTransaction', onChange)
  const timer = setTimeout(stop, REVEAL_WAIT_MS)
  return true
}

export default function EditorPane({
  doc,
  provider,
  identity,
  editable,
  onReady,
}: {
  doc: Y.Doc
  provider: HocuspocusProvider
  identity: Identity
  editable: boolean
  onReady: (handle: EditorHandle) => void
}) {
  const editor = useEditor(
    {
      editable,
      extensions: [
        ...schemaExtensions(),
        Collaboration.configure({ document: doc, field: 'default' }),
        CollaborationCaret.configure({ provider, user: identity }),
      ],
      editorProps: { attributes: { class: 'doc', 'aria-label': 'Document', role: 'textbox', 'aria-multiline': 'true' } },
    },
    [provider],
  )
  useEffect(() => {
    editor?.setEditable(editable)
  }, [editor, editable])
  useEffect(() => {
    // (useEditor may replace its first editor when its effects run late, a slow page's first
    // render: that one is destroyed by now, and the new one comes with the next render.)
    if (!editor || editor.isDestroyed) return
    // When the editor is on screen (bench/lighthouse.mjs reports it beside Lighthouse's metrics).
    if (performance.getEntriesByName('chorus:editor-ready').length === 0) performance.mark('chorus:editor-ready')
    onReady({ positions: () => selectionPositions(editor), reveal: (at) => reveal(editor, at) })
  }, [editor, onReady])
  return <EditorContent editor={editor} />
}

/** A version's content, read-only (the history's preview). */
export function Preview({ update }: { update: Uint8Array }) {
  const doc = useMemo(() => {
    const d = new Y.Doc()
    Y.applyUpdate(d, update)
    return d
  }, [update])
  const editor = useEditor(
    {
      editable: false,
      extensions: [...schemaExtensions(), Collaboration.configure({ document: doc, field: 'default' })],
      editorProps: { attributes: { class: 'doc preview', 'aria-label': 'Version preview' } },
    },
    [doc],
  )
  return <EditorContent editor={editor} />
}
