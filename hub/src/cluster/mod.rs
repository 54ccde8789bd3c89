//! The cluster: which nodes are live, which one is a room's home, and the transport between
//! them.
//!
//! Alone (no `--redis-url`) the ring holds this node alone and there is no transport. In a
//! cluster, a [`broker::Membership`] and a [`broker::Broker`] carry it: Redis ([`redis`]) in
//! production, or an in-process [`memory::MemoryNetwork`] for tests. Each node beats every
//! third of `--node-ttl` (at least once a second) and rebuilds the ring ([`ring::Ring`],
//! rendezvous hashing) from the live nodes the beat returns. When a node leaves the ring the
//! cluster says so on [`Cluster::departures`]: the node's rooms then read the store for what
//! the departed node stored but never published.
//!
//! While the transport is unreachable the node keeps the last ring it saw (plus itself),
//! keeps serving, and `/readyz` says `degraded`.

pub mod broker;
pub mod envelope;
pub mod memory;
pub mod queue;
pub mod redis;
pub mod ring;
mod signing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use broker::{Broker, Membership};
pub use ring::{Node, Ring};

/// A change to a tenant's cached settings, verification keys or API keys, made through one
/// node's REST API: every node forgets its cached copy (in a cluster, through Redis), so a
/// revoked key stops working everywhere at once instead of after the caches' TTLs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The tenant.
    pub tenant: String,
    /// One API key to forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Forget every API key of the tenant (it was deleted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_api_keys: bool,
}

impl Change {
    /// The tenant's settings or verification keys changed.
    pub fn tenant(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            api_key: None,
            all_api_keys: false,
        }
    }
}

use crate::config::Config;

/// Whether `id` may name a node: 1-64 of `[A-Za-z0-9._-]`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `url` can be advertised: http(s) with a host.
pub fn valid_advertise_url(url: &str) -> bool {
    url::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// This node's view of the cluster.
pub struct Cluster {
    node: Node,
    ring: RwLock<Arc<Ring>>,
    /// The transport: `None` alone.
    link: Option<Link>,
    /// The last beat reached the membership (always true alone).
    healthy: AtomicBool,
    /// Counts ring changes in which some node left (see [`Cluster::departures`]).
    departures: watch::Sender<u64>,
}

struct Link {
    membership: Arc<dyn Membership>,
    broker: Arc<dyn Broker>,
    /// Work handed between nodes (Redis; none in memory, where runs stay where asked).
    queue: Option<Arc<dyn queue::RunQueue>>,
}

impl Cluster {
    /// This node's identity from `config`: `--node-id` (or a random one) and
    /// `--advertise-url` (or `http://` + the address it listens on, `addr`).
    pub fn node_of(config: &Config, addr: std::net::SocketAddr) -> Node {
        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:012x}", rand::random::<u64>() >> 16));
        let url = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        Node { id, url }
    }

    fn new(node: Node, link: Option<Link>) -> Self {
        Self {
            ring: RwLock::new(Arc::new(Ring::new(vec![node.clone()]))),
            node,
            healthy: AtomicBool::new(link.is_none()),
            link,
            departures: watch::Sender::new(0),
        }
    }

    /// A ring of this node alone.
    pub fn alone(node: Node) -> Arc<Self> {
        Arc::new(Self::new(node, None))
    }

    /// Joins the cluster at `redis_url`: connects (waiting at most 3 s, then carrying on
    /// degraded while the client keeps retrying), beats once, and keeps beating until `stop`
    /// is cancelled.
    pub async fn join(
        node: Node,
        redis_url: &str,
        prefix: &str,
        ttl: Duration,
        stop: CancellationToken,
        bus_secret: Option<&[u8]>,
    ) -> anyhow::Result<Arc<Self>> {
        let redis = redis::connect(redis_url, prefix, &node.id, ttl, bus_secret).await?;
        let queue: Arc<dyn queue::RunQueue> = redis.queue;
        Ok(Self::start_with(node, redis.membership, redis.broker, Some(queue), ttl, stop).await)
    }

    /// Joins the cluster that `membership` and `broker` carry (see [`Cluster::join`]).
    pub async fn start(
        node: Node,
        membership: Arc<dyn Membership>,
        broker: Arc<dyn Broker>,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Self::start_with(node, membership, broker, None, ttl, stop).await
    }

    /// [`Cluster::start`] with a queue of work handed between nodes.
    pub async fn start_with(
        node: Node,
        membership: Arc<dyn Membership>,
        broker: Arc<dyn Broker>,
        queue: Option<Arc<dyn queue::RunQueue>>,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let cluster = Arc::new(Self::new(
            node,
            Some(Link {
                membership,
                broker,
                queue,
            }),
        ));
        cluster.beat().await;
        let beating = cluster.clone();
        tokio::spawn(async move {
            // Every third of the TTL, and at least once a second so that rings converge
            // quickly when a node joins or leaves.
            let every = (ttl / 3).min(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(every) => beating.beat().await,
                }
            }
        });
        cluster
    }

    /// This node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The ring as of the last heartbeat.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The room's home node (this node when the ring knows no better).
    pub fn home(&self, room: &str) -> Node {
        self.ring()
            .home(room)
            .cloned()
            .unwrap_or_else(|| self.node.clone())
    }

    /// Whether this node is the room's home (true when the ring knows no better). Allocates
    /// nothing: rooms ask it on the way to a compaction.
    pub fn is_home(&self, room: &str) -> bool {
        self.ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .home(room)
            .is_none_or(|n| n.id == self.node.id)
    }

    /// The broker (cluster mode).
    pub fn broker(&self) -> Option<Arc<dyn Broker>> {
        self.link.as_ref().map(|l| l.broker.clone())
    }

    /// The queue of work handed between nodes (a Redis cluster).
    pub fn queue(&self) -> Option<Arc<dyn queue::RunQueue>> {
        self.link.as_ref().and_then(|l| l.queue.clone())
    }

    /// Whether `node` is in the ring as of the last heartbeat.
    pub fn has(&self, node: &str) -> bool {
        self.ring().nodes().iter().any(|n| n.id == node)
    }

    /// Changes whenever some node leaves the ring (it may have stored updates it never
    /// published, dying between the two).
    pub fn departures(&self) -> watch::Receiver<u64> {
        self.departures.subscribe()
    }

    /// Tells the other nodes about `change` (nothing alone).
    pub fn announce(&self, change: &Change) {
        if let Some(link) = &self.link {
            link.broker.announce(change);
        }
    }

    /// Whether the node runs in cluster mode.
    pub fn clustered(&self) -> bool {
        self.link.is_some()
    }

    /// Whether the last heartbeat reached the membership (always true alone).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Leaves the ring at once (shutdown).
    pub async fn leave(&self) {
        let Some(link) = &self.link else { return };
        if let Err(e) = link.membership.leave(&self.node).await {
            tracing::warn!(error = %e, "could not leave the ring; it expires in --node-ttl");
        }
    }

    /// Refreshes this node's entry and rebuilds the ring from the live nodes.
    async fn beat(&self) {
        let Some(link) = &self.link else { return };
        let res = link.membership.beat(&self.node).await;
        let was = self.healthy.swap(res.is_ok(), Ordering::AcqRel);
        match res {
            Ok(mut nodes) => {
                if nodes.iter().all(|n| n.id != self.node.id) {
                    nodes.push(self.node.clone());
                }
                let ring = Ring::new(nodes);
                if !was {
                    tracing::info!(nodes = ring.len(), "in the ring");
                }
                self.install(ring);
            }
            Err(e) if was => {
                tracing::warn!(error = %e, "cluster heartbeat failed; keeping the last ring")
            }
            Err(_) => {}
        }
    }

    /// Makes `ring` the current one, and says so on `departures` when a node left.
    fn install(&self, ring: Ring) {
        metrics::gauge!(crate::metrics::names::CLUSTER_NODES).set(ring.len() as f64);
        let old = std::mem::replace(
            &mut *self.ring.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(ring.clone()),
        );
        let left: Vec<&str> = old
            .nodes()
            .iter()
            .filter(|n| ring.nodes().iter().all(|m| m.id != n.id))
            .map(|n| n.id.as_str())
            .collect();
        if !left.is_empty() {
            tracing::info!(?left, "nodes left the ring; rooms catch up from the store");
            self.departures.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_urls_are_checked() {
        assert!(valid_node_id("node-1.eu_west"));
        for bad in ["", "a b", "x/y", "é", &"n".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
        assert!(valid_advertise_url("http://10.0.0.1:8080"));
        assert!(valid_advertise_url("https://chorus-2.example.com"));
        for bad in ["", "ws://h", "http://", "not a url", "file:///etc/passwd"] {
            assert!(!valid_advertise_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn ring_entries_from_redis_are_checked() {
        use super::redis::parse_node;
        assert_eq!(
            parse_node(r#"{"id":"n1","url":"http://h:1"}"#),
            Some(Node {
                id: "n1".into(),
                url: "http://h:1".into()
            })
        );
        for bad in [
            "",
            "null",
            r#"{"id":"n1"}"#,
            r#"{"id":"bad id","url":"http://h"}"#,
            r#"{"id":"n1","url":"javascript:alert(1)"}"#,
            r#"{"id":7,"url":"http://h"}"#,
        ] {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn alone_the_node_is_every_rooms_home() {
        let me = Node {
            id: "solo".into(),
            url: "http://127.0.0.1:8080".into(),
        };
        let c = Cluster::alone(me.clone());
        assert_eq!(c.home("any"), me);
        assert!(c.healthy() && !c.clustered());
        assert_eq!(c.ring().len(), 1);
    }
}
