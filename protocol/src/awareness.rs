//! The awareness update payload of y-protocols.
//!
//! ```text
//! update = varuint(n) entry*n
//! entry  = varuint(client id) varuint(clock) var_string(JSON state, "null" = removed)
//! ```
//! The hub never interprets the JSON beyond checking that it is JSON; it keeps each client's
//! latest state and clock and relays them.

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use crate::lib0::{DecodeError, Decoder, MAX_SAFE_INTEGER, write_var_string, write_var_uint};

/// Deepest JSON nesting of an awareness state (stock clients use about 5).
pub const MAX_STATE_DEPTH: u32 = 32;

/// The JSON text y-protocols sends for a removed state.
pub const NULL_STATE: &str = "null";

/// One client's awareness state at one clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The Yjs client id that owns this state.
    pub client_id: u64,
    /// Monotonic per-client counter; a higher clock replaces a lower one.
    pub clock: u64,
    /// The state as JSON text (validated UTF-8 and JSON). `null` means the client left.
    pub state: Bytes,
}

impl Entry {
    /// Whether this entry removes the client's state.
    pub fn is_removal(&self) -> bool {
        &self.state[..] == NULL_STATE.as_bytes()
    }

    /// The state as text.
    pub fn state_str(&self) -> &str {
        // Entries are only built from validated UTF-8 (decode) or from &str (removal).
        std::str::from_utf8(&self.state).unwrap_or(NULL_STATE)
    }
}

/// Decodes an awareness update, checking that every state is valid JSON.
pub fn decode_update(payload: Bytes) -> Result<Vec<Entry>, DecodeError> {
    let mut d = Decoder::new(payload);
    let n = d.read_var_uint()?;
    // Each entry takes at least 3 bytes, so a count beyond that is a lie; cap the allocation.
    let cap = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(d.remaining() / 3);
    let mut entries = Vec::with_capacity(cap);
    for _ in 0..n {
        let client_id = d.read_var_uint()?;
        let clock = d.read_var_uint()?;
        // Stock clients (lib0) throw on larger values and would drop the whole message,
        // other users' changes included.
        if client_id > MAX_SAFE_INTEGER || clock > MAX_SAFE_INTEGER {
            return Err(DecodeError::IntegerOutOfRange);
        }
        let state = d.read_var_string()?;
        // Nesting is bounded before serde (whose own limit is 128) and before every browser
        // that receives the state parses it.
        crate::nesting::json_depth(&state, MAX_STATE_DEPTH)
            .map_err(|_| DecodeError::InvalidAwarenessJson)?;
        serde_json::from_slice::<IgnoredAny>(&state)
            .map_err(|_| DecodeError::InvalidAwarenessJson)?;
        // A copy: the state is kept (presence, relays) long after the frame, and a slice
        // would keep the whole frame alive (a 2-byte state pinned a 16 MiB frame).
        let state = Bytes::copy_from_slice(&state);
        entries.push(Entry {
            client_id,
            clock,
            state,
        });
    }
    Ok(entries)
}

/// Encodes entries as one awareness update payload.
pub fn encode_update<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Bytes {
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let mut out =
        BytesMut::with_capacity(1 + entries.iter().map(|e| e.state.len() + 12).sum::<usize>());
    write_var_uint(&mut out, entries.len() as u64);
    for e in entries {
        write_var_uint(&mut out, e.client_id);
        write_var_uint(&mut out, e.clock);
        write_var_string(&mut out, e.state_str());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_removal() {
        let entries = vec![
            Entry {
                client_id: 42,
                clock: 3,
                state: Bytes::from_static(br#"{"user":{"name":"a"}}"#),
            },
            Entry {
                client_id: 7,
                clock: 9,
                state: Bytes::from_static(b"null"),
            },
        ];
        let enc = encode_update(&entries);
        let dec = decode_update(enc).expect("decodes");
        assert_eq!(dec, entries);
        assert!(!dec[0].is_removal());
        assert!(dec[1].is_removal());
    }

    #[test]
    fn states_nested_past_the_cap_are_rejected_and_kept_states_do_not_pin_the_frame() {
        let entry = |state: &str| {
            let mut out = BytesMut::new();
            write_var_uint(&mut out, 1);
            write_var_uint(&mut out, 1);
            write_var_uint(&mut out, 1);
            write_var_string(&mut out, state);
            out.freeze()
        };
        let at = format!("{}{}", "[".repeat(32), "]".repeat(32));
        let frame = entry(&at);
        let decoded = decode_update(frame.clone()).expect("at the cap");
        // Not a slice of `frame`: its memory is its own.
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(!range.contains(&(decoded[0].state.as_ptr() as usize)));
        let past = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            decode_update(entry(&past)),
            Err(DecodeError::InvalidAwarenessJson)
        );
    }

    #[test]
    fn invalid_json_state_is_rejected() {
        let mut out = BytesMut::new();
        write_var_uint(&mut out, 1);
        write_var_uint(&mut out, 1);
        write_var_uint(&mut out, 1);
        write_var_string(&mut out, "{not json");
        assert_eq!(
            decode_update(out.freeze()),
            Err(DecodeError::InvalidAwarenessJson)
        );
    }

    #[test]
    fn ids_beyond_javascript_numbers_are_rejected() {
        let e = Entry {
            client_id: 1 << 53,
            clock: 1,
            state: Bytes::from_static(b"{}"),
        };
        assert_eq!(
            decode_update(encode_update([&e])),
            Err(DecodeError::IntegerOutOfRange)
        );
    }

    #[test]
    fn huge_count_does_not_allocate() {
        let mut out = BytesMut::new();
        write_var_uint(&mut out, u64::MAX);
        assert_eq!(decode_update(out.freeze()), Err(DecodeError::UnexpectedEnd));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_update(Bytes::from(data));
        }
    }
}
