//! Document persistence for Chorus.
//!
//! - [`DocStore`] (in `store`): what the hub needs from a database: load a room (snapshot plus
//!   the update log after it), append updates of many rooms in one transaction, replace the
//!   snapshot while trimming the log, ping.
//! - [`SqliteStore`] (in `sqlite`): the embedded default, one file under the data directory.
//! - [`Persister`] (in `writer`): one task per store that group-commits append requests from all
//!   rooms, so a thousand rooms flushing at once cost one transaction, not a thousand.
//! - [`compact`] (in `compact`): merges a room's snapshot and log into a new snapshot with yrs.
//!   The marker of what is merged (the highest log id read) is taken before encoding, so an
//!   update appended meanwhile stays in the log.
//! - [`suite`]: the behaviour tests every store must pass, written once.
//!
//! Data flow: a room actor hands its pending updates to the [`Persister`], which appends them
//! with the others it has queued and answers each room when its updates are durable; the room
//! then tells opted-in clients they are saved. On load the room applies the snapshot and the
//! log into a fresh `yrs::Doc` ([`LoadedDoc::into_doc`]).

mod compact;
mod error;
mod sqlite;
mod store;
pub mod suite;
mod writer;

pub use compact::{CompactStats, compact, merge_into_doc};
pub use error::StoreError;
pub use sqlite::SqliteStore;
pub use store::{AppendBatch, DocStore, LoadedDoc, RoomKey};
pub use writer::{PersistRequest, Persister};
