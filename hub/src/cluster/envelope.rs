//! What travels between nodes on a room's topic: an [`Envelope`] (origin node, the origin's
//! sequence number for the room, the trace it continues if any, and a [`Payload`]), in a small
//! versioned binary encoding that every broker carries as opaque bytes.

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

/// Where a message sits in a trace (W3C trace context, binary): the receiving node's spans
/// continue it. Carried only by messages of a sampled trace (`--otlp-endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The publishing span.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    const LEN: usize = 16 + 8 + 1;

    fn write(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.trace_id);
        out.extend_from_slice(&self.span_id);
        out.extend_from_slice(&[self.flags]);
    }

    fn read(d: &mut Decoder) -> Option<TraceContext> {
        let mut raw = [0u8; Self::LEN];
        for b in &mut raw {
            *b = d.read_u8().ok()?;
        }
        let (trace_id, rest) = raw.split_first_chunk::<16>()?;
        let (span_id, [flags]) = rest.split_first_chunk::<8>()? else {
            return None;
        };
        // All-zero ids are invalid in W3C trace context: such a message is not ours.
        (*trace_id != [0; 16] && *span_id != [0; 8]).then_some(TraceContext {
            trace_id: *trace_id,
            span_id: *span_id,
            flags: *flags,
        })
    }
}

/// One message on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub origin: String,
    /// Its number among the origin's messages for this room, from 1.
    pub seq: u64,
    /// The trace the message continues, when the publishing span was sampled.
    pub trace: Option<TraceContext>,
    /// The content.
    pub payload: Payload,
}

const VERSION: u8 = 1;
/// Set on the kind byte when a trace context follows the sequence number. A node that predates
/// it drops such a message as unknown and resyncs on the gap (messages are at most once
/// anyway), so a rolling upgrade with tracing on costs resyncs, not content.
const TRACED: u8 = 0x80;

impl Envelope {
    /// `[version, kind, origin, seq, (trace), (to), body]`, lib0-encoded; the trace context
    /// (25 bytes: trace id, span id, flags) only with bit 0x80 set on the kind.
    pub fn encode(&self) -> Bytes {
        Self::encode_parts(&self.origin, self.seq, self.trace.as_ref(), &self.payload)
    }

    /// [`Envelope::encode`] of borrowed parts: a room publishing copies nothing into an
    /// envelope first.
    pub fn encode_parts(
        origin: &str,
        seq: u64,
        trace: Option<&TraceContext>,
        payload: &Payload,
    ) -> Bytes {
        let mut out =
            BytesMut::with_capacity(16 + TraceContext::LEN + origin.len() + payload.body_len());
        out.extend_from_slice(&[VERSION]);
        let (kind, to, body) = match payload {
            Payload::Update(u) => (1u8, None, u),
            Payload::SyncRequest(sv) => (2, None, sv),
            Payload::SyncReply { to, update } => (3, Some(to.as_str()), update),
            Payload::Awareness(a) => (4, None, a),
        };
        out.extend_from_slice(&[if trace.is_some() { kind | TRACED } else { kind }]);
        lib0::write_var_string(&mut out, origin);
        lib0::write_var_uint(&mut out, seq);
        if let Some(trace) = trace {
            trace.write(&mut out);
        }
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
        let trace = if kind & TRACED != 0 {
            Some(TraceContext::read(&mut d)?)
        } else {
            None
        };
        let payload = match kind & !TRACED {
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
            trace,
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
            let mut e = Envelope {
                origin: "node-a".into(),
                seq: 300,
                trace: None,
                payload,
            };
            assert_eq!(Envelope::decode(e.encode()), Some(e.clone()));
            e.trace = Some(TraceContext {
                trace_id: [7; 16],
                span_id: [9; 8],
                flags: 1,
            });
            assert_eq!(Envelope::decode(e.encode()), Some(e));
        }
        let good = Envelope {
            origin: "a".into(),
            seq: 1,
            trace: None,
            payload: Payload::Update(Bytes::from_static(&[9])),
        }
        .encode();
        let traced = Envelope {
            origin: "a".into(),
            seq: 1,
            trace: Some(TraceContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                flags: 1,
            }),
            payload: Payload::Update(Bytes::from_static(&[9])),
        }
        .encode();
        // The same, with an all-zero (invalid) trace id (after version, kind, origin, seq).
        let mut zero_trace = traced.to_vec();
        zero_trace[5..21].fill(0);
        let mut trailing = good.to_vec();
        trailing.push(0);
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"hello"),
            Bytes::from_static(&[2, 1, 1, b'a', 1, 1, 9]),
            Bytes::from_static(&[1, 7, 1, b'a', 1, 1, 9]),
            good.slice(..good.len() - 1),
            Bytes::from(trailing),
            // Cut inside the trace context.
            traced.slice(..14),
            Bytes::from(zero_trace),
            // The trace flag on an unknown kind.
            Bytes::from_static(&[1, 0x87, 1, b'a', 1, 1, 9]),
        ] {
            assert_eq!(Envelope::decode(bad.clone()), None, "{bad:?}");
        }
    }
}
