//! What travels between nodes on a room's topic: an [`Envelope`] (origin node, the origin's
//! sequence number for the room, and a [`Payload`]), in a small versioned binary encoding that
//! every broker carries as opaque bytes.

use bytes::{Bytes, BytesMut};
use chorus_protocol::lib0::{self, Decoder};

/// What a bus message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A v1 update a member of the origin node made (already stored by that node).
    Update(Bytes),
    /// The origin's state vector: nodes holding more answer with [`Payload::SyncReply`].
    SyncRequest(Bytes),
    /// Awareness entries of the origin's members (y-protocols awareness update encoding).
    Awareness(Bytes),
    /// What `to` lacked, as a v1 update.
    SyncReply {
        /// The node that asked.
        to: String,
        /// The update.
        update: Bytes,
    },
}

impl Payload {
    fn body_len(&self) -> usize {
        match self {
            Payload::Update(b) | Payload::SyncRequest(b) | Payload::Awareness(b) => b.len(),
            Payload::SyncReply { to, update } => to.len() + update.len(),
        }
    }
}

/// One message on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub origin: String,
    /// Its number among the origin's messages for this room, from 1.
    pub seq: u64,
    /// The content.
    pub payload: Payload,
}

const VERSION: u8 = 1;

impl Envelope {
    /// `[version, kind, origin, seq, (to), body]`, lib0-encoded.
    pub fn encode(&self) -> Bytes {
        Self::encode_parts(&self.origin, self.seq, &self.payload)
    }

    /// [`Envelope::encode`] of borrowed parts: a room publishing copies nothing into an
    /// envelope first.
    pub fn encode_parts(origin: &str, seq: u64, payload: &Payload) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + origin.len() + payload.body_len());
        out.extend_from_slice(&[VERSION]);
        let (kind, to, body) = match payload {
            Payload::Update(u) => (1u8, None, u),
            Payload::SyncRequest(sv) => (2, None, sv),
            Payload::SyncReply { to, update } => (3, Some(to.as_str()), update),
            Payload::Awareness(a) => (4, None, a),
        };
        out.extend_from_slice(&[kind]);
        lib0::write_var_string(&mut out, origin);
        lib0::write_var_uint(&mut out, seq);
        if let Some(to) = to {
            lib0::write_var_string(&mut out, to);
        }
        lib0::write_var_bytes(&mut out, body);
        out.freeze()
    }

    /// Decodes a message from the channel; `None` for anything else (another version, a
    /// stray publisher), which is dropped.
    pub fn decode(raw: Bytes) -> Option<Envelope> {
        let mut d = Decoder::new(raw);
        if d.read_u8().ok()? != VERSION {
            return None;
        }
        let kind = d.read_u8().ok()?;
        let origin = String::from_utf8(d.read_var_string().ok()?.to_vec()).ok()?;
        let seq = d.read_var_uint().ok()?;
        let payload = match kind {
            1 => Payload::Update(d.read_var_bytes().ok()?),
            2 => Payload::SyncRequest(d.read_var_bytes().ok()?),
            3 => {
                let to = String::from_utf8(d.read_var_string().ok()?.to_vec()).ok()?;
                Payload::SyncReply {
                    to,
                    update: d.read_var_bytes().ok()?,
                }
            }
            4 => Payload::Awareness(d.read_var_bytes().ok()?),
            _ => return None,
        };
        d.is_empty().then_some(Envelope {
            origin,
            seq,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_strangers_are_dropped() {
        for payload in [
            Payload::Update(Bytes::from_static(&[1, 2, 3])),
            Payload::SyncRequest(Bytes::from_static(&[0])),
            Payload::Awareness(Bytes::from_static(&[1, 5, 1, 2, b'{', b'}'])),
            Payload::SyncReply {
                to: "node-b".into(),
                update: Bytes::from_static(&[0, 0]),
            },
        ] {
            let e = Envelope {
                origin: "node-a".into(),
                seq: 300,
                payload,
            };
            assert_eq!(Envelope::decode(e.encode()), Some(e));
        }
        let good = Envelope {
            origin: "a".into(),
            seq: 1,
            payload: Payload::Update(Bytes::from_static(&[9])),
        }
        .encode();
        let mut trailing = good.to_vec();
        trailing.push(0);
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"hello"),
            Bytes::from_static(&[2, 1, 1, b'a', 1, 1, 9]),
            Bytes::from_static(&[1, 7, 1, b'a', 1, 1, 9]),
            good.slice(..good.len() - 1),
            Bytes::from(trailing),
        ] {
            assert_eq!(Envelope::decode(bad.clone()), None, "{bad:?}");
        }
    }
}
