// The Hocuspocus peer for compare.sh: @hocuspocus/server with no extensions (documents in
// memory, like the reference y-websocket server), on HOST:PORT.
import { Server } from '@hocuspocus/server'

const server = new Server({
  address: process.env.HOST || '127.0.0.1',
  port: Number(process.env.PORT || 18090),
  quiet: true
})
await server.listen()
