//! `chorus-bare-relay`: the floor for the peer comparison, not a server anyone should run.
//!
//! It speaks just enough of the y-websocket dialect for the load tester's `connect` and
//! `edit` scenarios: a client's SyncStep1 gets an empty SyncStep2 (so it reports synced),
//! and every other binary message is relayed, unread, to the other sockets on the same path.
//! No CRDT, no document, no persistence, no auth, no limits: what it costs per delivery, per
//! connection and per set-up is what the kernel and a tokio + tungstenite stack cost on this
//! machine, which no real Yjs server can undercut. `loadtest/peers/compare.sh` runs it as
//! `bare-relay` beside the real servers, so ratios against it show how close each comes.
//!
//! Rooms fill in order and every client joins before editing, so relaying alone converges;
//! a late joiner would get nothing, which is fine for a floor.
//!
//! Usage: `chorus-bare-relay [ADDR]` (default 127.0.0.1:18090; loopback addresses only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Rooms = Arc<Mutex<HashMap<String, HashMap<u64, mpsc::UnboundedSender<Message>>>>>;

/// y-sync SyncStep1 starts `0, 0`; the reply is SyncStep2 (`0, 1`) with an empty update.
const STEP1: [u8; 2] = [0, 0];
const EMPTY_STEP2: [u8; 5] = [0, 1, 2, 0, 0];

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
    // The signature is tungstenite's (its error type is an HTTP response).
    #[allow(clippy::result_large_err)]
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
                    let _ = tx.send(Message::Binary(EMPTY_STEP2.to_vec().into()));
                    continue;
                }
                let rooms = lock(&rooms);
                if let Some(members) = rooms.get(&path) {
                    for (other, member) in members {
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
        if let Some(members) = rooms.get_mut(&path) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(&path);
            }
        }
    }
}

fn lock(
    rooms: &Rooms,
) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, mpsc::UnboundedSender<Message>>>> {
    rooms.lock().unwrap_or_else(|p| p.into_inner())
}
