// The room's two lazy chunks: the live part (Yjs, the hub connection, live.ts) and the
// editor (Tiptap, EditorPane.tsx). The page's first script holds React and the room's frame
// only, so that frame paints early; the room asks for both chunks as it first renders, and
// they load side by side. (Each import is made once.)
let live: Promise<typeof import('./live')> | undefined
let editor: Promise<typeof import('./EditorPane')> | undefined

export const liveChunk = () => (live ??= import('./live'))
export const editorChunk = () => (editor ??= import('./EditorPane'))
