// The room's chat (docs/AI.md): the SDK's helpers (web-client/sdk/src/chat.ts), so the editor
// and SDK clients read and write one schema with one implementation.
export { type ChatMessage, chatOf, messages, send } from '@chorus/client/chat'
