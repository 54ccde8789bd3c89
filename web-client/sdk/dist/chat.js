// The room's chat, as the hub documents it (docs/AI.md "The chat"): a root Y.Array `chat` of
// Y.Map messages; `text` is a Y.Text that grows while an assistant's answer streams. The
// chat is part of the document, so late joiners see its history and it persists with it.
// Other members (and the assistant) write it too: every entry is read defensively.
import * as Y from 'yjs';
/** The chat's root type in `doc`. */
export function chatOf(doc) {
    return doc.getArray('chat');
}
/** The last `limit` messages, oldest first (malformed entries are skipped). */
export function messages(doc, limit = 200) {
    const arr = chatOf(doc);
    const out = [];
    const start = Math.max(0, arr.length - limit);
    arr.slice(start).forEach((m) => {
        if (!(m instanceof Y.Map))
            return;
        const id = m.get('id');
        const text = m.get('text');
        if (typeof id !== 'string')
            return;
        const time = Number(m.get('time') ?? 0);
        const message = {
            id,
            author: String(m.get('author') ?? ''),
            role: m.get('role') === 'assistant' ? 'assistant' : 'user',
            text: text instanceof Y.Text ? text.toString() : typeof text === 'string' ? text : '',
            status: String(m.get('status') ?? 'done'),
            time: Number.isFinite(time) ? time : 0,
        };
        for (const key of ['run', 'model', 'asked_by', 'reply_to']) {
            const v = m.get(key);
            if (typeof v === 'string')
                message[key] = v;
        }
        out.push(message);
    });
    return out;
}
/** Appends a person's message and returns its id. */
export function send(doc, author, text, now = Date.now(), replyTo) {
    const id = `m_${now.toString(36)}_${Math.random().toString(36).slice(2, 10)}`;
    doc.transact(() => {
        const m = new Y.Map();
        m.set('id', id);
        m.set('author', author);
        m.set('role', 'user');
        m.set('text', new Y.Text(text));
        m.set('status', 'done');
        m.set('time', now);
        if (replyTo !== undefined)
            m.set('reply_to', replyTo);
        chatOf(doc).push([m]);
    });
    return id;
}
