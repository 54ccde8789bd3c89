// "Saved": the tracker alone, then through the session with a fake hub.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'

import { isUpdateMessage, SavedTracker } from '../src/saved.js'
import { connectAndSync, FakeSocket, fakeClient, syncStep1 } from './fake.js'

const step2 = new Uint8Array([0, 1, 2, 0, 0])
const update = new Uint8Array([0, 2, 2, 0, 0])
const step1 = new Uint8Array([0, 0, 1, 0])
const awareness = new Uint8Array([1, 1, 0])

describe('counting update messages against `saved`', () => {
  it('recognises SyncStep2 and Update messages only', () => {
    expect([step2, update, step1, awareness, new Uint8Array([0])].map(isUpdateMessage)).toEqual([true, true, false, false, false])
  })

  it('is saved once the first sync is acknowledged, and while every update is', () => {
    const t = new SavedTracker()
    expect(t.saved).toBe(false)
    t.opened()
    t.sentFrame(step1)
    t.sentFrame(awareness)
    expect(t.saved).toBe(false)
    t.sentFrame(step2)
    expect(t.counts()).toEqual({ sent: 1, acked: 0 })
    t.ack(1)
    expect(t.saved).toBe(true)
    t.sentFrame(update)
    t.sentFrame(update)
    expect(t.saved).toBe(false)
    t.ack(2)
    expect(t.saved).toBe(false)
    t.ack(3)
    expect(t.saved).toBe(true)
    // An older count (from the network) changes nothing; neither does garbage.
    t.ack(1)
    t.ack(Number.NaN)
    expect(t.counts()).toEqual({ sent: 3, acked: 3 })
  })

  it('needs the next connection\'s sync for what a closed one left unacknowledged', () => {
    const t = new SavedTracker()
    t.opened()
    t.sentFrame(step2)
    t.ack(1)
    t.sentFrame(update)
    t.closed()
    expect(t.saved).toBe(false)
    t.opened()
    expect(t.saved).toBe(false)
    t.sentFrame(step2)
    t.ack(1)
    expect(t.saved).toBe(true)
  })

  it('stays saved across a close when everything was acknowledged, until an offline edit', () => {
    const t = new SavedTracker()
    t.opened()
    t.sentFrame(step2)
    t.ack(1)
    t.closed()
    expect(t.saved).toBe(true)
    t.localChange(false)
    expect(t.saved).toBe(false)
    t.opened()
    t.sentFrame(update)
    t.ack(1)
    // The update went out, but the offline edit rides on the SyncStep2 only.
    expect(t.saved).toBe(false)
    t.sentFrame(step2)
    t.ack(2)
    expect(t.saved).toBe(true)
  })
})

describe('saved through the session', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    FakeSocket.all = []
  })
  afterEach(() => vi.useRealTimers())

  it('follows the hub\'s acknowledgements of the updates this connection sent', async () => {
    const room = fakeClient().join('r')
    const events: boolean[] = []
    room.on('saved', (s) => events.push(s))
    const socket = connectAndSync()
    // The client answered the hub's SyncStep1 with its SyncStep2: one update message.
    expect(socket.updates()).toHaveLength(1)
    expect(room.saved).toBe(false)
    const saved = room.whenSaved()
    socket.frame({ type: 'saved', updates: 1 })
    await saved
    expect(room.saved).toBe(true)
    room.doc.getText('t').insert(0, 'a')
    room.doc.getText('t').insert(1, 'b')
    expect(socket.updates()).toHaveLength(3)
    expect(room.saved).toBe(false)
    socket.frame({ type: 'saved', updates: 2 })
    expect(room.saved).toBe(false)
    socket.frame({ type: 'saved', updates: 3 })
    expect(room.saved).toBe(true)
    expect(events).toEqual([true, false, true])
    // Malformed `saved` frames are ignored.
    room.doc.getText('t').insert(2, 'c')
    for (const bad of [{ updates: -1 }, { updates: '9' }, { updates: 1.5 }, { updates: 2 ** 60 }]) socket.frame({ type: 'saved', ...bad })
    socket.receive('{"v":2,"type":"saved","updates":99}')
    expect(room.saved).toBe(false)
    room.leave()
  })

  it('counts an edit made while disconnected as unsaved until the next sync is acknowledged', async () => {
    const room = fakeClient().join('r')
    const first = connectAndSync()
    first.frame({ type: 'saved', updates: 1 })
    expect(room.saved).toBe(true)
    first.serverClose(1013, 'overloaded')
    expect(room.saved).toBe(true)
    room.doc.getText('t').insert(0, 'offline')
    expect(room.saved).toBe(false)
    await vi.advanceTimersByTimeAsync(99)
    const second = FakeSocket.last()
    expect(second).not.toBe(first)
    second.open()
    second.receive(syncStep1(new Y.Doc()))
    const [sync] = second.updates()
    expect(sync?.[1]).toBe(1)
    expect(room.saved).toBe(false)
    second.frame({ type: 'saved', updates: 1 })
    expect(room.saved).toBe(true)
    room.leave()
  })
})
