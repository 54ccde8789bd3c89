// The document's schema, shared by the live editor and the version preview. y-prosemirror
// drops any node or mark the schema lacks, so everything hub-side writers put into the
// `default` fragment must be declared here: the assistant's suggestion mark, and the task
// lists that bots and path ops write (`taskList` > `taskItem` {checked} > `paragraph`,
// examples/python-bot/checklist_bot.py).
import { TaskItem, TaskList } from '@tiptap/extension-list'
import type { Extensions } from '@tiptap/react'
import StarterKit from '@tiptap/starter-kit'

import { AiSuggestion } from './suggestion'

export function schemaExtensions(): Extensions {
  return [
    // The document's history is Yjs's (Collaboration): undo takes back only this tab's own
    // changes, never another person's or the assistant's.
    StarterKit.configure({ undoRedo: false }),
    AiSuggestion,
    // `[ ] ` (or `[x] `) at the start of a line, or Mod-Shift-9, makes a checklist; Tab nests.
    TaskList,
    TaskItem.configure({
      nested: true,
      // (Its node view renders the item without `data-type`: the class is what styles find.)
      HTMLAttributes: { class: 'task-item' },
      // A checkbox is named by its item's own line (a screen reader adds whether it is ticked).
      a11y: { checkboxLabel: (node) => node.firstChild?.textContent || 'empty checklist item' },
    }),
  ]
}
