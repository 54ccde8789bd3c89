//! The WebSocket close codes Chorus sends, in one table.
//!
//! y-websocket stops reconnecting on 4400-4499, so those are used only for refusals that a retry
//! cannot fix. Everything a retry may fix uses a 1xxx or 45xx code. Reasons stay under 123 bytes
//! (the limit of a close frame's reason).

/// A close code with its meaning. `as u16` gives the wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The session ended normally.
    Normal = 1000,
    /// The endpoint received a kind of frame it does not accept (a text frame on the binary
    /// y-websocket endpoint from a connection that did not opt in to extensions).
    UnsupportedData = 1003,
    /// A frame could not be decoded (malformed y-sync message, bad awareness JSON, garbage update).
    InvalidPayload = 1007,
    /// The connection broke a rule that is not covered by a more specific code.
    Policy = 1008,
    /// A frame or awareness state exceeded its size limit.
    TooBig = 1009,
    /// The server failed internally; reconnecting is safe.
    Internal = 1011,
    /// The node is shutting down or restarting; reconnect (elsewhere).
    Restarting = 1012,
    /// The node is overloaded or this client read too slowly; reconnect later.
    Overloaded = 1013,
    /// The token is missing, invalid or expired (permanent: get a new token).
    Unauthenticated = 4401,
    /// The token does not allow this room or action (permanent).
    Forbidden = 4403,
    /// The room was deleted (permanent).
    RoomDeleted = 4404,
    /// An update would make the document larger than its limit (permanent for this update).
    DocumentTooLarge = 4413,
    /// An update nests values or shared types deeper than the node's limit
    /// (`--max-nesting-depth`; permanent for this update).
    TooDeep = 4422,
    /// A quota (rate, connections, rooms) was exceeded (permanent until the quota is raised).
    QuotaExceeded = 4429,
    /// A transient server-side condition (45xx): the room failed to load; retry later.
    RoomUnavailable = 4503,
}

impl CloseCode {
    /// Every code, in table order (used by docs and tests).
    pub const ALL: [CloseCode; 15] = [
        CloseCode::Normal,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Restarting,
        CloseCode::Overloaded,
        CloseCode::Unauthenticated,
        CloseCode::Forbidden,
        CloseCode::RoomDeleted,
        CloseCode::DocumentTooLarge,
        CloseCode::TooDeep,
        CloseCode::QuotaExceeded,
        CloseCode::RoomUnavailable,
    ];

    /// The numeric code sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether a client should give up instead of reconnecting (the 4400-4499 range).
    pub fn is_permanent(self) -> bool {
        (4400..4500).contains(&self.code())
    }

    /// Looks a wire value up in the table.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Cuts a close reason to at most 123 bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert!(CloseCode::Forbidden.is_permanent());
        assert!(!CloseCode::Overloaded.is_permanent());
        assert!(!CloseCode::RoomUnavailable.is_permanent());
    }

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
