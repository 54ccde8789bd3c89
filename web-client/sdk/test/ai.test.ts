// Asking the assistant through the session, the hub played by the test.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'

import { encodePosition } from '../src/ai.js'
import type { AiEvent } from '../src/index.js'
import { connectAndSync, FakeSocket, fakeClient } from './fake.js'

beforeEach(() => {
  vi.useFakeTimers()
  FakeSocket.all = []
})
afterEach(() => vi.useRealTimers())

const asks = (s: FakeSocket) => s.texts().filter((t) => t.type === 'ai.ask')

describe('the assistant', () => {
  it('sends the ask once in sync, and streams the run\'s events to its handle', async () => {
    const room = fakeClient().join('r')
    const run = room.ask({ prompt: 'Summarize', target: 'chat' })
    const socket = FakeSocket.last()
    socket.open()
    expect(asks(socket)).toEqual([])
    connectAndSync(socket)
    const [ask] = asks(socket)
    expect(ask).toEqual({ v: 1, type: 'ai.ask', id: run.request, prompt: 'Summarize', target: 'chat' })
    const events: AiEvent[] = []
    const statuses: string[] = []
    run.on('event', (e) => events.push(e))
    run.on('status', (s) => statuses.push(s))
    const seen: AiEvent[] = []
    room.on('ai', (e) => seen.push(e))
    for (const status of ['queued', 'running', 'writing']) socket.frame({ type: 'ai.run', run: 'run_1', status, request: run.request })
    expect(run.id).toBe('run_1')
    socket.frame({ type: 'ai.done', run: 'run_1', status: 'done', prompt_tokens: 12, completion_tokens: 30 })
    await expect(run.done).resolves.toEqual({ type: 'ai.done', run: 'run_1', status: 'done', prompt_tokens: 12, completion_tokens: 30 })
    expect(statuses).toEqual(['queued', 'running', 'writing', 'done'])
    expect(events.map((e) => e.type)).toEqual(['ai.run', 'ai.run', 'ai.run', 'ai.done'])
    expect(seen).toEqual(events)
    // Revert later: answered with an ai.run without `request`.
    const reverted = run.revert()
    await vi.advanceTimersByTimeAsync(0)
    expect(socket.texts().at(-1)).toEqual({ v: 1, type: 'ai.revert', run: 'run_1' })
    socket.frame({ type: 'ai.run', run: 'run_1', status: 'reverted' })
    await expect(reverted).resolves.toMatchObject({ status: 'reverted' })
    room.leave()
  })

  it('writes positions and options as the hub reads them', () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const text = new Y.Doc().getText('default')
    const pos = Y.createRelativePositionFromTypeIndex(text, 0)
    room.ask({ prompt: 'p', target: 'document', apply: 'suggest', fieldType: 'text', field: 'body', position: pos, model: 'm', revertOnCancel: true })
    room.ask({ prompt: 'q', target: 'document', range: [pos, 'AAA='], replyTo: 'm_1' })
    const [a, b] = asks(socket)
    expect(a).toMatchObject({ target: 'document', apply: 'suggest', field_type: 'text', field: 'body', model: 'm', revert_on_cancel: true })
    expect(a?.position).toBe(encodePosition(pos))
    expect(Y.decodeRelativePosition(Uint8Array.from(atob(String(a?.position)), (c) => c.charCodeAt(0)))).toEqual(pos)
    expect(b).toMatchObject({ range: [encodePosition(pos), 'AAA='], reply_to: 'm_1' })
    room.leave()
  })

  it('rejects `done` with the hub\'s code when the request is refused', async () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const run = room.ask({ prompt: 'p' })
    socket.frame({ type: 'ai.error', request: run.request, code: 'ai_disabled', message: 'no model provider' })
    await expect(run.done).rejects.toMatchObject({ kind: 'hub', code: 'ai_disabled', fatal: false })
    expect(run.ended).toBe(true)
    room.leave()
  })

  it('keeps a failed run\'s error and resolves `done` with its end', async () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const run = room.ask({ prompt: 'p' })
    socket.frame({ type: 'ai.run', run: 'run_2', status: 'running', request: run.request })
    socket.frame({ type: 'ai.error', run: 'run_2', request: run.request, code: 'provider_error', message: '503' })
    socket.frame({ type: 'ai.done', run: 'run_2', status: 'failed', prompt_tokens: 1, completion_tokens: 0 })
    await expect(run.done).resolves.toMatchObject({ status: 'failed' })
    expect(run.error).toMatchObject({ code: 'provider_error' })
    room.leave()
  })

  it('cancels a run the hub has not named yet as soon as it does', async () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const run = room.ask({ prompt: 'p' })
    const cancelled = run.cancel()
    await vi.advanceTimersByTimeAsync(0)
    expect(socket.texts().filter((t) => t.type === 'ai.cancel')).toEqual([])
    socket.frame({ type: 'ai.run', run: 'run_3', status: 'queued', request: run.request })
    await vi.advanceTimersByTimeAsync(0)
    expect(socket.texts().filter((t) => t.type === 'ai.cancel')).toEqual([{ v: 1, type: 'ai.cancel', run: 'run_3' }])
    socket.frame({ type: 'ai.run', run: 'run_3', status: 'cancelled' })
    await expect(cancelled).resolves.toMatchObject({ status: 'cancelled' })
    // A refused change rejects; the run's own events go on.
    const accepted = run.accept()
    await vi.advanceTimersByTimeAsync(0)
    socket.frame({ type: 'ai.error', run: 'run_3', code: 'bad_request', message: 'not a suggestion' })
    await expect(accepted).rejects.toMatchObject({ kind: 'hub', code: 'bad_request' })
    socket.frame({ type: 'ai.done', run: 'run_3', status: 'cancelled', prompt_tokens: 0, completion_tokens: 0 })
    await expect(run.done).resolves.toMatchObject({ status: 'cancelled' })
    room.leave()
  })

  it('rejects `done` when the connection closes first', async () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const run = room.ask({ prompt: 'p' })
    socket.frame({ type: 'ai.run', run: 'run_4', status: 'writing', request: run.request })
    socket.serverClose(1006)
    await expect(run.done).rejects.toMatchObject({ kind: 'disconnected' })
    room.leave()
  })

  it('ignores events of runs it did not ask for, except on the `ai` event', () => {
    const room = fakeClient().join('r')
    const socket = connectAndSync()
    const seen: AiEvent[] = []
    room.on('ai', (e) => seen.push(e))
    socket.frame({ type: 'ai.done', run: 'run_x', status: 'done', prompt_tokens: 0, completion_tokens: 0 })
    expect(seen).toHaveLength(1)
    room.leave()
  })
})
