//! `chorus-bare-relay`: the floor for the peer comparison, not a server anyone should run.
//!
//! It speaks just enough of the y-websocket dialect for the load tester's `connect`, `edit`
//! and `join-storm` scenarios: every binary message is relayed to the other sockets on the
//! same path, and a client's SyncStep1 gets a SyncStep2 with every update the room has
//! relayed, merged once into one update and kept until the next. No document, no
//! persistence, no auth, no limits: what it costs per delivery, per connection, per set-up and
//! per joiner is what the kernel and a tokio + tungstenite stack cost on this machine, which
//! no real Yjs server can undercut. `loadtest/peers/compare.sh` runs it as `bare-relay` beside
//! the real servers, so ratios against it show how close each comes.
//!
//! A large SyncStep2 goes straight to the TCP stream in 64 KiB fragments, each header and
//! its slice of the cached message in one vectored write: nothing copied in user space, the
//! least any server can do to hand a joiner its state.
//!
//! Usage: `chorus-bare-relay [ADDR]` (default 127.0.0.1:18090; loopback addresses only).

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use bytes::Bytes;
use chorus_protocol::Message as Sync;
use chorus_protocol::lib0::Decoder;
use tokio::io::AsyncWriteExt;

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

#[derive(Default)]
struct Room {
    members: HashMap<u64, mpsc::UnboundedSender<Message>>,
    /// Every update relayed in this room, as received.
    updates: Vec<Bytes>,
    /// Them merged into one SyncStep2 message, until the next update.
    step2: Option<Bytes>,
}

/// y-sync SyncStep1 starts `0, 0`.
const STEP1: [u8; 2] = [0, 0];
/// Messages above this go straight to the socket, in fragments of this size.
const DIRECT_BYTES: usize = 64 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        None => SocketAddr::from(([127, 0, 0, 1], 18090)),
        Some(a) => a
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
    };
    if !addr.ip().is_loopback() {
        eprintln!("chorus-bare-relay listens on loopback addresses only");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(addr).await?;
    let rooms: Rooms = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(serve(stream, next_id, rooms.clone()));
    }
}

async fn serve(stream: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    // The small buffers every serious server here uses (tungstenite's defaults are 128 KiB).
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0);
    let mut path = String::new();
    #[expect(
        clippy::result_large_err,
        reason = "the signature is tungstenite's (its error type is an HTTP response)"
    )]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let mut ws = ws;
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    lock(&rooms)
        .entry(path.clone())
        .or_default()
        .members
        .insert(id, tx.clone());
    // One task per connection, like the hub: read, or write what others relayed to us.
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(m) = out else { break };
                if ws.feed(m).await.is_err() {
                    break;
                }
                let mut failed = false;
                while let Ok(m) = rx.try_recv() {
                    failed |= ws.feed(m).await.is_err();
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
            incoming = ws.next() => {
                let Some(Ok(msg)) = incoming else { break };
                let Message::Binary(data) = msg else {
                    if msg.is_close() {
                        break;
                    }
                    continue;
                };
                if data.starts_with(&STEP1) {
                    let step2 = lock(&rooms).get_mut(&path).map(state).unwrap_or_default();
                    if step2.len() < DIRECT_BYTES {
                        let _ = tx.send(Message::Binary(step2));
                    } else if send_direct(&mut ws, &step2).await.is_err() {
                        break;
                    }
                    continue;
                }
                let update = match Sync::decode(&mut Decoder::new(data.clone())) {
                    Ok(Sync::Update(u)) => Some(u),
                    _ => None,
                };
                let mut rooms = lock(&rooms);
                if let Some(room) = rooms.get_mut(&path) {
                    if let Some(u) = update {
                        room.updates.push(u);
                        room.step2 = None;
                    }
                    for (other, member) in &room.members {
                        if *other != id {
                            let _ = member.send(Message::Binary(data.clone()));
                        }
                    }
                }
            }
        }
    }
    {
        let mut rooms = lock(&rooms);
        if let Some(room) = rooms.get_mut(&path) {
            room.members.remove(&id);
            if room.members.is_empty() {
                rooms.remove(&path);
            }
        }
    }
}

/// The room's SyncStep2: every update it relayed, merged once and kept until the next.
fn state(room: &mut Room) -> Bytes {
    room.step2
        .get_or_insert_with(|| {
            let updates: Vec<&[u8]> = room.updates.iter().map(|u| &u[..]).collect();
            // What a client sent may not merge; then the joiner gets nothing, like a relay.
            let merged = yrs::merge_updates_v1(&updates).unwrap_or_else(|_| vec![0, 0]);
            Sync::SyncStep2(Bytes::from(merged)).encode()
        })
        .clone()
}

/// Writes `msg` straight to the TCP stream, after whatever tungstenite still holds, as
/// fragments of `DIRECT_BYTES`: each fragment's header and its slice of `msg` in one vectored
/// write. (Clients read fragments far more cheaply than one frame of megabytes.)
async fn send_direct(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    msg: &[u8],
) -> std::io::Result<()> {
    ws.flush().await.map_err(std::io::Error::other)?;
    let stream = ws.get_mut();
    let count = msg.len().div_ceil(DIRECT_BYTES);
    for (i, chunk) in msg.chunks(DIRECT_BYTES).enumerate() {
        let opcode = if i == 0 { 0x2 } else { 0x0 };
        let fin = if i + 1 == count { 0x80 } else { 0 };
        let mut header = vec![fin | opcode];
        match chunk.len() {
            n if n < 126 => header.push(n as u8),
            n if n <= 0xFFFF => {
                header.push(126);
                header.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                header.push(127);
                header.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut slices = [IoSlice::new(&header), IoSlice::new(chunk)];
        let mut left = &mut slices[..];
        while !left.is_empty() {
            let n = stream.write_vectored(left).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut left, n);
        }
    }
    Ok(())
}

fn lock(rooms: &Rooms) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
    rooms.lock().unwrap_or_else(|p| p.into_inner())
}
