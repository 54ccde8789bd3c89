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
    /// An AI run's status changed (`queued`, `running`, `writing`, and the end states).
    #[serde(rename = "ai.run")]
    AiRun {
        /// The run.
        run: String,
        /// Its status.
        status: String,
        /// The `id` of the [`AiAsk`] that started it, if this connection asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        /// Runs ahead of it at the same position (while `queued`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued_behind: Option<u32>,
    },
    /// An AI run ended: `done`, `cancelled`, `failed`, `interrupted`.
    #[serde(rename = "ai.done")]
    AiDone {
        /// The run.
        run: String,
        /// How it ended.
        status: String,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
    },
    /// An AI request was refused or a run failed.
    #[serde(rename = "ai.error")]
    AiError {
        /// The run, if one was started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
        /// The `id` of the request refused, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        /// `ai_disabled`, `forbidden`, `budget_exhausted`, `rate_limited`, `provider_error`,
        /// `timeout`, `cancelled`, `too_large`, `bad_request`, `not_found`, `unavailable`.
        code: String,
        /// Human-readable explanation (never provider keys or internal error text).
        message: String,
    },
    /// The answer to a [`ClientMessage::Search`]: the same body as `GET /v1/search`.
    #[serde(rename = "search.results")]
    SearchResults {
        /// The request's `id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `{query, mode, semantic, took_ms, results}` (docs/SEARCH.md).
        answer: serde_json::Value,
    },
    /// A search was refused or failed.
    #[serde(rename = "search.error")]
    SearchError {
        /// The request's `id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `bad_request`, `unavailable`, `rate_limited`, `internal`.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
}

/// Where an AI answer goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiTarget {
    /// A new message in the room's chat.
    #[default]
    Chat,
    /// Into the shared document.
    Document,
}

/// How an answer is applied to the document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiApply {
    /// Ordinary content.
    #[default]
    Direct,
    /// Content marked as a suggestion of the run until accepted or rejected.
    Suggest,
}

/// The type of the document's root the answer goes into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiField {
    /// A Y.XmlFragment (ProseMirror/Tiptap): the answer arrives as blocks and marks.
    #[default]
    Xml,
    /// A Y.Text (CodeMirror, Monaco, plain text): the answer arrives as text.
    Text,
}

/// A request to the assistant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiAsk {
    /// The client's id for this request, echoed in the answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the asker wants.
    pub prompt: String,
    /// `chat` (default) or `document`.
    #[serde(default)]
    pub target: AiTarget,
    /// The document root's name (Tiptap's Collaboration extension uses `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The root's type: `xml` (default) or `text`.
    #[serde(default)]
    pub field_type: AiField,
    /// Where to write: a Yjs relative position, base64 of `Y.encodeRelativePosition`.
    /// Absent: the end of the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Replace the text between two relative positions (base64) of one text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[String; 2]>,
    /// `direct` (default) or `suggest`.
    #[serde(default)]
    pub apply: AiApply,
    /// A model among those the tenant allows; absent: the tenant's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The chat message this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// On cancel, remove the partial answer instead of keeping it marked `cancelled`.
    #[serde(default)]
    pub revert_on_cancel: bool,
}

/// A search of the rooms the session's token grants (docs/SEARCH.md): the same query as
/// `GET /v1/search`, answered with `search.results` or `search.error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The client's id for this request, echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The words (1-256 characters).
    pub q: String,
    /// `text`, `semantic` or `hybrid` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Most results, 1-50 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only rooms whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_prefix: Option<String>,
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
    /// Ask the assistant.
    #[serde(rename = "ai.ask")]
    AiAsk(AiAsk),
    /// Stop a run of this room (write access).
    #[serde(rename = "ai.cancel")]
    AiCancel {
        /// The run.
        run: String,
    },
    /// Remove a run's content (write access).
    #[serde(rename = "ai.revert")]
    AiRevert {
        /// The run.
        run: String,
    },
    /// Accept a suggestion: its mark goes, its content stays (write access).
    #[serde(rename = "ai.accept")]
    AiAccept {
        /// The run.
        run: String,
    },
    /// Reject a suggestion: its content goes (write access).
    #[serde(rename = "ai.reject")]
    AiReject {
        /// The run.
        run: String,
    },
    /// Search the rooms the session's token grants (read access is enough).
    Search(SearchRequest),
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
            ServerMessage::AiRun {
                run: "r1".into(),
                status: "queued".into(),
                request: Some("q".into()),
                queued_behind: Some(1),
            },
            ServerMessage::AiDone {
                run: "r1".into(),
                status: "done".into(),
                prompt_tokens: 3,
                completion_tokens: 4,
            },
            ServerMessage::AiError {
                run: None,
                request: None,
                code: "forbidden".into(),
                message: "read-only".into(),
            },
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
    fn ai_frames_decode_with_defaults() {
        let m = decode_client(r#"{"v":1,"type":"ai.ask","prompt":"hi"}"#).expect("decodes");
        let ClientMessage::AiAsk(ask) = m else {
            panic!("not an ask: {m:?}")
        };
        assert_eq!(ask.prompt, "hi");
        assert_eq!(ask.target, AiTarget::Chat);
        assert_eq!(ask.apply, AiApply::Direct);
        let m = decode_client(
            r#"{"v":1,"type":"ai.ask","prompt":"p","target":"document","apply":"suggest","field":"default","position":"AQID"}"#,
        )
        .expect("decodes");
        assert!(matches!(
            m,
            ClientMessage::AiAsk(AiAsk {
                target: AiTarget::Document,
                apply: AiApply::Suggest,
                ..
            })
        ));
        assert_eq!(
            decode_client(r#"{"v":1,"type":"ai.cancel","run":"r"}"#).expect("decodes"),
            ClientMessage::AiCancel { run: "r".into() }
        );
        assert!(decode_client(r#"{"v":1,"type":"ai.ask"}"#).is_err());
        assert!(
            decode_client(r#"{"v":1,"type":"ai.ask","prompt":"p","target":"elsewhere"}"#).is_err()
        );
        assert!(
            encode_server(&ServerMessage::AiDone {
                run: "r".into(),
                status: "done".into(),
                prompt_tokens: 1,
                completion_tokens: 2
            })
            .starts_with(r#"{"v":1,"type":"ai.done""#)
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
