//! What a room is asked: the commands on its queue (sent through `RoomHandle` and
//! `Registry`, never built elsewhere), what members send, and server edits.

use super::*;

/// A message a connection's reader has decoded and validated for the room.
#[derive(Debug)]
pub enum Inbound {
    /// The client's state vector; answered with SyncStep2.
    SyncStep1(StateVector),
    /// A decoded update (from SyncStep2 or Update) of a writer.
    Update {
        /// The decoded update.
        update: Update,
        /// Its encoding: sized against the document limit, and stored as-is if yrs has to
        /// hold it back waiting for missing predecessors.
        raw: Bytes,
        /// What its nesting needs from the document (`None`: nothing).
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
        /// Where its content sits in its clients' clocks (held back past a hole).
        clocks: chorus_protocol::nesting::Clocks,
    },
    /// A reader's SyncStep2: refused, but only reported if it holds something new.
    ReadOnlyStep2(Update),
    /// Validated awareness entries.
    Awareness(Vec<Entry>),
    /// Send every awareness state to the asker.
    QueryAwareness,
}

/// What a room task is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Add a member; answered once its SyncStep1 and the awareness states are queued.
    Join {
        /// The new member. Boxed, like `Edit`'s payload: the room's queue allocates its
        /// slots in blocks of 32 sized by the largest command, one block per idle room.
        conn: Box<ConnHandle>,
        /// Ok, or why it cannot join.
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    /// A member's connection ended.
    Leave {
        /// Which member.
        conn: ConnId,
    },
    /// Messages from a member, in order.
    Inbound {
        /// Which member.
        conn: ConnId,
        /// What it sent.
        msgs: Vec<Inbound>,
        /// The frame's `update` span, when traced (boxed: `None` costs the queue's slots
        /// nothing).
        span: Option<Box<tracing::Span>>,
    },
    /// Flush everything and exit; answered when the room's data is durable.
    Shutdown {
        /// Answered on exit.
        done: oneshot::Sender<()>,
    },
    /// The whole document as a v1 update (REST reads and versions).
    State {
        /// The encoded state.
        reply: oneshot::Sender<Bytes>,
    },
    /// The document's plain text, for search (`docjson::plain_lines`): what the indexer would
    /// otherwise rebuild from the store, snapshot and log entry by entry.
    Lines {
        /// Most characters read.
        max_chars: usize,
        /// The lines; dropped if reading them panicked.
        reply: oneshot::Sender<Vec<crate::docjson::Line>>,
    },
    /// A server-side edit (REST API): applied like a member's update and relayed to every
    /// member. The reply carries a receiver that resolves `true` once the edit is durable.
    Edit {
        /// Names the edit across retries: a room applies an id at most once (see `applied`).
        id: CommandId,
        /// What to apply; `None` on a retry whose payload the first room consumed (it applied
        /// it, or it died with it).
        edit: Option<Box<ServerEdit>>,
        /// What became of it.
        reply: oneshot::Sender<EditReply>,
    },
    /// Who is connected, with their awareness states.
    Members {
        /// The list.
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    /// A message from another node on the room's channel (cluster mode).
    Remote {
        /// The message. Boxed: see `Join`.
        envelope: Box<crate::cluster::envelope::Envelope>,
    },
    /// The bus reconnected or fell behind: ask the other nodes for what we lack.
    Resync,
    /// A node left the ring: read the store for what it stored but never published.
    CatchUp,
    /// The node is draining: tell every member to reconnect (1012) with `reason`, which names
    /// the room's next home in a cluster. Members' connections then leave as usual.
    Drain {
        /// Close reason.
        reason: String,
        /// Answered once every member was told (before the node's generic close reaches them).
        done: oneshot::Sender<()>,
    },
    /// What the store held, for [`Command::CatchUp`].
    Stored {
        /// Snapshot and log, as loaded.
        loaded: Box<chorus_persistence::LoadedDoc>,
    },
    /// Closes every member with `code` and exits WITHOUT saving what is pending (the room is
    /// being deleted); answered once nothing of the room will be written any more.
    Close {
        /// Close code sent to members.
        code: CloseCode,
        /// Close reason.
        reason: String,
        /// Answered on exit.
        done: oneshot::Sender<()>,
    },
}

/// An edit made by the server (REST API).
#[derive(Debug)]
pub enum ServerEdit {
    /// A binary v1 update.
    Update {
        /// Decoded.
        update: Update,
        /// As received (sized against the limit).
        raw: Bytes,
        /// What its nesting needs from the document.
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
        /// Where its content sits in its clients' clocks.
        clocks: chorus_protocol::nesting::Clocks,
    },
    /// JSON operations.
    Ops(Vec<crate::docjson::Op>),
    /// Make the content equal to a stored version's (a v1 update of the whole version).
    Restore(Bytes),
}

/// A room's answer to [`Command::Edit`].
#[derive(Debug)]
pub enum EditReply {
    /// Applied (with a receiver that turns `true` once durable), or refused.
    Applied(Result<oneshot::Receiver<bool>, EditError>),
    /// The room was exiting and did not apply it: here it is back, for its successor.
    NotTaken(Option<Box<ServerEdit>>),
    /// A retry without its payload, and the edit was never applied: it died with the room
    /// that took it.
    Lost,
}

/// Why a server edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The document is at its size limit.
    #[error("document size limit reached")]
    TooLarge,
    /// The update nests deeper than `--max-nesting-depth` below the document's types.
    #[error("the update nests deeper than {0} levels")]
    TooDeep(u32),
    /// The edit does not apply.
    #[error("{0}")]
    Invalid(String),
}

/// One member of a room, for the REST presence list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// Connection id (node-local).
    pub connection: ConnId,
    /// User (`sub` claim), if the token named one.
    pub user: Option<String>,
    /// `read` or `write`.
    pub role: &'static str,
    /// Awareness states this connection controls: `{client_id, state}`.
    pub awareness: Vec<serde_json::Value>,
}
