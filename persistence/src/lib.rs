//! Persistence for Chorus: documents and the catalog, in SQLite or Postgres.
//!
//! - [`DocStore`] (in `store`): what the hub needs from a database for documents: load a room
//!   (snapshot plus the update log after it), append updates of many rooms in one transaction
//!   (with the webhook events they cause), replace the snapshot while trimming the log, ping.
//! - [`Catalog`] (in `catalog`): everything else a store keeps, per tenant: tenants, token
//!   keys, API keys, room records, named versions, webhooks and the webhook outbox.
//!   [`Store`] is both; the hub runs on an `Arc<dyn Store>`.
//! - [`SqliteStore`] (in `sqlite`): the embedded default, one file under the data directory;
//!   every query filters by tenant itself.
//! - [`PostgresStore`] (in `postgres`): production; row-level security confines every
//!   transaction to the tenant it sets, and queries run as the role `chorus_app` that the
//!   policies apply to (schema and roles in `migrations/postgres`, docs/OPERATIONS.md).
//! - [`SearchIndex`] (in [`search`]): the search indexing queue, indexed chunks with full-text
//!   indexes (Postgres tsvector, SQLite FTS5) and embeddings, and the change feed nodes follow.
//! - [`Persister`] (in `writer`): one task per store that group-commits append requests from all
//!   rooms, so a thousand rooms flushing at once cost one transaction, not a thousand.
//! - [`compact`] (in `compact`): merges a room's snapshot and log into a new snapshot with yrs.
//!   The marker of what is merged (the highest log id read) is taken before encoding, so an
//!   update appended meanwhile stays in the log.
//! - `suite` and `testing`, behind the `testing` feature (tests only): the behaviour tests every
//!   store must pass, written once (`suite::catalog` for the catalog), and a fresh Postgres
//!   database per test.
//!
//! Data flow: a room actor hands its pending updates to the [`Persister`], which appends them
//! with the others it has queued and answers each room when its updates are durable; the room
//! then tells opted-in clients they are saved. On load the room applies the snapshot and the
//! log into a fresh `yrs::Doc` ([`LoadedDoc::into_doc`]).

pub mod ai_runs;
mod catalog;
mod compact;
mod error;
pub mod holes;
pub mod metric_names;
pub mod nesting;
mod postgres;
pub mod search;
mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod suite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod writer;

pub use ai_runs::{AiRun, AiRunFilter, AiRunUpdate, AiRuns};
pub use catalog::{
    ApiKey, Attempt, Catalog, NewEvent, OutboxEvent, RoomCreated, RoomInfo, SigningKey, Store,
    Tenant, VersionInfo, Webhook,
};
pub use compact::{CompactStats, compact, merge_into_doc};
pub use error::StoreError;
pub use holes::PastHoles;
pub use nesting::{DepthIndex, HARD_MAX_NESTING_DEPTH};
pub use postgres::{COMPACTION_LOCK, PostgresStore};
pub use search::SearchIndex;
pub use sqlite::SqliteStore;
pub use store::{AppendBatch, DocStore, LoadedDoc, LogSummary, RoomKey};
pub use writer::{PersistRequest, Persister};
