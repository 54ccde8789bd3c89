//! Decoding and validating a whole frame before anything of it reaches a room: sizes,
//! message counts, nesting depth (before yrs sees the bytes), and what a reader may send.

use super::*;

/// A validated frame.
#[derive(Debug, Default)]
pub struct Decoded {
    /// What goes to the room.
    pub msgs: Vec<Inbound>,
    /// A read-only connection tried to write.
    pub denied: bool,
}

/// What one frame may hold (from the config).
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// See `--max-awareness-bytes`.
    pub max_awareness_bytes: u32,
    /// See `--max-nesting-depth`.
    pub max_nesting_depth: u32,
    /// See `--max-messages-per-frame`.
    pub max_messages: u32,
    /// See `--awareness-bytes-per-second`.
    pub awareness_bytes_per_second: u32,
}

impl FrameLimits {
    /// The node's limits.
    pub fn of(config: &crate::config::Config) -> Self {
        // u32 fields: this lives in every connection's state; the config checks keep each
        // limit far below 4 GiB.
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        FrameLimits {
            max_awareness_bytes: small(config.max_awareness_bytes),
            max_nesting_depth: config.max_nesting_depth,
            max_messages: small(config.max_messages_per_frame),
            awareness_bytes_per_second: config.awareness_bytes_per_second,
        }
    }
}

/// Decodes and validates one binary frame. Either the whole frame is accepted or it is refused
/// with the close code and reason for its sender: nothing of a bad frame reaches the room.
pub fn decode_frame(
    frame: Bytes,
    role: Role,
    limits: FrameLimits,
) -> Result<Decoded, (CloseCode, &'static str)> {
    let mut out = Decoded::default();
    for (i, m) in chorus_protocol::sync::decode_frame(frame).enumerate() {
        // Counted before anything is decoded: a frame of thousands of tiny requests would
        // otherwise cost the room thousands of replies.
        if i >= limits.max_messages as usize {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "messages_per_frame")
                .increment(1);
            return Err((CloseCode::Policy, "too many messages in one frame"));
        }
        let m = m.map_err(|_| (CloseCode::InvalidPayload, "malformed message"))?;
        match m {
            Message::SyncStep1(sv) => {
                let pairs = chorus_protocol::sync::decode_state_vector(sv)
                    .map_err(|_| (CloseCode::InvalidPayload, "malformed state vector"))?;
                let mut sv = StateVector::default();
                for (client, clock) in pairs {
                    sv.set_max(yrs::block::ClientID::new(client), clock);
                }
                out.msgs.push(Inbound::SyncStep1(sv));
            }
            Message::SyncStep2(u) if role == Role::Read => {
                // A reader's SyncStep2 usually repeats what the room has; only the room can
                // tell whether it holds anything new, so the room decides whether to report.
                // Empty ones too: Hocuspocus readers expect a sync status for each.
                let (update, ..) = decode_update(&u, limits.max_nesting_depth)?;
                out.msgs.push(Inbound::ReadOnlyStep2(update));
            }
            Message::Update(u) if role == Role::Read => {
                let (update, ..) = decode_update(&u, limits.max_nesting_depth)?;
                out.denied |= !update.is_empty();
            }
            Message::SyncStep2(u) | Message::Update(u) => {
                // Empty updates go to the room too: `saved` counts every update message.
                let (update, nesting, clocks) = decode_update(&u, limits.max_nesting_depth)?;
                out.msgs.push(Inbound::Update {
                    update,
                    raw: u,
                    nesting,
                    clocks,
                });
            }
            Message::Awareness(p) => {
                let entries = awareness::decode_update(p)
                    .map_err(|_| (CloseCode::InvalidPayload, "malformed awareness update"))?;
                if entries
                    .iter()
                    .any(|e| e.state.len() > limits.max_awareness_bytes as usize)
                {
                    return Err((CloseCode::TooBig, "awareness state exceeds the size limit"));
                }
                out.msgs.push(Inbound::Awareness(entries));
            }
            Message::QueryAwareness => out.msgs.push(Inbound::QueryAwareness),
            // Only servers send permission-denied; a client sending one is harmless noise.
            Message::PermissionDenied(_) => {}
        }
    }
    Ok(out)
}

/// A decoded update, what its nesting needs from the document (`None`: nothing), and where its
/// content sits in its clients' clocks.
pub type Checked = (Update, Option<Box<Nesting>>, Clocks);

/// Decodes an update from outside: its nesting is checked first by an iterative scan (yrs
/// recurses without a limit and a stack overflow aborts the process), then the header, then
/// yrs' errors and panics are both refused. Returns what the room must check against its
/// document (`None`: nothing, the usual case for typing).
pub fn decode_update(u: &Bytes, max_depth: u32) -> Result<Checked, (CloseCode, &'static str)> {
    let nesting = scan_update(u, max_depth).map_err(|e| match e {
        NestingError::TooDeep { .. } => {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "nesting_depth")
                .increment(1);
            (CloseCode::TooDeep, "update nests deeper than the limit")
        }
        NestingError::Malformed | NestingError::TooComplex => {
            (CloseCode::InvalidPayload, "malformed update")
        }
    })?;
    chorus_protocol::sync::check_update_header(u)
        .map_err(|_| (CloseCode::InvalidPayload, "malformed update"))?;
    let update =
        guarded(|| Update::decode_v1(u)).ok_or((CloseCode::InvalidPayload, "malformed update"))?;
    let clocks = nesting.clocks;
    Ok((
        update,
        (!nesting.is_empty()).then(|| Box::new(nesting)),
        clocks,
    ))
}

/// Runs a yrs decoder, turning both its errors and its panics into `None`.
fn guarded<T, E>(f: impl FnOnce() -> Result<T, E>) -> Option<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_awareness_bytes: 1024,
        max_nesting_depth: 64,
        max_messages: 64,
        awareness_bytes_per_second: 65_536,
    };
    const SMALL: FrameLimits = FrameLimits {
        max_awareness_bytes: 128,
        ..LIMITS
    };

    fn nested_any(d: usize) -> Bytes {
        Bytes::from(chorus_protocol::nesting::nested_value_update(7, "t", d))
    }

    #[test]
    fn deep_values_are_refused_before_yrs_decodes_them_for_writers_and_readers() {
        for role in [Role::Write, Role::Read] {
            for msg in [
                Message::Update(nested_any(6_500)),
                Message::SyncStep2(nested_any(6_500)),
            ] {
                let err = decode_frame(msg.encode(), role, LIMITS).expect_err("refused");
                assert_eq!(err.0, CloseCode::TooDeep);
            }
            // At the limit (root 1 + 63 arrays) it decodes.
            assert!(decode_frame(Message::Update(nested_any(63)).encode(), role, LIMITS).is_ok());
            let err = decode_frame(Message::Update(nested_any(64)).encode(), role, LIMITS)
                .expect_err("one past");
            assert_eq!(err.0, CloseCode::TooDeep);
        }
    }

    #[test]
    fn frames_with_more_messages_than_the_cap_are_refused() {
        let mut frame = bytes::BytesMut::new();
        for _ in 0..64 {
            Message::QueryAwareness.encode_into(&mut frame);
        }
        let at = frame.clone().freeze();
        assert_eq!(
            decode_frame(at, Role::Read, LIMITS).expect("64").msgs.len(),
            64
        );
        Message::QueryAwareness.encode_into(&mut frame);
        let err = decode_frame(frame.freeze(), Role::Read, LIMITS).expect_err("65");
        assert_eq!(err.0, CloseCode::Policy);
    }

    #[test]
    fn readers_are_denied_plain_updates_but_not_empty_ones() {
        let empty = Message::Update(Bytes::from_static(&[0, 0])).encode();
        let d = decode_frame(empty.clone(), Role::Read, LIMITS).expect("valid");
        assert!(!d.denied && d.msgs.is_empty());
        // For writers an empty update still counts toward `saved`.
        let d = decode_frame(empty, Role::Write, LIMITS).expect("valid");
        assert_eq!(d.msgs.len(), 1);
        let doc = yrs::Doc::with_client_id(1);
        {
            use yrs::{Text, Transact};
            let t = doc.get_or_insert_text("t");
            t.insert(&mut doc.transact_mut(), 0, "x");
        }
        let update = {
            use yrs::{ReadTxn, Transact};
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        };
        let frame = Message::Update(Bytes::from(update.clone())).encode();
        assert!(
            decode_frame(frame.clone(), Role::Read, LIMITS)
                .expect("valid")
                .denied
        );
        let d = decode_frame(frame, Role::Write, LIMITS).expect("valid");
        assert!(matches!(d.msgs.as_slice(), [Inbound::Update { .. }]));
        let step2 = Message::SyncStep2(Bytes::from(update)).encode();
        let d = decode_frame(step2, Role::Read, LIMITS).expect("valid");
        assert!(!d.denied && matches!(d.msgs.as_slice(), [Inbound::ReadOnlyStep2(_)]));
    }

    proptest! {
        #[test]
        fn any_frame_is_accepted_or_refused_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..256),
            read in any::<bool>(),
        ) {
            let role = if read { Role::Read } else { Role::Write };
            let _ = decode_frame(Bytes::from(data), role, SMALL);
        }

        #[test]
        fn random_update_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = Message::Update(Bytes::from(data)).encode();
            let _ = decode_frame(frame, Role::Write, SMALL);
        }
    }
}
