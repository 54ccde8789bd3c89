//! The WebSocket upgrade, done here rather than by axum's `WebSocketUpgrade`, so the hub
//! owns the tungstenite stream and can send large messages as fragments.
//!
//! Why: tungstenite formats each outgoing frame into a write buffer that keeps its capacity
//! for the life of the connection. Sent whole, one 5 MB SyncStep2 to a joiner leaves 5 MB
//! behind in that connection (measured: 100 idle joiners of a 5 MB room held 3.8 MB each).
//! Messages above [`FRAGMENT_BYTES`] go out as a binary frame plus continuation frames of at
//! most that size, so no connection's buffer outgrows it. Those large messages are written
//! straight to the socket, not through tungstenite's buffer: a 5 MB state sent to 500 joiners
//! was 2.5 GB copied once more for nothing (see [`feed_binary`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::ApiError;

/// A server-side WebSocket: tungstenite's stream, plus whether a frame written around it was
/// cut short (see [`WebSocket::torn`]). Derefs to the stream for reading and writing.
pub struct WebSocket {
    inner: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    torn: bool,
}

impl WebSocket {
    /// A large message written directly to the socket was interrupted (its future dropped or
    /// the write failed) part-way through a frame. Nothing more may be written: the peer
    /// would read it as the rest of that frame. The connection can only be dropped.
    pub fn torn(&self) -> bool {
        self.torn
    }
}

impl std::ops::Deref for WebSocket {
    type Target = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for WebSocket {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// The WebSocket message type.
pub use tungstenite::Message;

/// Largest frame the hub writes: bigger messages are fragmented (RFC 6455 section 5.4).
pub const FRAGMENT_BYTES: usize = 64 << 10;

/// A validated upgrade request.
pub struct Upgrade {
    key: HeaderValue,
    protocols: Vec<String>,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest("expected a websocket upgrade".into());
        if parts.method != axum::http::Method::GET
            || !header_has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has_token(&parts.headers, header::UPGRADE, "websocket")
            || parts
                .headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(bad());
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(bad)?;
        let protocols = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(bad)?;
        Ok(Upgrade {
            key,
            protocols,
            on_upgrade,
        })
    }
}

impl Upgrade {
    /// The subprotocols the client asked for, in its order.
    pub fn requested_protocols(&self) -> impl Iterator<Item = &str> {
        self.protocols.iter().map(String::as_str)
    }

    /// Answers 101 (selecting `protocol`, if any) and runs `serve` on the socket once the
    /// connection is switched.
    pub fn respond<F, Fut>(
        self,
        protocol: Option<&str>,
        config: WebSocketConfig,
        serve: F,
    ) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        // Boxed until it is called: a closure captured by the task keeps its slot for the
        // task's whole life even after it has been consumed, and it holds the session.
        let serve: Box<dyn FnOnce(WebSocket) -> Fut + Send> = Box::new(serve);
        // Boxed for the same reason: captured, it would keep 64 bytes for the task's life.
        let config = Box::new(config);
        tokio::spawn(async move {
            // Not a `match` around the whole task: its scrutinee (48 bytes) would stay in the
            // state every connection keeps.
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let inner = {
                // Moved into a local that ends here: a box moved out of keeps its allocation
                // until its owner goes, and the captured one would last as long as the task.
                let config = config;
                WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(*config),
                )
                .await
            };
            serve(WebSocket { inner, torn: false }).await;
        });
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
        )
            .into_response();
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        if let Ok(v) = HeaderValue::from_str(&accept) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        response
    }
}

/// Feeds a binary message: `prefix` (a Hocuspocus document address, or empty) followed by
/// `data`.
///
/// Up to [`FRAGMENT_BYTES`] it is one frame through tungstenite's buffer, like every other.
/// A larger one is written by this function straight to the socket as a binary frame and
/// continuation frames of at most that size, each header and its slices of `prefix` and
/// `data` in one vectored write: no copy into tungstenite's buffer (which would also keep
/// that capacity), and no joined copy of the prefix and the data.
pub async fn feed_binary(
    socket: &mut WebSocket,
    prefix: &[u8],
    data: Bytes,
) -> Result<(), tungstenite::Error> {
    let total = prefix.len() + data.len();
    if total <= FRAGMENT_BYTES {
        let message = if prefix.is_empty() {
            data
        } else {
            chorus_protocol::hocuspocus::wrap(prefix, &data)
        };
        return socket.feed(Message::Binary(message)).await;
    }
    // Boxed: rare, and its future would enlarge every write's.
    Box::pin(write_fragments(socket, prefix, data)).await
}

async fn write_fragments(
    socket: &mut WebSocket,
    prefix: &[u8],
    data: Bytes,
) -> Result<(), tungstenite::Error> {
    let total = prefix.len() + data.len();
    // What tungstenite holds goes first, so frames stay in order.
    socket.flush().await?;
    socket.torn = true;
    let io = socket.inner.get_mut();
    let mut offset = 0;
    while offset < total {
        let end = (offset + FRAGMENT_BYTES).min(total);
        let header = frame_header(offset == 0, end == total, end - offset);
        let mut parts = [
            std::io::IoSlice::new(&header.0[..header.1]),
            std::io::IoSlice::new(slice_of(prefix, 0, offset, end)),
            std::io::IoSlice::new(slice_of(&data, prefix.len(), offset, end)),
        ];
        write_all_vectored(io, &mut parts).await?;
        offset = end;
    }
    socket.torn = false;
    Ok(())
}

/// The part of `buf` (which starts at `start` in the message) that lies in `from..to`.
fn slice_of(buf: &[u8], start: usize, from: usize, to: usize) -> &[u8] {
    let lo = from.clamp(start, start + buf.len()) - start;
    let hi = to.clamp(start, start + buf.len()) - start;
    &buf[lo..hi]
}

/// An unmasked (server) frame header, formatted by tungstenite: binary for the first
/// fragment, continuation after; FIN on the last.
fn frame_header(first: bool, fin: bool, len: usize) -> ([u8; 10], usize) {
    let header = FrameHeader {
        is_final: fin,
        opcode: OpCode::Data(if first { Data::Binary } else { Data::Continue }),
        ..FrameHeader::default()
    };
    let mut buf = [0u8; 10];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    // Ten bytes hold any unmasked header (2 + an 8-byte length), so this cannot fail.
    let _ = header.format(len as u64, &mut out);
    let n = out.position() as usize;
    (buf, n)
}

async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    mut parts: &mut [std::io::IoSlice<'_>],
) -> Result<(), tungstenite::Error> {
    use tokio::io::AsyncWriteExt;
    while !parts.is_empty() {
        let n = io.write_vectored(parts).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        std::io::IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_use_the_shortest_length_form() {
        assert_eq!(frame_header(true, true, 5).0[..2], [0x82, 5]);
        assert_eq!(frame_header(true, false, 126).0[..4], [0x02, 126, 0, 126]);
        assert_eq!(
            frame_header(false, false, 65535).0[..4],
            [0x00, 126, 0xff, 0xff]
        );
        let (h, n) = frame_header(false, true, 65536);
        assert_eq!((h[0], h[1], n), (0x80, 127, 10));
        assert_eq!(h[2..10], 65536u64.to_be_bytes());
    }

    #[test]
    fn fragments_take_their_slices_of_prefix_and_data() {
        let prefix = b"abc";
        let data = b"defghij";
        // message = abcdefghij; fragment 2..5 = "cde"
        assert_eq!(slice_of(prefix, 0, 2, 5), b"c");
        assert_eq!(slice_of(data, 3, 2, 5), b"de");
        // a fragment wholly inside data
        assert_eq!(slice_of(prefix, 0, 5, 8), b"");
        assert_eq!(slice_of(data, 3, 5, 8), b"fgh");
    }
}
