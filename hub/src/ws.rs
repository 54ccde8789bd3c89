//! The WebSocket upgrade, done here rather than by axum's `WebSocketUpgrade`, so the hub
//! owns the tungstenite stream and can send large messages as fragments.
//!
//! Why: tungstenite formats each outgoing frame into a write buffer that keeps its capacity
//! for the life of the connection. Sent whole, one 5 MB SyncStep2 to a joiner leaves 5 MB
//! behind in that connection (measured: 100 idle joiners of a 5 MB room held 3.8 MB each).
//! Messages above [`FRAGMENT_BYTES`] go out as a binary frame plus continuation frames of at
//! most that size, so no connection's buffer outgrows it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::ApiError;

/// A server-side WebSocket.
pub type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

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
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    serve(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
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

/// Feeds a binary message, as fragments of at most [`FRAGMENT_BYTES`] when it is larger.
pub async fn feed_binary(socket: &mut WebSocket, data: Bytes) -> Result<(), tungstenite::Error> {
    if data.len() <= FRAGMENT_BYTES {
        return socket.feed(Message::Binary(data)).await;
    }
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + FRAGMENT_BYTES).min(data.len());
        let opcode = if offset == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(data.slice(offset..end), opcode, end == data.len());
        socket.feed(Message::Frame(frame)).await?;
        offset = end;
    }
    Ok(())
}
