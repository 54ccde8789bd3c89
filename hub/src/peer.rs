//! Server-side peers: members of a room that live in the node (the AI assistant, bots written
//! in Rust). A peer is a member like any socket: it has its own Yjs client id and awareness
//! entry, and its edits take the ordinary path (the room applies them after the same depth
//! check, relays them to every member and other nodes, persists them, reports them to
//! webhooks, and holds them to the document size limit). It also keeps a replica of the
//! document, so that edits can be made in transactions against the current content and placed
//! at Yjs relative positions (`yrs::StickyIndex`) that survive concurrent edits.
//!
//! ```text
//! let mut peer = registry.peer(&key, PeerOptions::named("Assistant")).await?;
//! peer.synced(patience).await?;
//! peer.edit(|txn| text.insert(txn, 0, "Hello"))?;   // a transaction on the replica
//! peer.durable(patience).await?;                     // stored like anyone's edit
//! ```
//!
//! A peer takes no `--max-connections` place and no place among its tenant's connections:
//! the code that creates it is the node's own, and bounds how many it runs.
//!
//! What a peer is told and should do ([`PeerEvent::Closed`], the code and reason of the
//! close every member gets):
//! - 1012, the node is draining (the reason names the room's next home in a cluster): stop
//!   writing; the work may continue on the node that serves the room next.
//! - 4404, the room was deleted: stop; there is nothing to write into.
//! - 4413 (document too large), 4422 (nested too deep), 1007 (refused update): the last
//!   edit was refused and the peer removed; do not repeat it.
//!
//! An edit refused before it is sent ([`PeerError::Refused`], nested too deep) removes the
//! peer as well: the replica holds the refused content at clocks of its client the room will
//! never have, so every later edit would start past that hole, where yrs 0.28 integrates it
//! as text no other member gets and a restart loses (docs/SECURITY.md, Z3). Join again for a
//! fresh replica.
//! - 1011 or 1013 (the room restarted, or the peer's queue overflowed): join again; the
//!   replica syncs from the room and nothing acknowledged as durable is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_persistence::RoomKey;
use chorus_protocol::CloseCode;
use chorus_protocol::awareness::Entry;
use chorus_protocol::ext::ServerMessage;
use chorus_protocol::sync::Message;
use tokio::sync::{mpsc, watch};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, TransactionMut, Update};

use crate::auth::Role;
use crate::outbound::{self, ConnHandle, ConnQueue, Next, Outbound, ShownAs};
use crate::registry::{JoinError, Registry, RoomHandle};
use crate::room::Inbound;
use crate::session::RateLimit;

/// Messages queued for a peer before it counts as a slow consumer (it reads them at once).
const PEER_QUEUE_MESSAGES: usize = 4096;
/// Bytes queued for a peer (a joiner's first SyncStep2 carries the whole document).
const PEER_QUEUE_BYTES: usize = 256 << 20;
/// Events kept for a peer that does not read them; past it, `Changed` events are dropped (the
/// replica holds the content either way).
const PEER_EVENTS: usize = 1024;

/// How a peer shows itself and what it may send.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Display name, written into `user.name` of its awareness state.
    pub name: String,
    /// Colour, written into `user.color`.
    pub color: Option<String>,
    /// The user it acts for (`sub`), shown in the members list and webhooks.
    pub user: Option<String>,
    /// Edits and awareness changes per second (bursts of twice that), as for a socket: pass
    /// the tenant's `messages_per_second`. `None`: unlimited.
    pub messages_per_second: Option<u32>,
    /// Keep the other members' awareness states ([`Peer::presence`]); off for peers that do
    /// not look at who is here (the assistant).
    pub presence: bool,
}

impl PeerOptions {
    /// A peer with a display name and no other settings.
    pub fn named(name: &str) -> Self {
        PeerOptions {
            name: name.to_owned(),
            color: None,
            user: None,
            messages_per_second: None,
            presence: false,
        }
    }
}

/// The awareness states of a room's members as a peer sees them: client id -> (clock,
/// state). Removed states are dropped.
pub type Presence = std::collections::BTreeMap<u64, (u64, serde_json::Value)>;

/// What happened in the peer's room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Another member's edit reached the replica.
    Changed,
    /// The room removed the peer (see the module documentation for what to do).
    Closed {
        /// The close code every member gets.
        code: u16,
        /// Its reason.
        reason: String,
    },
}

/// Why a peer's edit was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Faster than `messages_per_second`: nothing was applied; try again later.
    #[error("message rate limit exceeded")]
    RateLimited,
    /// The edit nests deeper than the limit: nothing was sent, and the peer has left the room
    /// (its replica holds the refused content; join again for a fresh one).
    #[error("{0}")]
    Refused(&'static str),
    /// The peer is no longer a member of the room.
    #[error("the peer has left the room")]
    Closed,
    /// Not synced or durable within the patience given.
    #[error("timed out waiting for the room")]
    Timeout,
}

/// A member of a room that lives in the node. Leaves its room when dropped.
pub struct Peer {
    key: RoomKey,
    conn: ConnHandle,
    room: RoomHandle,
    doc: Doc,
    events: mpsc::Receiver<PeerEvent>,
    synced: watch::Receiver<bool>,
    saved: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
    presence: Option<watch::Receiver<Presence>>,
    sent: u64,
    awareness_clock: u64,
    rate: Option<RateLimit>,
    max_depth: u32,
    reader: tokio::task::JoinHandle<()>,
    left: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("room", &self.key)
            .field("member", &self.conn.id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Joins a server-side peer to the room (spawning or loading it as needed). The peer then
    /// syncs its replica; see [`Peer::synced`].
    pub async fn peer(
        self: &Arc<Self>,
        key: &RoomKey,
        opts: PeerOptions,
    ) -> Result<Peer, JoinError> {
        // 32-bit client ids, as browsers use: some servers mangle larger ones.
        let client = u64::from(rand::random::<u32>().max(1));
        self.peer_with_client_id(key, opts, client).await
    }

    /// [`Registry::peer`] writing under the given Yjs client id (an AI run's, recorded with
    /// the run so its items can be attributed and reverted). The id must be one nobody else
    /// writes under.
    pub async fn peer_with_client_id(
        self: &Arc<Self>,
        key: &RoomKey,
        opts: PeerOptions,
        client: u64,
    ) -> Result<Peer, JoinError> {
        let (conn, queue) = outbound::channel(
            outbound::next_conn_id(),
            true,
            Role::Write,
            PEER_QUEUE_MESSAGES,
            PEER_QUEUE_BYTES,
        );
        let conn = conn
            .with_user(opts.user.as_deref())
            .shown_as(Some(Arc::new(ShownAs {
                name: Some(opts.name.clone()),
                color: opts.color.clone(),
            })));
        let room = self.join(key, conn.clone()).await?;
        let doc = Doc::with_client_id(client);
        let (events_tx, events) = mpsc::channel(PEER_EVENTS);
        let (synced_tx, synced) = watch::channel(false);
        let (saved_tx, saved) = watch::channel(0);
        let (closed_tx, closed) = watch::channel(false);
        let (presence_tx, presence) = if opts.presence {
            let (tx, rx) = watch::channel(Presence::new());
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let reader = tokio::spawn(read(
            queue,
            doc.clone(),
            Watchers {
                events: events_tx,
                synced: synced_tx,
                saved: saved_tx,
                closed: closed_tx,
                presence: presence_tx,
            },
        ));
        // Ask for the document: the room answers with a SyncStep2 of all of it.
        let peer = Peer {
            key: key.clone(),
            conn,
            room,
            doc,
            events,
            synced,
            saved,
            closed,
            presence,
            sent: 0,
            awareness_clock: 0,
            rate: opts.messages_per_second.map(RateLimit::new),
            max_depth: self.max_nesting_depth(),
            reader,
            left: false,
        };
        let sv = peer.doc.transact().state_vector();
        if !peer
            .room
            .inbound(peer.conn.id, vec![Inbound::SyncStep1(sv)])
            .await
        {
            return Err(JoinError::Unavailable);
        }
        Ok(peer)
    }
}

impl Peer {
    /// The room.
    pub fn key(&self) -> &RoomKey {
        &self.key
    }

    /// The replica of the document: read it, observe it, make `StickyIndex`es on it. Edit it
    /// only through [`Peer::edit`], which sends what changed to the room. Never hold one of its
    /// transactions across an `.await`: the task applying the room's updates waits for it
    /// (yrs blocks the thread), and so would a runtime worker.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The Yjs client id the peer's edits carry.
    pub fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    /// Waits until the replica holds the room's document as it was when the peer joined.
    pub async fn synced(&mut self, patience: Duration) -> Result<(), PeerError> {
        wait(&mut self.synced, patience, |s| *s).await
    }

    /// Applies `edit` to the replica in one transaction and sends what it changed to the room
    /// as one update, which the room checks, applies, relays and stores like any member's.
    /// Returns what `edit` returned. An edit that changes nothing sends nothing.
    pub async fn edit<R>(
        &mut self,
        edit: impl FnOnce(&mut TransactionMut) -> R,
    ) -> Result<R, PeerError> {
        if *self.closed.borrow() || self.left {
            return Err(PeerError::Closed);
        }
        if let Some(rate) = &mut self.rate
            && !rate.take()
        {
            return Err(PeerError::RateLimited);
        }
        let (out, raw) = {
            let mut txn = self.doc.transact_mut();
            let out = edit(&mut txn);
            (out, Bytes::from(txn.encode_update_v1()))
        };
        // The same check as a socket's update, before yrs decodes it.
        let (update, nesting, clocks) = match crate::session::decode_update(&raw, self.max_depth) {
            Ok(decoded) => decoded,
            Err((_, why)) => {
                // The replica now holds what the room will never have (see the module's
                // docs): leave, as a socket refused for this is closed.
                self.room.leave(self.conn.id).await;
                self.left = true;
                return Err(PeerError::Refused(why));
            }
        };
        if update.is_empty() {
            return Ok(out);
        }
        let msg = Inbound::Update {
            update,
            raw,
            nesting,
            clocks,
        };
        if !self.room.inbound(self.conn.id, vec![msg]).await {
            return Err(PeerError::Closed);
        }
        self.sent += 1;
        Ok(out)
    }

    /// Edits sent so far (those that changed something).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// How many of the peer's edits are durable, as it changes.
    pub fn saved(&self) -> watch::Receiver<u64> {
        self.saved.clone()
    }

    /// The other members' awareness states, as they change; `None` unless the peer was
    /// joined with [`PeerOptions::presence`].
    pub fn presence(&self) -> Option<watch::Receiver<Presence>> {
        self.presence.clone()
    }

    /// Waits until every edit sent so far is durable in the store.
    pub async fn durable(&mut self, patience: Duration) -> Result<(), PeerError> {
        let sent = self.sent;
        wait(&mut self.saved, patience, |saved| *saved >= sent).await
    }

    /// Sets the peer's awareness state (a JSON object: its cursor, what it is doing). The
    /// room writes the peer's name and colour into `user`.
    pub async fn set_awareness(&mut self, state: &serde_json::Value) -> Result<(), PeerError> {
        if let Some(rate) = &mut self.rate
            && !rate.take()
        {
            return Err(PeerError::RateLimited);
        }
        self.awareness_clock += 1;
        let entry = Entry {
            client_id: self.client_id(),
            clock: self.awareness_clock,
            state: Bytes::from(state.to_string()),
        };
        if self
            .room
            .inbound(self.conn.id, vec![Inbound::Awareness(vec![entry])])
            .await
        {
            Ok(())
        } else {
            Err(PeerError::Closed)
        }
    }

    /// The next event, or `None` once the peer has left and every event was read.
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        self.events.recv().await
    }

    /// Leaves the room (its awareness state is removed for everyone).
    pub async fn leave(mut self) {
        self.room.leave(self.conn.id).await;
        self.left = true;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
        if self.left {
            return;
        }
        // A peer dropped without `leave` still leaves (from a task: `Drop` cannot await).
        let room = self.room.clone();
        let id = self.conn.id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { room.leave(id).await });
        }
    }
}

struct Watchers {
    events: mpsc::Sender<PeerEvent>,
    synced: watch::Sender<bool>,
    saved: watch::Sender<u64>,
    closed: watch::Sender<bool>,
    presence: Option<watch::Sender<Presence>>,
}

/// Reads what the room queues for the peer: updates go into the replica, `saved` into the
/// durable count, and the close into an event.
async fn read(queue: ConnQueue, doc: Doc, w: Watchers) {
    loop {
        let msg = match queue.next().await {
            Next::Message(m) => m,
            Next::Close => {
                let (code, reason) = queue
                    .close_reason()
                    .cloned()
                    .unwrap_or((CloseCode::Normal, String::new()));
                let _ = w.closed.send(true);
                let _ = w
                    .events
                    .send(PeerEvent::Closed {
                        code: code.code(),
                        reason,
                    })
                    .await;
                return;
            }
        };
        queue.written(&msg);
        match msg {
            Outbound::Binary(frame) => {
                for m in chorus_protocol::sync::decode_frame(frame).flatten() {
                    match m {
                        Message::SyncStep2(u) | Message::Update(u) => {
                            if apply(&doc, &u) {
                                let _ = w.events.try_send(PeerEvent::Changed);
                            }
                            if !*w.synced.borrow() {
                                let _ = w.synced.send(true);
                            }
                        }
                        Message::Awareness(payload) => {
                            if let Some(tx) = &w.presence {
                                record_presence(tx, payload);
                            }
                        }
                        // The room's SyncStep1 asks for what the peer has and it lacks: the
                        // peer sends every edit as it makes it, so there is nothing.
                        _ => {}
                    }
                }
            }
            Outbound::Text(text) => {
                if let Ok(ServerMessage::Saved { updates }) =
                    chorus_protocol::ext::decode_server(&text)
                {
                    let _ = w.saved.send(updates);
                }
            }
            // A peer is never a Hocuspocus member.
            Outbound::Prefixed { .. } | Outbound::Statuses { .. } => {}
        }
    }
}

/// Folds an awareness update into the presence map (newer clocks win, `null` removes).
fn record_presence(tx: &watch::Sender<Presence>, payload: Bytes) {
    let Ok(entries) = chorus_protocol::awareness::decode_update(payload) else {
        return;
    };
    tx.send_if_modified(|map| {
        let mut changed = false;
        for e in entries {
            let newer = map
                .get(&e.client_id)
                .is_none_or(|(clock, _)| e.clock >= *clock);
            if !newer {
                continue;
            }
            if e.is_removal() {
                changed |= map.remove(&e.client_id).is_some();
            } else if let Ok(state) = serde_json::from_slice(&e.state) {
                map.insert(e.client_id, (e.clock, state));
                changed = true;
            }
        }
        changed
    });
}

/// Applies an update from the room to the replica; whether it carried anything (the room
/// sends no empty updates but the SyncStep2 of an empty document).
fn apply(doc: &Doc, update: &[u8]) -> bool {
    let Ok(update) = Update::decode_v1(update) else {
        return false;
    };
    if update.is_empty() {
        return false;
    }
    doc.transact_mut().apply_update(update).is_ok()
}

async fn wait<T>(
    rx: &mut watch::Receiver<T>,
    patience: Duration,
    done: impl Fn(&T) -> bool,
) -> Result<(), PeerError> {
    match tokio::time::timeout(patience, rx.wait_for(|v| done(v))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(PeerError::Closed),
        Err(_) => Err(PeerError::Timeout),
    }
}
