//! Sans-IO wire formats spoken by Chorus.
//!
//! Nothing in this crate does I/O (unless the `client` feature is on), so everything here is
//! unit-tested and property-tested in isolation and reused by the hub, the load tester and bots.
//!
//! - [`lib0`]: the variable-length integer, byte-array and string codecs of Yjs' `lib0`.
//! - [`sync`]: the y-websocket / y-sync messages (sync step 1, step 2, update, awareness, auth,
//!   query-awareness). A frame may carry several messages; [`sync::decode_frame`] walks them.
//! - [`awareness`]: the awareness update payload (client id, clock, JSON state per entry).
//! - [`close`]: the one table of WebSocket close codes the hub uses and what each means.
//! - [`ext`]: the versioned JSON envelope of extension messages (`saved`, errors, ...) that only
//!   opted-in connections receive as text frames.
//! - [`nesting`]: how deeply a Yjs update nests, found by an iterative scan before yrs (which
//!   recurses without a limit) decodes it.
//! - [`hocuspocus`]: the Hocuspocus dialect (`@hocuspocus/provider`): many documents per socket,
//!   each message prefixed with its document's address.
//! - `client` (feature `client`): an async tokio-tungstenite + yrs client for tests and bots.
//!
//! Data moves one way through a decoder: bytes from a socket become a [`bytes::Bytes`] frame,
//! [`sync::decode_frame`] yields [`sync::Message`] values whose payloads are zero-copy slices of
//! that frame, and encoders turn messages back into one `Bytes` that the hub shares between every
//! recipient.

pub mod awareness;
pub mod close;
pub mod ext;
pub mod hocuspocus;
pub mod lib0;
pub mod nesting;
pub mod sync;

#[cfg(feature = "client")]
pub mod client;

pub use close::CloseCode;
pub use lib0::DecodeError;
pub use sync::Message;
