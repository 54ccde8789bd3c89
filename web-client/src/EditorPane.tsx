// The editor: Tiptap, ProseMirror and y-tiptap, more than half of the page's JavaScript. It is
// a chunk of its own (Room.tsx imports it lazily, and the page preloads it beside its first
// script), so the room's frame, its state and its panels paint without waiting for it.
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { absolutePositionToRelativePosition, ySyncPluginKey } from '@tiptap/y-tiptap'
import { type Editor, EditorContent, useEditor } from '@tiptap/react'
import type { HocuspocusProvider } from '@hocuspocus/provider'
import { useEffect, useMemo } from 'react'
import * as Y from 'yjs'

import { schemaExtensions } from './schema'
import type { Identity } from './identity'

/** What the room asks of its editor. */
export interface EditorHandle {
  /** The selection as relative positions, base64 (`[head]` at a cursor, `[from, to]` over a range), as the hub's `ai.ask` expects (docs/AI.md). */
  positions(): string[] | null
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
    if (!editor) return
    // When the editor is on screen (bench/lighthouse.mjs reports it beside Lighthouse's metrics).
    if (performance.getEntriesByName('chorus:editor-ready').length === 0) performance.mark('chorus:editor-ready')
    onReady({ positions: () => selectionPositions(editor) })
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
