//! Fan-out between nodes: one Redis pub/sub channel per open room,
//! `{prefix}:room:<tenant>/<room>`.
//!
//! A room open on this node subscribes (through [`Bus::join`]) when it loads and unsubscribes
//! when it exits; messages on its channel reach its task as [`Command::Remote`]. Every message
//! carries its origin node and a per-room, per-node sequence number (see [`Envelope`]): a room
//! ignores its own echoes and asks for a resync when a number is skipped. Pub/sub delivers at
//! most once, so rooms also resync when they open and after every reconnection to Redis.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chorus_persistence::RoomKey;
use chorus_protocol::lib0::{self, Decoder};
use dashmap::DashMap;
use fred::bytes_utils::Str;
use fred::clients::{SubscriberClient, WithOptions};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Client;
use tokio::sync::mpsc;

use crate::room::Command;

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

/// One message on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub origin: String,
    /// Its number among the origin's messages for this room, from 1.
    pub seq: u64,
    /// The content.
    pub payload: Payload,
}

const VERSION: u8 = 1;

impl Envelope {
    /// `[version, kind, origin, seq, (to), body]`, lib0-encoded.
    pub fn encode(&self) -> Bytes {
        Self::encode_parts(&self.origin, self.seq, &self.payload)
    }

    /// [`Envelope::encode`] of borrowed parts: a room publishing copies nothing into an
    /// envelope first.
    pub fn encode_parts(origin: &str, seq: u64, payload: &Payload) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + origin.len() + payload.body_len());
        out.extend_from_slice(&[VERSION]);
        let (kind, to, body) = match payload {
            Payload::Update(u) => (1u8, None, u),
            Payload::SyncRequest(sv) => (2, None, sv),
            Payload::SyncReply { to, update } => (3, Some(to.as_str()), update),
            Payload::Awareness(a) => (4, None, a),
        };
        out.extend_from_slice(&[kind]);
        lib0::write_var_string(&mut out, origin);
        lib0::write_var_uint(&mut out, seq);
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
        let payload = match kind {
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
            payload,
        })
    }
}

/// Length of a message's signature (HMAC-SHA256) when `--bus-secret` is set.
const TAG: usize = 32;

fn tag(secret: &[u8], channel: &str, body: &[u8]) -> Option<hmac::Hmac<sha2::Sha256>> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    // The channel is signed too: a message cannot be replayed into another room.
    mac.update(channel.as_bytes());
    mac.update(&[0]);
    mac.update(body);
    Some(mac)
}

/// `body` followed by its signature.
pub fn seal(secret: &[u8], channel: &str, body: Bytes) -> Bytes {
    use hmac::Mac;
    let Some(mac) = tag(secret, channel, &body) else {
        return body;
    };
    let mut out = BytesMut::with_capacity(body.len() + TAG);
    out.extend_from_slice(&body);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out.freeze()
}

/// The body of a sealed message, if its signature is valid (checked in constant time).
pub fn open(secret: &[u8], channel: &str, raw: Bytes) -> Option<Bytes> {
    use hmac::Mac;
    let at = raw.len().checked_sub(TAG)?;
    let body = raw.slice(..at);
    tag(secret, channel, &body)?.verify_slice(&raw[at..]).ok()?;
    Some(body)
}

/// The node's pub/sub connections and the rooms listening on them.
pub struct Bus {
    subscriber: SubscriberClient,
    /// Redis Cluster: sharded pub/sub (SSUBSCRIBE/SPUBLISH), so a message travels only to
    /// the shard that owns its channel instead of to every node of the Redis cluster.
    sharded: bool,
    prefix: String,
    /// This node's id: its own messages come back from Redis and stop here.
    node_id: String,
    rooms: DashMap<String, mpsc::Sender<Command>>,
    /// `{prefix}:changes`, the cluster-wide channel of cache invalidations (compared with
    /// every message received, so built once).
    changes_channel: String,
    /// `--bus-secret`: every message carries an HMAC-SHA256 of its channel and body under it,
    /// and messages without a valid one are dropped (whoever can publish on Redis cannot
    /// speak for a node).
    secret: Option<Arc<[u8]>>,
    /// Where cache invalidations from other nodes go (set once the node's state exists).
    changes: std::sync::OnceLock<mpsc::UnboundedSender<super::Change>>,
    /// When every room last resynced (ms since `epoch`): lags come in bursts, and one
    /// resync of every room answers a burst.
    last_resync: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    /// Sends PUBLISH commands (see [`Bus::publish`]), failing at once while disconnected.
    publisher: WithOptions<Client>,
    /// Publishes sent and awaiting Redis's answer, for the task that counts them.
    sent: mpsc::Sender<Sent>,
}

/// Shortest interval between two resyncs of every room.
const RESYNC_EVERY_MS: u64 = 500;

/// How often a node whose publishes failed checks whether Redis is back.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Publishes awaiting Redis's answer; past this, a publish counts as failed.
const IN_FLIGHT: usize = 65_536;

/// A publish on its way: resolves to whether Redis took it.
type Sent = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

impl Bus {
    /// Starts dispatching what `subscriber` receives; `publisher` sends.
    pub(super) fn start(
        publisher: Client,
        subscriber: SubscriberClient,
        prefix: &str,
        sharded: bool,
        node_id: &str,
        secret: Option<&[u8]>,
    ) -> Arc<Bus> {
        let (sent, mut answers) = mpsc::channel::<Sent>(IN_FLIGHT);
        let probe = publisher.clone();
        let bus = Arc::new(Bus {
            subscriber,
            sharded,
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            changes_channel: format!("{prefix}:changes"),
            secret: secret.map(Arc::from),
            rooms: DashMap::new(),
            changes: std::sync::OnceLock::new(),
            last_resync: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            // fred's default queues commands made while it reconnects and sends them when it
            // is back: stale messages, and memory growing with every edit of an outage. Fail
            // instead; the rooms resync once Redis answers again.
            publisher: publisher.with_options(&fred::types::config::Options {
                fail_fast: true,
                ..Default::default()
            }),
            sent,
        });
        let weak = Arc::downgrade(&bus);
        tokio::spawn(async move {
            // After a failed publish, some room's peers miss an update that no later number
            // may reveal: once publishing works again (a publish succeeds, or the connection
            // is back while nothing is published), every room asks for a sync, and a peer
            // that finds us ahead asks us in turn. The asks are publishes too: if they fail,
            // this starts over.
            use futures_util::StreamExt;
            let mut waiting = futures_util::stream::FuturesUnordered::new();
            let mut failed = false;
            loop {
                let recovered = tokio::select! {
                    next = answers.recv() => match next {
                        Some(f) => {
                            waiting.push(f);
                            false
                        }
                        None => break,
                    },
                    Some(ok) = waiting.next(), if !waiting.is_empty() => {
                        failed |= !ok;
                        ok
                    }
                    _ = tokio::time::sleep(PROBE_EVERY), if failed => probe.is_connected(),
                };
                if failed && recovered {
                    let Some(bus) = weak.upgrade() else { break };
                    failed = !bus.resync_all();
                }
            }
        });
        // Re-subscribes every channel after a reconnection (fred keeps the list).
        // (A spawned task: dropping its handle detaches it.)
        drop(bus.subscriber.manage_subscriptions());
        let mut messages = bus.subscriber.message_rx();
        let mut reconnects = bus.subscriber.reconnect_rx();
        let weak = Arc::downgrade(&bus);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = messages.recv() => {
                        let Some(bus) = weak.upgrade() else { break };
                        match msg {
                            Ok(m) => bus.dispatch(&m.channel, m.value.into_bytes()),
                            // Fell behind: some messages are gone; every room resyncs.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                tracing::warn!(skipped = n, "bus lagged; resyncing rooms");
                                bus.resync_all();
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                    r = reconnects.recv() => {
                        let Some(bus) = weak.upgrade() else { break };
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        // Whatever was published while we were away is lost to us.
                        bus.resync_all();
                    }
                }
            }
        });
        bus
    }

    /// Subscribes to cache invalidations.
    pub(super) async fn listen_for_changes(&self) -> Result<(), fred::error::Error> {
        self.subscribe(self.changes_channel.clone()).await
    }

    async fn subscribe(&self, channel: String) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.ssubscribe(channel).await
        } else {
            self.subscriber.subscribe(channel).await
        }
    }

    /// Delivers other nodes' cache invalidations to `tx` from now on.
    pub fn on_change(&self, tx: mpsc::UnboundedSender<super::Change>) {
        let _ = self.changes.set(tx);
    }

    /// Publishes a cache invalidation to every node.
    pub(super) fn announce(&self, change: &super::Change) {
        match serde_json::to_vec(change) {
            Ok(body) => self.publish(self.changes_channel.as_str().into(), Bytes::from(body)),
            Err(e) => tracing::warn!(error = %e, "cannot encode a cache invalidation"),
        }
    }

    /// The channel of `key`.
    pub fn channel(&self, key: &RoomKey) -> String {
        format!("{}:room:{}/{}", self.prefix, key.tenant, key.room)
    }

    /// Routes the messages of `channel` (a room's, from [`Bus::channel`]) to `tx` from now on;
    /// returns once Redis has the subscription (fred's `subscribe` returns before Redis
    /// processed it: a PING behind it proves it).
    pub async fn join(
        &self,
        channel: &str,
        tx: mpsc::Sender<Command>,
    ) -> Result<(), fred::error::Error> {
        self.rooms.insert(channel.to_string(), tx);
        self.subscribe(channel.to_string()).await?;
        let _: fred::types::Value = self.subscriber.ping(None).await?;
        Ok(())
    }

    /// Stops routing the messages of `channel` (the room exits).
    pub async fn leave(&self, channel: &str) {
        self.rooms.remove(channel);
        let channel = channel.to_string();
        let res = if self.sharded {
            self.subscriber.sunsubscribe(channel).await
        } else {
            self.subscriber.unsubscribe(channel).await
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "unsubscribe failed");
        }
    }

    /// Publishes our message number `seq` on `channel` (a room's, from [`Bus::channel`]).
    /// Never waits: a message fred refuses (disconnected, queue full) is counted as failed,
    /// and the other nodes resync on the gap.
    pub fn send(&self, channel: &Str, seq: u64, payload: &Payload) {
        self.publish(
            channel.clone(),
            Envelope::encode_parts(&self.node_id, seq, payload),
        );
    }

    /// Hands PUBLISH to fred's connection writer from the caller's task. fred queues the
    /// command for its writer in the future's first poll (`send_command`, a `try_send`; only
    /// a `Blocking::Interrupt` policy, which we do not set, could await before it), so polling
    /// it once here puts each room's messages on the connection in the room's order (the test
    /// "a burst of edits crosses nodes in order" fails if they are not), and they pipeline:
    /// the task that published one message at a time waited a round trip for each, about
    /// 250 us under load, which capped a node near 4,000 messages/s. (With Redis Cluster, a
    /// publish redirected by MOVED goes to the back of fred's queue while slots move: a
    /// reorder that the receiving rooms see as a gap and resync.) The answer is awaited by
    /// the task that counts them.
    fn publish(&self, channel: Str, body: Bytes) {
        let body = match &self.secret {
            Some(secret) => seal(secret, &channel, body),
            None => body,
        };
        let mut fut: Sent = Box::pin(publish(self.publisher.clone(), channel, body, self.sharded));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Refused at once (fail-fast while disconnected, fred's queue full) is an answer too.
        if let std::task::Poll::Ready(ok) = fut.as_mut().poll(&mut cx) {
            fut = Box::pin(std::future::ready(ok));
        }
        if self.sent.try_send(fut).is_err() {
            // Its answer cannot be awaited: count it failed, and have the rooms resync in
            // case it was lost.
            metrics::counter!("chorus_redis_publish_errors_total").increment(1);
            self.resync_all();
        }
    }

    fn dispatch(&self, channel: &str, raw: Option<Bytes>) {
        metrics::counter!("chorus_redis_received_total").increment(1);
        let raw = match (&self.secret, raw) {
            (Some(secret), Some(raw)) => {
                let opened = open(secret, channel, raw);
                if opened.is_none() {
                    metrics::counter!("chorus_bus_unsigned_dropped_total").increment(1);
                    tracing::debug!(channel, "dropping a message without a valid signature");
                    return;
                }
                opened
            }
            (_, raw) => raw,
        };
        if channel == self.changes_channel {
            // Our own come back too: forgetting twice is harmless.
            match raw.as_deref().map(serde_json::from_slice::<super::Change>) {
                Some(Ok(change)) => {
                    if let Some(tx) = self.changes.get() {
                        let _ = tx.send(change);
                    }
                }
                _ => tracing::debug!("dropping a malformed cache invalidation"),
            }
            return;
        }
        let Some(envelope) = raw.and_then(Envelope::decode) else {
            tracing::debug!(channel, "dropping a message that is not a Chorus envelope");
            return;
        };
        // Our own, back from Redis: a third of what a node receives when rooms span three.
        if envelope.origin == self.node_id {
            return;
        }
        if let Some(tx) = self.rooms.get(channel) {
            // Never wait here: one slow room must not hold up every other. A dropped message
            // shows as a gap in its sequence, and the room resyncs.
            if tx
                .try_send(Command::Remote {
                    envelope: Box::new(envelope),
                })
                .is_err()
            {
                metrics::counter!("chorus_redis_dropped_total").increment(1);
            }
        }
    }

    /// Every open room reads the store for updates that never reached it over the bus.
    pub(super) fn catch_up_all(&self) {
        for entry in &self.rooms {
            let _ = entry.value().try_send(Command::CatchUp);
        }
    }

    /// Has every open room ask the others for what it lacks; `false` when one was asked for
    /// less than `RESYNC_EVERY_MS` ago and this one was skipped.
    fn resync_all(&self) -> bool {
        use std::sync::atomic::Ordering;
        // At most one in RESYNC_EVERY: a room's own gap detection covers what a later loss
        // in the same burst hides.
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_resync.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < RESYNC_EVERY_MS {
            return false;
        }
        self.last_resync.store(now.max(1), Ordering::Release);
        metrics::counter!("chorus_redis_reconnects_total").increment(1);
        for entry in &self.rooms {
            let _ = entry.value().try_send(Command::Resync);
        }
        true
    }
}

/// Publishes one message (fred's `default_command_timeout` bounds the wait, and marks the
/// command so that it is not sent late). Failures are counted and logged, not returned: rooms
/// keep serving their own members, and the other nodes resync when Redis is back.
async fn publish(publisher: WithOptions<Client>, channel: Str, body: Bytes, sharded: bool) -> bool {
    let started = std::time::Instant::now();
    let res: Result<(), fred::error::Error> = if sharded {
        publisher.spublish(channel, body).await
    } else {
        publisher.publish(channel, body).await
    };
    match res {
        Ok(()) => {
            metrics::counter!("chorus_redis_published_total").increment(1);
            metrics::histogram!("chorus_redis_publish_seconds")
                .record(started.elapsed().as_secs_f64());
            true
        }
        Err(e) => {
            metrics::counter!("chorus_redis_publish_errors_total").increment(1);
            tracing::debug!(error = %e, "publish failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sealed_messages_open_only_with_their_secret_and_channel() {
        let secret = b"a-secret-of-at-least-thirty-two-bytes";
        let body = Bytes::from_static(b"envelope");
        let sealed = super::seal(secret, "p:room:t/r", body.clone());
        assert_eq!(
            super::open(secret, "p:room:t/r", sealed.clone()),
            Some(body)
        );
        assert_eq!(
            super::open(
                b"another-secret-another-secret-xx",
                "p:room:t/r",
                sealed.clone()
            ),
            None
        );
        assert_eq!(super::open(secret, "p:room:t/other", sealed.clone()), None);
        let mut tampered = sealed.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            super::open(secret, "p:room:t/r", Bytes::from(tampered)),
            None
        );
        assert_eq!(
            super::open(secret, "p:room:t/r", Bytes::from_static(b"short")),
            None
        );
    }

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
            let e = Envelope {
                origin: "node-a".into(),
                seq: 300,
                payload,
            };
            assert_eq!(Envelope::decode(e.encode()), Some(e));
        }
        let good = Envelope {
            origin: "a".into(),
            seq: 1,
            payload: Payload::Update(Bytes::from_static(&[9])),
        }
        .encode();
        let mut trailing = good.to_vec();
        trailing.push(0);
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"hello"),
            Bytes::from_static(&[2, 1, 1, b'a', 1, 1, 9]),
            Bytes::from_static(&[1, 7, 1, b'a', 1, 1, 9]),
            good.slice(..good.len() - 1),
            Bytes::from(trailing),
        ] {
            assert_eq!(Envelope::decode(bad.clone()), None, "{bad:?}");
        }
    }
}
