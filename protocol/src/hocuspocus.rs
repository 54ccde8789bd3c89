//! The Hocuspocus dialect (what `@hocuspocus/provider` speaks), as far as a server and a
//! client need it.
//!
//! One WebSocket carries many documents: every message starts with the document's *address*
//! (a varstring: the document name, or `name\0session` for providers with `sessionAwareness`),
//! then a message type. Types 0 (sync), 1 (awareness) and 3 (query-awareness) are laid out
//! exactly like the y-websocket messages of the same numbers, so after the address the rest of
//! such a message *is* a y-websocket frame: the hub decodes and encodes those with
//! [`crate::sync`] and only adds or strips the address. The other types are Hocuspocus' own:
//!
//! | type | name | layout after the type |
//! |---|---|---|
//! | 2 | auth | `0, token, [provider version]` (client), `1, reason` (denied), `2, scope` (granted) |
//! | 4 | sync reply | like sync; servers send it to each other, never to providers |
//! | 5 | stateless | `payload` (varstring) |
//! | 6 | broadcast stateless | server-internal |
//! | 7 | close | `[reason]`: the client detaches the document / the server drops it |
//! | 8 | sync status | `1` applied, `0` refused: one per sync step 2 or update received |
//! | 9, 10 | ping, pong | connection level: the single byte, no address |

use bytes::{BufMut, Bytes, BytesMut};

use crate::lib0::{self, DecodeError, Decoder};

/// Message type numbers.
pub mod kind {
    /// A y-sync message (step 1, step 2, update).
    pub const SYNC: u64 = 0;
    /// An awareness update.
    pub const AWARENESS: u64 = 1;
    /// Authentication.
    pub const AUTH: u64 = 2;
    /// A request for every awareness state.
    pub const QUERY_AWARENESS: u64 = 3;
    /// A sync message between servers.
    pub const SYNC_REPLY: u64 = 4;
    /// An application message for the server.
    pub const STATELESS: u64 = 5;
    /// A server-internal broadcast.
    pub const BROADCAST_STATELESS: u64 = 6;
    /// Detach / drop one document.
    pub const CLOSE: u64 = 7;
    /// Acknowledges one received sync step 2 or update.
    pub const SYNC_STATUS: u64 = 8;
    /// Connection-level ping (server to client), one byte.
    pub const PING: u8 = 9;
    /// Connection-level pong (client to server), one byte.
    pub const PONG: u8 = 10;
}

/// Separates the document name from a provider's session id in an address.
pub const SESSION_SEPARATOR: char = '\0';

/// One decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The connection-level pong.
    Pong,
    /// The connection-level ping.
    Ping,
    /// A message for one document.
    Doc {
        /// The address exactly as sent (replies must carry it back unchanged).
        address: String,
        /// What it says.
        body: DocMessage,
    },
}

/// The part of a message after its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocMessage {
    /// Types 0, 1 and 3 (and 4, read as 0): the y-websocket frame that follows the address.
    YSync(Bytes),
    /// A token for this document, and the provider's version if it sent one.
    Auth {
        /// The token; empty when the provider has none.
        token: String,
        /// `@hocuspocus/provider`'s version (4.x sends it).
        provider_version: Option<String>,
    },
    /// An application message.
    Stateless(String),
    /// The client detaches the document.
    Close,
    /// Anything else a client may not send (auth replies, sync status, broadcast).
    Unsupported(u64),
}

impl Incoming {
    /// Decodes one client frame. Never panics; malformed input is an error.
    pub fn decode(frame: Bytes) -> Result<Incoming, DecodeError> {
        match frame.as_ref() {
            [kind::PONG] => return Ok(Incoming::Pong),
            [kind::PING] => return Ok(Incoming::Ping),
            [] => return Err(DecodeError::EmptyFrame),
            _ => {}
        }
        let mut d = Decoder::new(frame.clone());
        let address = string(&mut d)?;
        let type_at = frame.len() - d.remaining();
        let body = match d.read_var_uint()? {
            // From the type byte on, these are y-websocket frames of the same type numbers.
            kind::SYNC | kind::AWARENESS | kind::QUERY_AWARENESS => {
                DocMessage::YSync(frame.slice(type_at..))
            }
            kind::SYNC_REPLY => {
                let mut out = BytesMut::with_capacity(d.remaining() + 1);
                lib0::write_var_uint(&mut out, kind::SYNC);
                out.put_slice(&d.rest());
                DocMessage::YSync(out.freeze())
            }
            kind::AUTH => match d.read_var_uint()? {
                0 => {
                    let token = string(&mut d)?;
                    let provider_version = if d.is_empty() {
                        None
                    } else {
                        Some(string(&mut d)?)
                    };
                    DocMessage::Auth {
                        token,
                        provider_version,
                    }
                }
                other => return Err(DecodeError::UnknownAuthType(other)),
            },
            kind::STATELESS => DocMessage::Stateless(if d.is_empty() {
                String::new()
            } else {
                string(&mut d)?
            }),
            kind::CLOSE => DocMessage::Close,
            other => DocMessage::Unsupported(other),
        };
        Ok(Incoming::Doc { address, body })
    }
}

fn string(d: &mut Decoder) -> Result<String, DecodeError> {
    let b = d.read_var_string()?;
    // read_var_string validated the UTF-8 already.
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The document name of an address (`name` or `name\0session`).
pub fn document_name(address: &str) -> &str {
    address
        .split_once(SESSION_SEPARATOR)
        .map_or(address, |(name, _)| name)
}

/// The encoded address: what every message about that document starts with.
pub fn address_prefix(address: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(address.len() + 4);
    lib0::write_var_string(&mut out, address);
    out.freeze()
}

fn message(prefix: &[u8], kind: u64, extra: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + 16);
    out.put_slice(prefix);
    lib0::write_var_uint(&mut out, kind);
    extra(&mut out);
    out.freeze()
}

/// `2, 2, scope`: the token was accepted; `readonly` or `read-write`.
pub fn authenticated(prefix: &[u8], read_only: bool) -> Bytes {
    message(prefix, kind::AUTH, |o| {
        lib0::write_var_uint(o, 2);
        lib0::write_var_string(o, if read_only { "readonly" } else { "read-write" });
    })
}

/// `2, 1, reason`: the token was refused (the provider fires `authenticationFailed`).
pub fn permission_denied(prefix: &[u8], reason: &str) -> Bytes {
    message(prefix, kind::AUTH, |o| {
        lib0::write_var_uint(o, 1);
        lib0::write_var_string(o, reason);
    })
}

/// `8, 1|0`: one received step 2 or update was applied (1) or refused (0).
pub fn sync_status(prefix: &[u8], applied: bool) -> Bytes {
    message(prefix, kind::SYNC_STATUS, |o| {
        lib0::write_var_uint(o, u64::from(applied));
    })
}

/// `5, payload`: a stateless message (the assistant's JSON frames, for Hocuspocus clients).
pub fn stateless(prefix: &[u8], payload: &str) -> Bytes {
    message(prefix, kind::STATELESS, |o| {
        lib0::write_var_string(o, payload)
    })
}

/// `7, reason`: the server drops the document.
pub fn close(prefix: &[u8], reason: &str) -> Bytes {
    message(prefix, kind::CLOSE, |o| lib0::write_var_string(o, reason))
}

/// `2, 0, token, version`: what a provider sends first for each document.
pub fn auth(prefix: &[u8], token: &str, provider_version: &str) -> Bytes {
    message(prefix, kind::AUTH, |o| {
        lib0::write_var_uint(o, 0);
        lib0::write_var_string(o, token);
        lib0::write_var_string(o, provider_version);
    })
}

/// Prefixes a y-websocket frame (sync, awareness, query-awareness) with an address.
pub fn wrap(prefix: &[u8], frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + frame.len());
    out.put_slice(prefix);
    out.put_slice(frame);
    out.freeze()
}

/// The connection-level ping frame.
pub const PING_FRAME: &[u8] = &[kind::PING];
/// The connection-level pong frame.
pub const PONG_FRAME: &[u8] = &[kind::PONG];

/// Whether a provider of `version` (e.g. "4.8.0") answers the connection-level ping. Older
/// providers would try to read it as an address and log an error.
pub fn answers_ping(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (4, 8),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Message;
    use proptest::prelude::*;

    #[test]
    fn auth_round_trips_with_and_without_version() {
        let p = address_prefix("notes\0abc");
        let m = Incoming::decode(auth(&p, "tok", "4.8.0")).expect("valid");
        assert_eq!(
            m,
            Incoming::Doc {
                address: "notes\0abc".into(),
                body: DocMessage::Auth {
                    token: "tok".into(),
                    provider_version: Some("4.8.0".into())
                }
            }
        );
        // Older providers send no version.
        let mut old = BytesMut::new();
        old.put_slice(&p);
        lib0::write_var_uint(&mut old, kind::AUTH);
        lib0::write_var_uint(&mut old, 0);
        lib0::write_var_string(&mut old, "");
        let m = Incoming::decode(old.freeze()).expect("valid");
        assert!(matches!(
            m,
            Incoming::Doc { body: DocMessage::Auth { ref token, provider_version: None }, .. } if token.is_empty()
        ));
    }

    #[test]
    fn sync_messages_are_y_websocket_frames_after_the_address() {
        let p = address_prefix("doc");
        let inner = Message::Update(Bytes::from_static(&[0, 0])).encode();
        let m = Incoming::decode(wrap(&p, &inner)).expect("valid");
        assert_eq!(
            m,
            Incoming::Doc {
                address: "doc".into(),
                body: DocMessage::YSync(inner.clone())
            }
        );
        // A sync reply is read as a sync message.
        let mut reply = BytesMut::new();
        reply.put_slice(&p);
        reply.put_u8(4);
        reply.put_slice(&inner[1..]);
        let m = Incoming::decode(reply.freeze()).expect("valid");
        assert!(matches!(m, Incoming::Doc { body: DocMessage::YSync(ref b), .. } if *b == inner));
    }

    #[test]
    fn connection_level_and_other_types() {
        assert_eq!(
            Incoming::decode(Bytes::from_static(PONG_FRAME)),
            Ok(Incoming::Pong)
        );
        assert_eq!(
            Incoming::decode(Bytes::from_static(PING_FRAME)),
            Ok(Incoming::Ping)
        );
        assert_eq!(Incoming::decode(Bytes::new()), Err(DecodeError::EmptyFrame));
        let p = address_prefix("d");
        let closed = Incoming::decode(message(&p, kind::CLOSE, |_| {})).expect("valid");
        assert!(matches!(
            closed,
            Incoming::Doc {
                body: DocMessage::Close,
                ..
            }
        ));
        let status = Incoming::decode(sync_status(&p, true)).expect("valid");
        assert!(matches!(
            status,
            Incoming::Doc {
                body: DocMessage::Unsupported(kind::SYNC_STATUS),
                ..
            }
        ));
        // A server's auth reply sent by a client is refused.
        assert!(Incoming::decode(authenticated(&p, true)).is_err());
        assert!(Incoming::decode(permission_denied(&p, "no")).is_err());
    }

    #[test]
    fn addresses_and_versions() {
        assert_eq!(document_name("a/b"), "a/b");
        assert_eq!(document_name("a/b\0sess"), "a/b");
        assert!(answers_ping("4.8.0"));
        assert!(answers_ping("5.0.1"));
        assert!(!answers_ping("4.7.2"));
        assert!(!answers_ping("3.4.4"));
        assert!(!answers_ping("chorus"));
        assert!(!answers_ping(""));
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Incoming::decode(Bytes::from(data));
        }
    }
}
