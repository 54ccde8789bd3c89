// The hub's text frames are untrusted: well-formed ones parse, anything else is dropped.
import { describe, expect, it } from 'vitest'

import { askFrame, parseServerFrame, runChangeFrame } from '../src/frames.js'
import { renewalDelay, tokenClaims } from '../src/token.js'
import { jwt } from './fake.js'

const f = (o: unknown) => parseServerFrame(JSON.stringify(o))

describe('server frames', () => {
  it('parses the documented frames and ignores unknown fields', () => {
    expect(f({ v: 1, type: 'welcome', room: 'r', tenant: 't', role: 'write', user: 'u', extra: 1 })).toEqual({
      type: 'welcome', room: 'r', tenant: 't', role: 'write', user: 'u',
    })
    expect(f({ v: 1, type: 'welcome', room: 'r', tenant: 't', role: 'read' })).toEqual({
      type: 'welcome', room: 'r', tenant: 't', role: 'read',
    })
    expect(f({ v: 1, type: 'saved', updates: 3 })).toEqual({ type: 'saved', updates: 3 })
    expect(f({ v: 1, type: 'error', code: 'forbidden', message: 'no' })).toEqual({ type: 'error', code: 'forbidden', message: 'no' })
    expect(f({ v: 1, type: 'pong', id: 7 })).toEqual({ type: 'pong', id: 7 })
    expect(f({ v: 1, type: 'authenticated', expires: 1_800_000_000 })).toEqual({ type: 'authenticated', expires: 1_800_000_000 })
  })

  it('parses the assistant\'s events', () => {
    expect(f({ v: 1, type: 'ai.run', run: 'run_1', status: 'queued', request: 'q1', queued_behind: 2 })).toEqual({
      type: 'ai.run', run: 'run_1', status: 'queued', request: 'q1', queued_behind: 2,
    })
    expect(f({ v: 1, type: 'ai.run', run: 'run_1', status: 'reverted' })).toEqual({ type: 'ai.run', run: 'run_1', status: 'reverted' })
    expect(f({ v: 1, type: 'ai.done', run: 'run_1', status: 'done', prompt_tokens: 10, completion_tokens: 5 })).toEqual({
      type: 'ai.done', run: 'run_1', status: 'done', prompt_tokens: 10, completion_tokens: 5,
    })
    expect(f({ v: 1, type: 'ai.done', run: 'run_1', status: 'failed' })).toMatchObject({ prompt_tokens: 0, completion_tokens: 0 })
    expect(f({ v: 1, type: 'ai.error', request: 'q1', code: 'ai_disabled', message: 'off' })).toEqual({
      type: 'ai.error', request: 'q1', code: 'ai_disabled', message: 'off',
    })
  })

  it('drops what is not a well-formed frame of version 1', () => {
    const bad: unknown[] = [
      null, 1, 'x', [], [{ v: 1, type: 'saved', updates: 1 }],
      { type: 'saved', updates: 1 },
      { v: 2, type: 'saved', updates: 1 },
      { v: '1', type: 'saved', updates: 1 },
      { v: 1, type: 'saved', updates: -1 },
      { v: 1, type: 'saved', updates: 1.5 },
      { v: 1, type: 'saved', updates: 2 ** 53 },
      { v: 1, type: 'saved' },
      { v: 1, type: 'welcome', room: 'r', tenant: 't', role: 'admin' },
      { v: 1, type: 'welcome', room: 1, tenant: 't', role: 'read' },
      { v: 1, type: 'welcome', room: 'r', tenant: 't', role: 'read', user: 5 },
      { v: 1, type: 'error', message: 'no code' },
      { v: 1, type: 'authenticated', expires: 'soon' },
      { v: 1, type: 'ai.run', run: 'run_1' },
      { v: 1, type: 'ai.run', run: 5, status: 'queued' },
      { v: 1, type: 'ai.run', run: 'run_1', status: 'queued', queued_behind: -3 },
      { v: 1, type: 'ai.done', status: 'done' },
      { v: 1, type: 'ai.error', message: 'no code' },
      { v: 1, type: 'ai.error', code: 'x', run: 7 },
      { v: 1, type: 'mystery' },
      { v: 1, type: '__proto__' },
    ]
    for (const b of bad) expect(f(b), JSON.stringify(b)).toBeNull()
    expect(parseServerFrame('{"v":1,')).toBeNull()
    expect(parseServerFrame('')).toBeNull()
  })
})

describe('client frames', () => {
  it('writes ai.ask without undefined fields, and run changes', () => {
    expect(JSON.parse(askFrame({ id: 'q', prompt: 'p', target: 'chat', model: undefined }))).toEqual({
      v: 1, type: 'ai.ask', id: 'q', prompt: 'p', target: 'chat',
    })
    expect(JSON.parse(runChangeFrame('ai.revert', 'run_1'))).toEqual({ v: 1, type: 'ai.revert', run: 'run_1' })
  })
})

describe('tokens', () => {
  it('reads exp and sub, and nothing from what is not a JWT', () => {
    expect(tokenClaims(jwt({ sub: 'alice', exp: 100, rooms: ['*'] }))).toEqual({ sub: 'alice', exp: 100 })
    expect(tokenClaims(jwt({ sub: 5, exp: 'x' }))).toEqual({})
    expect(tokenClaims('not a token')).toEqual({})
    expect(tokenClaims('a.!!!.c')).toEqual({})
    expect(tokenClaims('a.bm90IGpzb24.c')).toEqual({})
  })

  it('renews a minute before expiry, short tokens at four fifths of their life', () => {
    expect(renewalDelay(3600, 0)).toBe(3_540_000)
    expect(renewalDelay(120, 0)).toBe(96_000)
    expect(renewalDelay(10, 0)).toBe(8_000)
    expect(renewalDelay(10, 20_000)).toBe(0)
  })
})
