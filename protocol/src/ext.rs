//! The JSON extension envelope: text frames exchanged only with connections that opted in
//! (`?ext=1` or the `chorus.v1` subprotocol). Stock Yjs clients never see them.
//!
//! Every frame is one object with a protocol version `v` and a `type` tag:
//! `{"v":1,"type":"saved","updates":3}`. Unknown fields are ignored so servers can add fields
//! without breaking clients; an unknown `type` or a different `v` is an error the receiver
//! reports instead of guessing.

use serde::{Deserialize, Serialize};

/// The envelope version this crate speaks.
pub const VERSION: u32 = 1;

/// The WebSocket subprotocol that opts a connection in to extension messages.
pub const SUBPROTOCOL: &str = "chorus.v1";

/// The small set of error codes clients see, shared by HTTP bodies and extension errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or message was malformed.
    BadRequest,
    /// No valid credentials.
    Unauthenticated,
    /// Credentials valid but not allowed to do this.
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// Something exceeded a size limit.
    TooLarge,
    /// A rate or quota limit was hit.
    RateLimited,
    /// The service cannot serve this now; retry later.
    Unavailable,
    /// The server failed; details are in its logs, not here.
    Internal,
}

/// Messages the hub sends to opted-in connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once after the upgrade: who the hub thinks you are.
    Welcome {
        /// Room name.
        room: String,
        /// Tenant the room belongs to.
        tenant: String,
        /// `read` or `write`.
        role: String,
        /// The user (`sub` claim), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// The first `updates` document updates this connection sent are durable.
    Saved {
        /// Count of this connection's update messages persisted so far (cumulative).
        updates: u64,
    },
    /// Something the client sent was refused.
    Error {
        /// Machine-readable class.
        code: ErrorCode,
        /// Human-readable explanation (never internal error text).
        message: String,
    },
    /// The session now runs under the token of a [`ClientMessage::Auth`], until `expires`
    /// (seconds since the epoch).
    Authenticated {
        /// The new token's expiry.
        expires: u64,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// Echo of the ping's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

/// Messages opted-in connections may send as text frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Liveness check; the hub answers with `pong`.
    Ping {
        /// Optional id echoed back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A fresh token for this session, sent before the current one expires: the session goes
    /// on under it (same tenant, room and role), or closes with 4401 / 4403.
    Auth {
        /// The new JWT.
        token: String,
    },
}

/// A versioned envelope around a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version; always [`VERSION`] when sent by this crate.
    pub v: u32,
    /// The message.
    #[serde(flatten)]
    pub msg: T,
}

/// Why a text frame was not a message this version understands.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not one of the known message shapes.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
}

/// Encodes a server message as the JSON text of one frame.
pub fn encode_server(msg: &ServerMessage) -> String {
    let env = Envelope { v: VERSION, msg };
    // Serializing these plain enums cannot fail (no maps with non-string keys, no floats).
    serde_json::to_string(&env).unwrap_or_else(|_| String::from(r#"{"v":1,"type":"error"}"#))
}

/// Decodes a client text frame.
pub fn decode_client(text: &str) -> Result<ClientMessage, EnvelopeError> {
    decode::<ClientMessage>(text)
}

/// Decodes a server text frame (used by clients).
pub fn decode_server(text: &str) -> Result<ServerMessage, EnvelopeError> {
    decode::<ServerMessage>(text)
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, EnvelopeError> {
    let env: Envelope<T> = serde_json::from_str(text)?;
    if env.v != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(env.v));
    }
    Ok(env.msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_roundtrip() {
        let msgs = [
            ServerMessage::Saved { updates: 3 },
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                message: "read-only".into(),
            },
            ServerMessage::Welcome {
                room: "r".into(),
                tenant: "default".into(),
                role: "write".into(),
                user: None,
            },
            ServerMessage::Pong { id: Some(1) },
        ];
        for m in msgs {
            let text = encode_server(&m);
            assert_eq!(decode_server(&text).expect("decodes"), m);
        }
        assert_eq!(
            encode_server(&ServerMessage::Saved { updates: 3 }),
            r#"{"v":1,"type":"saved","updates":3}"#
        );
    }

    #[test]
    fn bad_client_frames_are_errors() {
        assert!(decode_client("nope").is_err());
        assert!(decode_client(r#"{"v":1,"type":"launch"}"#).is_err());
        assert!(matches!(
            decode_client(r#"{"v":2,"type":"ping"}"#),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        assert_eq!(
            decode_client(r#"{"v":1,"type":"ping","id":4,"extra":true}"#).expect("decodes"),
            ClientMessage::Ping { id: Some(4) }
        );
    }
}
