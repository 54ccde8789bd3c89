// The hub's extension frames (docs/PROTOCOL.md "Extension frames", docs/AI.md "Asking"): JSON
// text frames on a connection that opted in with `ext=1`. Everything from the hub is parsed
// as untrusted input: a frame that is not an object of a known type, version 1, with fields
// of the documented types, is dropped (`null`), never half-used. Fields keep their wire names,
// so the tables in the docs apply as they are.
const isString = (v) => typeof v === 'string';
/** A count: a non-negative integer that a double holds exactly. */
const isCount = (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const optional = (v, is) => v === undefined || v === null || is(v);
/** Copies `key` into `out` when it is present and of the right type. */
function copy(from, out, key, is) {
    const v = from[key];
    if (v !== undefined && v !== null && is(v))
        out[key] = v;
}
/** An assistant event from a JSON value, or `null` if it is not a well-formed one. */
export function aiEventOf(value) {
    if (!value || typeof value !== 'object' || Array.isArray(value))
        return null;
    const v = value;
    switch (v.type) {
        case 'ai.run': {
            if (!isString(v.run) || !isString(v.status))
                return null;
            if (!optional(v.request, isString) || !optional(v.queued_behind, isCount))
                return null;
            const out = { type: v.type, run: v.run, status: v.status };
            copy(v, out, 'request', isString);
            copy(v, out, 'queued_behind', isCount);
            return out;
        }
        case 'ai.done':
            if (!isString(v.run) || !isString(v.status))
                return null;
            return {
                type: v.type,
                run: v.run,
                status: v.status,
                prompt_tokens: isCount(v.prompt_tokens) ? v.prompt_tokens : 0,
                completion_tokens: isCount(v.completion_tokens) ? v.completion_tokens : 0,
            };
        case 'ai.error': {
            if (!isString(v.code) || !optional(v.run, isString) || !optional(v.request, isString))
                return null;
            const out = { type: v.type, code: v.code, message: isString(v.message) ? v.message : '' };
            copy(v, out, 'run', isString);
            copy(v, out, 'request', isString);
            return out;
        }
        default:
            return null;
    }
}
/** A frame from a text message of the hub, or `null` if it is not one this SDK understands. */
export function parseServerFrame(text) {
    let value;
    try {
        value = JSON.parse(text);
    }
    catch {
        return null;
    }
    if (!value || typeof value !== 'object' || Array.isArray(value))
        return null;
    const v = value;
    if (v.v !== 1)
        return null;
    switch (v.type) {
        case 'welcome': {
            if (!isString(v.room) || !isString(v.tenant) || (v.role !== 'read' && v.role !== 'write'))
                return null;
            if (!optional(v.user, isString))
                return null;
            const out = { type: v.type, room: v.room, tenant: v.tenant, role: v.role };
            copy(v, out, 'user', isString);
            return out;
        }
        case 'saved':
            return isCount(v.updates) ? { type: v.type, updates: v.updates } : null;
        case 'error':
            return isString(v.code) ? { type: v.type, code: v.code, message: isString(v.message) ? v.message : '' } : null;
        case 'pong':
            return isCount(v.id) ? { type: v.type, id: v.id } : { type: v.type };
        case 'authenticated':
            return isCount(v.expires) ? { type: v.type, expires: v.expires } : null;
        default:
            return aiEventOf(v);
    }
}
/** The `ai.ask` frame (fields left undefined are left out). */
export function askFrame(fields) {
    const out = { v: 1, type: 'ai.ask' };
    for (const [k, v] of Object.entries(fields))
        if (v !== undefined)
            out[k] = v;
    return JSON.stringify(out);
}
/** `ai.cancel`, `ai.revert`, `ai.accept` or `ai.reject` of `run`. */
export function runChangeFrame(type, run) {
    return JSON.stringify({ v: 1, type, run });
}
/** `auth`: renew the session's token before it expires. */
export function authFrame(token) {
    return JSON.stringify({ v: 1, type: 'auth', token });
}
/** `ping`, answered with a `pong` carrying the same id. */
export function pingFrame(id) {
    return JSON.stringify({ v: 1, type: 'ping', id });
}
