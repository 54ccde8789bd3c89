/// Errors of the document stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query or a connection.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying schema migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored bytes could not be decoded as a Yjs update.
    #[error("stored update for {room} is corrupt: {detail}")]
    Corrupt {
        /// `tenant/room` of the bad row.
        room: String,
        /// What the decoder said.
        detail: String,
    },
    /// A stored or relayed update nests deeper than the limit; it was not applied.
    #[error("update for {room} refused: {detail}")]
    TooDeep {
        /// `tenant/room`.
        room: String,
        /// What the depth check said.
        detail: String,
    },
    /// The batch writer task has stopped (the store is shutting down).
    #[error("persister stopped")]
    Stopped,
    /// A blocking compaction task failed to run to completion.
    #[error("background task failed: {0}")]
    Task(String),
    /// The database cannot be used as configured (unreachable, or the login lacks a
    /// privilege); the message says what to do.
    #[error("{0}")]
    Setup(String),
    /// The store configuration was invalid (bad URL or path).
    #[error("invalid store configuration: {0}")]
    Config(String),
}
