//! The y-websocket (y-sync) messages.
//!
//! ```text
//! message      = varuint(type) payload
//! type 0 sync  = varuint(0) var_bytes(state vector)   SyncStep1
//!              | varuint(1) var_bytes(update)         SyncStep2
//!              | varuint(2) var_bytes(update)         Update
//! type 1       = var_bytes(awareness update)          Awareness
//! type 2 auth  = varuint(0) var_string(reason)        PermissionDenied
//! type 3       = (nothing)                            QueryAwareness
//! ```
//!
//! A frame may hold several messages back to back; stock clients send and expect one per frame,
//! so the encoders here produce one message per `Bytes`.

use bytes::{Bytes, BytesMut};

use crate::lib0::{
    DecodeError, Decoder, var_uint_len, write_var_bytes, write_var_string, write_var_uint,
};

/// Top-level message type: document sync.
pub const MSG_SYNC: u64 = 0;
/// Top-level message type: awareness update.
pub const MSG_AWARENESS: u64 = 1;
/// Top-level message type: auth (permission denied).
pub const MSG_AUTH: u64 = 2;
/// Top-level message type: ask the peer to send all awareness states.
pub const MSG_QUERY_AWARENESS: u64 = 3;

/// Sync sub-type: state vector of the sender.
pub const SYNC_STEP1: u64 = 0;
/// Sync sub-type: the update the receiver of step 1 was missing.
pub const SYNC_STEP2: u64 = 1;
/// Sync sub-type: an incremental update.
pub const SYNC_UPDATE: u64 = 2;

/// Auth sub-type: the peer may not do what it tried (y-protocols `messagePermissionDenied`).
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// One decoded y-sync message. Payloads are zero-copy slices of the frame they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender's encoded state vector; the receiver answers with [`Message::SyncStep2`].
    SyncStep1(Bytes),
    /// A v1 update holding what the receiver of step 1 lacked.
    SyncStep2(Bytes),
    /// An incremental v1 update.
    Update(Bytes),
    /// An encoded awareness update (see [`crate::awareness`]).
    Awareness(Bytes),
    /// The peer refused something; the reason is human-readable UTF-8.
    PermissionDenied(String),
    /// A request for every awareness state the receiver knows.
    QueryAwareness,
}

impl Message {
    /// Encodes this message as one frame.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends this message to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Message::SyncStep1(p) => sync_into(out, SYNC_STEP1, p),
            Message::SyncStep2(p) => sync_into(out, SYNC_STEP2, p),
            Message::Update(p) => sync_into(out, SYNC_UPDATE, p),
            Message::Awareness(p) => {
                write_var_uint(out, MSG_AWARENESS);
                write_var_bytes(out, p);
            }
            Message::PermissionDenied(reason) => {
                write_var_uint(out, MSG_AUTH);
                write_var_uint(out, AUTH_PERMISSION_DENIED);
                write_var_string(out, reason);
            }
            Message::QueryAwareness => write_var_uint(out, MSG_QUERY_AWARENESS),
        }
    }

    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        let bytes_len = |n: usize| var_uint_len(n as u64) + n;
        match self {
            Message::SyncStep1(p) | Message::SyncStep2(p) | Message::Update(p) => {
                2 + bytes_len(p.len())
            }
            Message::Awareness(p) => 1 + bytes_len(p.len()),
            Message::PermissionDenied(r) => 2 + bytes_len(r.len()),
            Message::QueryAwareness => 1,
        }
    }

    /// Decodes the next message from `d`.
    pub fn decode(d: &mut Decoder) -> Result<Message, DecodeError> {
        match d.read_var_uint()? {
            MSG_SYNC => match d.read_var_uint()? {
                SYNC_STEP1 => Ok(Message::SyncStep1(d.read_var_bytes()?)),
                SYNC_STEP2 => Ok(Message::SyncStep2(d.read_var_bytes()?)),
                SYNC_UPDATE => Ok(Message::Update(d.read_var_bytes()?)),
                other => Err(DecodeError::UnknownSyncType(other)),
            },
            MSG_AWARENESS => Ok(Message::Awareness(d.read_var_bytes()?)),
            MSG_AUTH => match d.read_var_uint()? {
                AUTH_PERMISSION_DENIED => {
                    let reason = d.read_var_string()?;
                    // read_var_string validated UTF-8 already.
                    Ok(Message::PermissionDenied(
                        String::from_utf8_lossy(&reason).into_owned(),
                    ))
                }
                other => Err(DecodeError::UnknownAuthType(other)),
            },
            MSG_QUERY_AWARENESS => Ok(Message::QueryAwareness),
            other => Err(DecodeError::UnknownMessageType(other)),
        }
    }
}

fn sync_into(out: &mut BytesMut, sub: u64, payload: &[u8]) {
    write_var_uint(out, MSG_SYNC);
    write_var_uint(out, sub);
    write_var_bytes(out, payload);
}

/// Iterates over the messages of one frame. After the first error it yields nothing more: the
/// rest of a malformed frame cannot be framed reliably.
#[derive(Debug)]
pub struct FrameMessages {
    decoder: Decoder,
    failed: bool,
    first: bool,
}

impl Iterator for FrameMessages {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.decoder.is_empty() {
            if self.first {
                self.first = false;
                self.failed = true;
                return Some(Err(DecodeError::EmptyFrame));
            }
            return None;
        }
        self.first = false;
        let item = Message::decode(&mut self.decoder);
        self.failed = item.is_err();
        Some(item)
    }
}

/// Walks every message in `frame`. An empty frame yields one [`DecodeError::EmptyFrame`].
pub fn decode_frame(frame: Bytes) -> FrameMessages {
    FrameMessages {
        decoder: Decoder::new(frame),
        failed: false,
        first: true,
    }
}

/// Decodes a whole frame, failing if any message in it is malformed. Use this where a frame must
/// be accepted or refused as a unit (nothing of a bad frame is applied).
pub fn decode_all(frame: Bytes) -> Result<Vec<Message>, DecodeError> {
    decode_frame(frame).collect()
}

/// Decodes an encoded state vector (`varUint(n)` then n pairs of `varUint(client)`,
/// `varUint(clock)`) without trusting its declared count: a few bytes declaring billions of
/// entries would otherwise make a decoder reserve gigabytes. Client ids above 2^53 - 1 and
/// clocks above u32::MAX are refused, as Yjs cannot produce them.
pub fn decode_state_vector(payload: Bytes) -> Result<Vec<(u64, u32)>, DecodeError> {
    let mut d = Decoder::new(payload);
    let n = d.read_var_uint()?;
    // Every entry takes at least two bytes.
    if n > (d.remaining() / 2) as u64 {
        return Err(DecodeError::CountTooLarge(n));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client = d.read_var_uint()?;
        let clock = d.read_var_uint()?;
        if client > crate::lib0::MAX_SAFE_INTEGER {
            return Err(DecodeError::IntegerOutOfRange);
        }
        let clock = u32::try_from(clock).map_err(|_| DecodeError::IntegerOutOfRange)?;
        out.push((client, clock));
    }
    if !d.is_empty() {
        return Err(DecodeError::CountTooLarge(n));
    }
    Ok(out)
}

/// Checks the declared client count at the head of a v1 update against the bytes that follow
/// (each client section takes at least three bytes), before a CRDT decoder sizes buffers by it.
pub fn check_update_header(payload: &Bytes) -> Result<(), DecodeError> {
    let mut d = Decoder::new(payload.clone());
    let n = d.read_var_uint()?;
    if n > (d.remaining() / 3) as u64 {
        return Err(DecodeError::CountTooLarge(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_kinds() -> Vec<Message> {
        vec![
            Message::SyncStep1(Bytes::from_static(&[0])),
            Message::SyncStep2(Bytes::from_static(&[0, 0])),
            Message::Update(Bytes::from_static(&[1, 2, 3])),
            Message::Awareness(Bytes::from_static(&[1, 5, 1, 2, b'{', b'}'])),
            Message::PermissionDenied("read-only".into()),
            Message::QueryAwareness,
        ]
    }

    #[test]
    fn every_kind_roundtrips_with_exact_length() {
        for m in all_kinds() {
            let enc = m.encode();
            assert_eq!(enc.len(), m.encoded_len(), "{m:?}");
            assert_eq!(decode_all(enc).expect("decodes"), vec![m]);
        }
    }

    #[test]
    fn matches_y_protocols_bytes() {
        // y-protocols writeSyncStep1 of an empty doc: [0, 0, 1, 0].
        assert_eq!(
            &Message::SyncStep1(Bytes::from_static(&[0])).encode()[..],
            &[0, 0, 1, 0]
        );
        // writeUpdate of an empty update [0, 0]: [0, 2, 2, 0, 0].
        assert_eq!(
            &Message::Update(Bytes::from_static(&[0, 0])).encode()[..],
            &[0, 2, 2, 0, 0]
        );
        assert_eq!(&Message::QueryAwareness.encode()[..], &[3]);
    }

    #[test]
    fn several_messages_in_one_frame() {
        let mut buf = BytesMut::new();
        for m in all_kinds() {
            m.encode_into(&mut buf);
        }
        assert_eq!(decode_all(buf.freeze()).expect("decodes"), all_kinds());
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(decode_all(Bytes::new()), Err(DecodeError::EmptyFrame));
        assert_eq!(
            decode_all(Bytes::from_static(&[9])),
            Err(DecodeError::UnknownMessageType(9))
        );
        assert_eq!(
            decode_all(Bytes::from_static(&[0, 7, 0])),
            Err(DecodeError::UnknownSyncType(7))
        );
        assert_eq!(
            decode_all(Bytes::from_static(&[0, 2, 9, 1])),
            Err(DecodeError::LengthOutOfRange {
                len: 9,
                remaining: 1
            })
        );
        assert_eq!(
            decode_all(Bytes::from_static(&[2, 3])),
            Err(DecodeError::UnknownAuthType(3))
        );
        // A good message followed by a truncated one fails as a whole.
        assert_eq!(
            decode_all(Bytes::from_static(&[3, 0, 2])),
            Err(DecodeError::UnexpectedEnd)
        );
    }

    #[test]
    fn state_vectors_are_checked_before_allocating() {
        // 0xff 0xff 0xff 0xff 0x0f declares u32::MAX entries in five bytes.
        assert_eq!(
            decode_state_vector(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f])),
            Err(DecodeError::CountTooLarge(u64::from(u32::MAX)))
        );
        assert_eq!(
            decode_state_vector(Bytes::from_static(&[1, 7, 3])),
            Ok(vec![(7, 3)])
        );
        assert_eq!(decode_state_vector(Bytes::from_static(&[0])), Ok(vec![]));
        assert!(check_update_header(&Bytes::from_static(&[0xff, 0xff, 0x03, 0])).is_err());
        assert!(check_update_header(&Bytes::from_static(&[0, 0])).is_ok());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_ok_or_err(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = Bytes::from(data);
            let n = decode_frame(frame.clone()).count();
            prop_assert!(n <= frame.len().max(1));
            let _ = decode_all(frame);
        }

        #[test]
        fn encoded_messages_roundtrip(kind in 0u8..6, payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let p = Bytes::from(payload);
            let m = match kind {
                0 => Message::SyncStep1(p),
                1 => Message::SyncStep2(p),
                2 => Message::Update(p),
                3 => Message::Awareness(p),
                4 => Message::PermissionDenied(String::from_utf8_lossy(&p).into_owned()),
                _ => Message::QueryAwareness,
            };
            prop_assert_eq!(decode_all(m.encode()).expect("decodes"), vec![m]);
        }
    }
}
