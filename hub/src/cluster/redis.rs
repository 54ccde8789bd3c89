//! The Redis transport: membership keys and one pub/sub channel per open room.
//!
//! Membership ([`RedisMembership`]): each node writes `{prefix}:node:<id>` (its id and
//! advertised URL) with a TTL of `--node-ttl` and adds its id to the set `{prefix}:nodes`;
//! every beat reads the set and the node keys back. A node whose key expired is dropped from
//! the set by whoever notices. The braces put every key of a cluster in one Redis Cluster hash
//! slot, so the multi-key reads work there too. A node that shuts down deletes its key and
//! leaves the set at once.
//!
//! Pub/sub ([`RedisBroker`]): a room open on this node subscribes to
//! `{prefix}:room:<tenant>/<room>` when it loads and unsubscribes when it exits; what arrives
//! goes to the node's [`BrokerHandler`]. This node's own messages come back from Redis and stop
//! here. Pub/sub delivers at most once, so after every reconnection, lag or failed publish the
//! handler hears [`BrokerHandler::lost`] and every room resyncs.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use chorus_persistence::RoomKey;
use dashmap::DashMap;
use fred::bytes_utils::Str;
use fred::clients::{SubscriberClient, WithOptions};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{
    Builder, Client, Config as RedisConfig, Expiration, KeysInterface, ReconnectPolicy,
    SetsInterface,
};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::broker::{Broker, BrokerError, BrokerHandler, Membership, Topic, handler_of};
use super::envelope::{Envelope, Payload, TraceContext};
pub use super::signing::{open, seal};
use super::{Change, Node};

/// What [`connect`] returns: the two halves of the Redis transport.
pub struct Connected {
    /// Membership keys.
    pub membership: Arc<RedisMembership>,
    /// Pub/sub.
    pub broker: Arc<RedisBroker>,
    /// The nodes' queues.
    pub queue: Arc<super::queue::RedisQueue>,
}

/// Connects to `redis_url` (waiting at most 3 s, then carrying on degraded while fred keeps
/// retrying) and starts the broker's dispatch.
pub async fn connect(
    redis_url: &str,
    prefix: &str,
    node_id: &str,
    ttl: Duration,
    secret: Option<&[u8]>,
) -> anyhow::Result<Connected> {
    let config =
        RedisConfig::from_url(redis_url).map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
    let sharded = config.server.is_clustered();
    let mut builder = Builder::from_config(config);
    builder
        .with_config(|c| c.fail_fast = true)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            // Rooms publish straight into fred's command queue (`RedisBroker::publish`):
            // bounded, a full queue refuses at once rather than growing without end.
            c.max_command_buffer_len = 1 << 16;
        })
        .with_performance_config(|c| {
            c.default_command_timeout = Duration::from_secs(2);
            // The subscriber hands every message to the dispatch task through a broadcast
            // channel; at fred's default of 32 a busy node fell behind, every lag made
            // every room resync, and the resyncs made more traffic (an 11 s p99 at 27,000
            // deliveries/s over three nodes).
            c.broadcast_channel_capacity = 1 << 16;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    let client = builder
        .build()
        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
    let subscriber = builder
        .build_subscriber_client()
        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
    client.connect();
    subscriber.connect();
    let connected = tokio::time::timeout(Duration::from_secs(3), async {
        client.wait_for_connect().await?;
        subscriber.wait_for_connect().await
    })
    .await
    .is_ok_and(|r| r.is_ok());
    if !connected {
        tracing::warn!("Redis is unreachable; serving alone until it answers");
    }
    let broker = RedisBroker::start(client.clone(), subscriber, prefix, sharded, node_id, secret);
    if let Err(e) = broker.listen_for_changes().await {
        tracing::warn!(error = %e, "not subscribed to cache invalidations yet; fred retries");
    }
    let queue = super::queue::RedisQueue::new(client.clone(), prefix, node_id, secret);
    Ok(Connected {
        queue,
        membership: Arc::new(RedisMembership {
            client,
            members: format!("{{{prefix}}}:nodes"),
            node_prefix: format!("{{{prefix}}}:node:"),
            ttl,
        }),
        broker,
    })
}

/// Membership in Redis keys (see the module's doc).
pub struct RedisMembership {
    client: Client,
    /// `{prefix}:nodes`
    members: String,
    /// `{prefix}:node:`
    node_prefix: String,
    ttl: Duration,
}

impl Membership for RedisMembership {
    fn beat<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<Vec<Node>, BrokerError>> {
        Box::pin(async move {
            self.refresh(me)
                .await
                .map_err(|e| BrokerError(e.to_string()))
        })
    }

    fn leave<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = format!("{}{}", self.node_prefix, me.id);
            let res: Result<(), fred::error::Error> = async {
                self.client.del::<(), _>(key).await?;
                self.client.srem::<(), _, _>(&self.members, &me.id).await
            }
            .await;
            res.map_err(|e| BrokerError(e.to_string()))
        })
    }

    fn connected(&self) -> bool {
        self.client.is_connected()
    }
}

impl RedisMembership {
    async fn refresh(&self, me: &Node) -> Result<Vec<Node>, fred::error::Error> {
        let entry = serde_json::json!({ "id": me.id, "url": me.url }).to_string();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.client
            .set::<(), _, _>(
                format!("{}{}", self.node_prefix, me.id),
                entry,
                Some(Expiration::PX(ttl_ms)),
                None,
                false,
            )
            .await?;
        self.client.sadd::<(), _, _>(&self.members, &me.id).await?;
        let ids: Vec<String> = self.client.smembers(&self.members).await?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}{id}", self.node_prefix))
            .collect();
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.client.mget(keys).await?
        };
        let mut nodes = vec![me.clone()];
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.as_deref().map(parse_node) {
                Some(Some(n)) if n.id == id => {
                    if n.id != me.id {
                        nodes.push(n);
                    }
                }
                // Expired (or not ours to read): whoever notices drops it from the set.
                None => gone.push(id),
                Some(_) => tracing::warn!(node = %id, "ignoring a malformed ring entry"),
            }
        }
        if !gone.is_empty() {
            self.client.srem::<(), _, _>(&self.members, gone).await?;
        }
        Ok(nodes)
    }
}

/// A ring entry as another node wrote it; `None` if it is not one.
pub(super) fn parse_node(json: &str) -> Option<Node> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = v.get("id")?.as_str()?;
    let url = v.get("url")?.as_str()?;
    (super::valid_node_id(id) && super::valid_advertise_url(url)).then(|| Node {
        id: id.to_string(),
        url: url.to_string(),
    })
}

/// The node's pub/sub connections.
pub struct RedisBroker {
    subscriber: SubscriberClient,
    /// Redis Cluster: sharded pub/sub (SSUBSCRIBE/SPUBLISH), so a message travels only to
    /// the shard that owns its channel instead of to every node of the Redis cluster.
    sharded: bool,
    prefix: String,
    /// This node's id: its own messages come back from Redis and stop here.
    node_id: String,
    /// Subscriptions per room channel, with the room it names (a received message finds its
    /// room here, with no allocation): a room's next incarnation may subscribe before the
    /// last one has unsubscribed, and must not lose its subscription when it does.
    subscriptions: DashMap<String, (usize, RoomKey)>,
    /// A channel's count changes and its (UN)SUBSCRIBE is queued under one of these, chosen
    /// by the channel's hash, so Redis sees each channel's commands in the order of its
    /// count: an incarnation's late UNSUBSCRIBE can never land after its successor's
    /// SUBSCRIBE.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    /// `{prefix}:changes`, the cluster-wide channel of cache invalidations (compared with
    /// every message received, so built once).
    changes_channel: String,
    /// `--bus-secret`: every message carries an HMAC-SHA256 of its channel and body under it,
    /// and messages without a valid one are dropped (whoever can publish on Redis cannot
    /// speak for a node).
    secret: Option<Arc<[u8]>>,
    /// Where what arrives goes (set once the node's state exists).
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// When every room was last told to resync (ms since `epoch`): lags come in bursts, and
    /// one resync of every room answers a burst.
    last_resync: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    /// Sends PUBLISH commands (see [`RedisBroker::send`]), failing at once while
    /// disconnected.
    publisher: WithOptions<Client>,
    /// Publishes sent and awaiting Redis's answer, for the task that counts them.
    sent: mpsc::Sender<Sent>,
}

/// Locks serializing subscription changes (see `RedisBroker::stripes`).
const STRIPES: usize = 64;

/// Shortest interval between two resyncs of every room.
const RESYNC_EVERY_MS: u64 = 500;

/// How often a node whose publishes failed checks whether Redis is back.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Publishes awaiting Redis's answer; past this, a publish counts as failed.
const IN_FLIGHT: usize = 65_536;

/// A publish on its way: resolves to whether Redis took it.
type Sent = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

impl RedisBroker {
    /// Starts dispatching what `subscriber` receives; `publisher` sends.
    fn start(
        publisher: Client,
        subscriber: SubscriberClient,
        prefix: &str,
        sharded: bool,
        node_id: &str,
        secret: Option<&[u8]>,
    ) -> Arc<RedisBroker> {
        let (sent, mut answers) = mpsc::channel::<Sent>(IN_FLIGHT);
        let probe = publisher.clone();
        let bus = Arc::new(RedisBroker {
            subscriber,
            sharded,
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            subscriptions: DashMap::new(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            changes_channel: format!("{prefix}:changes"),
            secret: secret.map(Arc::from),
            handler: OnceLock::new(),
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
                        // fred restores only the subscriptions Redis confirmed: a room that
                        // opened while Redis was away subscribes now.
                        let again = bus.clone();
                        tokio::spawn(async move { again.resubscribe_all().await });
                    }
                }
            }
        });
        bus
    }

    /// Subscribes to cache invalidations.
    async fn listen_for_changes(&self) -> Result<(), fred::error::Error> {
        self.subscribe_channel(self.changes_channel.clone()).await
    }

    async fn subscribe_channel(&self, channel: String) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.ssubscribe(channel).await
        } else {
            self.subscriber.subscribe(channel).await
        }
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
    fn send(&self, channel: Str, body: Bytes) {
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
            metrics::counter!(crate::metrics::names::REDIS_PUBLISH_ERRORS_TOTAL).increment(1);
            self.resync_all();
        }
    }

    fn dispatch(&self, channel: &str, raw: Option<Bytes>) {
        metrics::counter!(crate::metrics::names::REDIS_RECEIVED_TOTAL).increment(1);
        let raw = match (&self.secret, raw) {
            (Some(secret), Some(raw)) => {
                let opened = open(secret, channel, raw);
                if opened.is_none() {
                    metrics::counter!(crate::metrics::names::BUS_UNSIGNED_DROPPED_TOTAL)
                        .increment(1);
                    tracing::debug!(channel, "dropping a message without a valid signature");
                    return;
                }
                opened
            }
            (_, raw) => raw,
        };
        let Some(handler) = handler_of(&self.handler) else {
            return;
        };
        if channel == self.changes_channel {
            // Our own come back too: forgetting twice is harmless.
            match raw.as_deref().map(serde_json::from_slice::<Change>) {
                Some(Ok(change)) => handler.change(change),
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
        // A channel no room listens on any more (its UNSUBSCRIBE is on its way): dropped.
        let Some(key) = self.subscriptions.get(channel).map(|e| e.1.clone()) else {
            return;
        };
        handler.envelope(&key, envelope);
    }

    /// The lock for `channel`'s subscription changes.
    fn stripe(&self, channel: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel);
        &self.stripes[(hash % self.stripes.len() as u64) as usize]
    }

    /// Subscribes again to every channel some room listens on, then has every room ask the
    /// others once more: the asks made at the reconnection may have gone out before this
    /// node (or the asker) listened again, and their answers are lost.
    async fn resubscribe_all(&self) {
        let channels: Vec<String> = self.subscriptions.iter().map(|e| e.key().clone()).collect();
        for channel in channels {
            let _turn = self.stripe(&channel).lock().await;
            if self.subscriptions.contains_key(&channel)
                && let Err(e) = self.subscribe_channel(channel).await
            {
                tracing::debug!(error = %e, "re-subscribe failed; retried at the next reconnection");
                return;
            }
        }
        if self
            .subscriber
            .ping::<fred::types::Value>(None)
            .await
            .is_ok()
            && let Some(handler) = handler_of(&self.handler)
        {
            handler.lost();
        }
    }

    /// Tells the handler that messages may have been lost; `false` when it was told less
    /// than `RESYNC_EVERY_MS` ago and this one was skipped.
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
        metrics::counter!(crate::metrics::names::REDIS_RECONNECTS_TOTAL).increment(1);
        if let Some(handler) = handler_of(&self.handler) {
            handler.lost();
        }
        true
    }
}

impl Broker for RedisBroker {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn attach(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn topic(&self, key: &RoomKey) -> Topic {
        Topic::new(&self.prefix, key)
    }

    /// Resolves once Redis has the subscription (fred's `subscribe` returns before Redis
    /// processed it: a PING behind it proves it).
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let channel = topic.channel().to_string();
            let res: Result<(), fred::error::Error> = {
                let _turn = self.stripe(&channel).lock().await;
                self.subscriptions
                    .entry(channel.clone())
                    .or_insert_with(|| (0, topic.key().clone()))
                    .0 += 1;
                // Queued under the lock: Redis gets this channel's commands in count order.
                self.subscribe_channel(channel).await
            };
            let res = match res {
                Ok(()) => self
                    .subscriber
                    .ping::<fred::types::Value>(None)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            res.map_err(|e| BrokerError(e.to_string()))
        })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let channel = topic.channel().to_string();
            let _turn = self.stripe(&channel).lock().await;
            let last = self
                .subscriptions
                .remove_if_mut(&channel, |_, (n, _)| {
                    *n = n.saturating_sub(1);
                    *n == 0
                })
                .is_some();
            if !last {
                return;
            }
            let res = if self.sharded {
                self.subscriber.sunsubscribe(channel).await
            } else {
                self.subscriber.unsubscribe(channel).await
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, "unsubscribe failed");
            }
        })
    }

    fn publish(&self, topic: &Topic, seq: u64, trace: Option<&TraceContext>, payload: &Payload) {
        self.send(
            topic.channel().clone(),
            Envelope::encode_parts(&self.node_id, seq, trace, payload),
        );
    }

    fn announce(&self, change: &Change) {
        match serde_json::to_vec(change) {
            Ok(body) => self.send(self.changes_channel.as_str().into(), Bytes::from(body)),
            Err(e) => tracing::warn!(error = %e, "cannot encode a cache invalidation"),
        }
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
            metrics::counter!(crate::metrics::names::REDIS_PUBLISHED_TOTAL).increment(1);
            metrics::histogram!(crate::metrics::names::REDIS_PUBLISH_SECONDS)
                .record(started.elapsed().as_secs_f64());
            true
        }
        Err(e) => {
            metrics::counter!(crate::metrics::names::REDIS_PUBLISH_ERRORS_TOTAL).increment(1);
            tracing::debug!(error = %e, "publish failed");
            false
        }
    }
}
