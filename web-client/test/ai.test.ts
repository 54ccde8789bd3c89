import { describe, expect, it } from 'vitest'

import { askMessage, parseEvent, runMessage } from '../src/ai'
import { loadIdentity, randomIdentity } from '../src/identity'

describe('assistant messages', () => {
  it('asks at a position, over a range, or in the chat', () => {
    const base = { prompt: 'p', apply: 'direct' as const, request: 'q1' }
    expect(JSON.parse(askMessage({ ...base, target: 'document', positions: ['AAA='] }))).toEqual({
      v: 1, type: 'ai.ask', id: 'q1', prompt: 'p', target: 'document', apply: 'direct', position: 'AAA=',
    })
    expect(JSON.parse(askMessage({ ...base, apply: 'suggest', target: 'document', positions: ['A', 'B'] }))).toMatchObject({
      apply: 'suggest', range: ['A', 'B'],
    })
    const chat = JSON.parse(askMessage({ ...base, target: 'chat', positions: ['A'] }))
    expect(chat.target).toBe('chat')
    expect(chat.position).toBeUndefined()
    expect(JSON.parse(runMessage('ai.cancel', 'run_1'))).toEqual({ v: 1, type: 'ai.cancel', run: 'run_1' })
  })

  it('reads the hub events and ignores anything else', () => {
    expect(parseEvent('{"v":1,"type":"ai.run","run":"r","status":"running"}')).toMatchObject({ type: 'ai.run', run: 'r' })
    expect(parseEvent('{"type":"ai.done","run":"r","status":"done"}')).toMatchObject({ status: 'done' })
    expect(parseEvent('{"type":"ai.error","code":"forbidden","message":"no"}')).toMatchObject({ code: 'forbidden' })
    for (const bad of ['', 'null', '[]', '{"type":"ai.run"}', '{"type":"other","run":"r"}', '{"type":"ai.done","run":1,"status":"x"}']) {
      expect(parseEvent(bad)).toBeNull()
    }
  })
})

describe('identity', () => {
  it('is kept across loads, and a broken entry is replaced', () => {
    const store = new Map<string, string>()
    const storage = {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => void store.set(k, v),
    } as unknown as Storage
    const first = loadIdentity(storage)
    expect(loadIdentity(storage)).toEqual(first)
    store.set('chorus.identity', '{"name":"<b>","color":"red; x"}')
    const fresh = loadIdentity(storage)
    expect(fresh.color).toMatch(/^#[0-9a-f]{6}$/)
    expect(randomIdentity(() => 0).name).toBe('Otter 10')
  })
})
