// The assistant's suggestion mark (docs/AI.md): text a run suggests, or, with `kind:
// "deletion"`, text it suggests removing. The editor's schema must declare it: y-prosemirror
// drops text whose mark the schema lacks, so without it a suggestion would be invisible.
import { Mark, mergeAttributes } from '@tiptap/react'

export const AiSuggestion = Mark.create({
  name: 'aiSuggestion',
  inclusive: false,
  addAttributes() {
    return { run: { default: null }, kind: { default: null } }
  },
  parseHTML() {
    return [{ tag: 'span[data-ai-suggestion]' }]
  },
  renderHTML({ HTMLAttributes }) {
    const deletion = HTMLAttributes.kind === 'deletion'
    return [
      'span',
      mergeAttributes({
        'data-ai-suggestion': deletion ? 'deletion' : 'insertion',
        'data-run': HTMLAttributes.run,
        class: deletion ? 'ai-deletion' : 'ai-suggestion',
        title: deletion ? 'the assistant suggests removing this' : 'suggested by the assistant',
      }),
      0,
    ]
  },
})
