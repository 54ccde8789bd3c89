import { describe, expect, it } from 'vitest'

import { roomFromUrl, socketUrl, tokenFromUrl, urlForRoom, validRoom } from '../src/url'

describe('url', () => {
  it('reads the room from ?room= and refuses bad names', () => {
    expect(roomFromUrl('http://h/?room=team-notes')).toBe('team-notes')
    expect(roomFromUrl('http://h/?room=a%2Fb%20c')).toBe('a/b c')
    expect(roomFromUrl('http://h/')).toBeNull()
    expect(roomFromUrl('http://h/?room=')).toBeNull()
    expect(roomFromUrl('http://h/?room=%00x')).toBeNull()
    expect(roomFromUrl(`http://h/?room=${'x'.repeat(129)}`)).toBeNull()
    expect(validRoom('x'.repeat(128))).toBe(true)
  })

  it('links a room, keeping the fragment', () => {
    expect(urlForRoom('http://h/?room=old&x=1#token=t', 'new room')).toBe('/?room=new+room#token=t')
  })

  it('takes a token from the fragment only', () => {
    expect(tokenFromUrl('http://h/?room=r#token=abc.def')).toBe('abc.def')
    expect(tokenFromUrl('http://h/?token=abc')).toBeNull()
    expect(tokenFromUrl(`http://h/#token=${'a'.repeat(9000)}`)).toBeNull()
  })

  it('connects to the Hocuspocus endpoint of the host that served the page', () => {
    expect(socketUrl({ protocol: 'http:', host: '127.0.0.1:8080' })).toBe('ws://127.0.0.1:8080/hocuspocus')
    expect(socketUrl({ protocol: 'https:', host: 'chorus.example' })).toBe('wss://chorus.example/hocuspocus')
  })
})
