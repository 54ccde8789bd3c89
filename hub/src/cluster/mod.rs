//! Cluster membership: which nodes are live and which one is a room's home.
//!
//! Without `--redis-url` the ring holds this node alone. With it, each node writes
//! `{prefix}:node:<id>` (its id and advertised URL) with a TTL of `--node-ttl`, refreshed
//! every third of it (at least once a second), and adds its id to the set `{prefix}:nodes`; every heartbeat reads the
//! set and the node keys back and rebuilds the ring ([`ring::Ring`], rendezvous hashing). A
//! node whose key expired is dropped from the set by whoever notices. The braces put every key
//! of a cluster in one Redis Cluster hash slot, so the multi-key reads work there too. A node
//! that shuts down deletes its key and leaves the set at once.
//!
//! While Redis is unreachable the node keeps the last ring it saw (plus itself), keeps
//! serving, and `/readyz` says `degraded`.

pub mod bus;
pub mod ring;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config as RedisConfig, Expiration, KeysInterface, ReconnectPolicy,
    SetsInterface,
};
use tokio_util::sync::CancellationToken;

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
    redis: Option<Redis>,
    bus: Option<Arc<bus::Bus>>,
    /// The last heartbeat reached Redis (always true alone).
    healthy: AtomicBool,
}

struct Redis {
    client: Client,
    /// `{prefix}:nodes`
    members: String,
    /// `{prefix}:node:`
    node_prefix: String,
    ttl: Duration,
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

    /// A ring of this node alone.
    pub fn alone(node: Node) -> Arc<Self> {
        Arc::new(Self {
            ring: RwLock::new(Arc::new(Ring::new(vec![node.clone()]))),
            node,
            redis: None,
            bus: None,
            healthy: AtomicBool::new(true),
        })
    }

    /// Joins the cluster at `redis_url`: connects (waiting at most `connect_timeout`, then
    /// carrying on degraded while the client keeps retrying), beats once, and keeps beating
    /// until `stop` is cancelled.
    pub async fn join(
        node: Node,
        redis_url: &str,
        prefix: &str,
        ttl: Duration,
        stop: CancellationToken,
        bus_secret: Option<&[u8]>,
    ) -> anyhow::Result<Arc<Self>> {
        let config =
            RedisConfig::from_url(redis_url).map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
        let sharded = config.server.is_clustered();
        let mut builder = Builder::from_config(config);
        builder
            .with_config(|c| c.fail_fast = true)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                // Rooms publish straight into fred's command queue (`Bus::publish`):
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
        let bus = bus::Bus::start(
            client.clone(),
            subscriber,
            prefix,
            sharded,
            &node.id,
            bus_secret,
        );
        if let Err(e) = bus.listen_for_changes().await {
            tracing::warn!(error = %e, "not subscribed to cache invalidations yet; fred retries");
        }
        let cluster = Arc::new(Self {
            ring: RwLock::new(Arc::new(Ring::new(vec![node.clone()]))),
            node,
            bus: Some(bus),
            redis: Some(Redis {
                client,
                members: format!("{{{prefix}}}:nodes"),
                node_prefix: format!("{{{prefix}}}:node:"),
                ttl,
            }),
            healthy: AtomicBool::new(false),
        });
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
        Ok(cluster)
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

    /// The pub/sub bus (cluster mode).
    pub fn bus(&self) -> Option<Arc<bus::Bus>> {
        self.bus.clone()
    }

    /// Tells the other nodes about `change` (nothing alone).
    pub fn announce(&self, change: &Change) {
        if let Some(bus) = &self.bus {
            bus.announce(change);
        }
    }

    /// Whether the node runs in cluster mode.
    pub fn clustered(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether the last heartbeat reached Redis (always true alone).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Leaves the ring at once (shutdown): deletes this node's key and set entry.
    pub async fn leave(&self) {
        let Some(r) = &self.redis else { return };
        let key = format!("{}{}", r.node_prefix, self.node.id);
        let res: Result<(), fred::error::Error> = async {
            r.client.del::<(), _>(key).await?;
            r.client.srem::<(), _, _>(&r.members, &self.node.id).await
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not leave the ring; it expires in --node-ttl");
        }
    }

    /// Refreshes this node's entry and rebuilds the ring from what Redis holds.
    async fn beat(&self) {
        let Some(r) = &self.redis else { return };
        let res = self.refresh(r).await;
        let was = self.healthy.swap(res.is_ok(), Ordering::AcqRel);
        match res {
            Ok(ring) => {
                if !was {
                    tracing::info!(nodes = ring.len(), "in the ring");
                }
                metrics::gauge!("chorus_cluster_nodes").set(ring.len() as f64);
                let old = std::mem::replace(
                    &mut *self.ring.write().unwrap_or_else(|p| p.into_inner()),
                    Arc::new(ring.clone()),
                );
                // A node that left may have stored updates it never published (it died
                // between the two): every open room reads what the store holds.
                let left: Vec<&str> = old
                    .nodes()
                    .iter()
                    .filter(|n| ring.nodes().iter().all(|m| m.id != n.id))
                    .map(|n| n.id.as_str())
                    .collect();
                if !left.is_empty() {
                    tracing::info!(?left, "nodes left the ring; rooms catch up from the store");
                    if let Some(bus) = &self.bus {
                        bus.catch_up_all();
                    }
                }
            }
            Err(e) if was => {
                tracing::warn!(error = %e, "Redis heartbeat failed; keeping the last ring")
            }
            Err(_) => {}
        }
    }

    async fn refresh(&self, r: &Redis) -> Result<Ring, fred::error::Error> {
        let me = serde_json::json!({ "id": self.node.id, "url": self.node.url }).to_string();
        let ttl_ms = i64::try_from(r.ttl.as_millis()).unwrap_or(i64::MAX);
        r.client
            .set::<(), _, _>(
                format!("{}{}", r.node_prefix, self.node.id),
                me,
                Some(Expiration::PX(ttl_ms)),
                None,
                false,
            )
            .await?;
        r.client.sadd::<(), _, _>(&r.members, &self.node.id).await?;
        let ids: Vec<String> = r.client.smembers(&r.members).await?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}{id}", r.node_prefix))
            .collect();
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            r.client.mget(keys).await?
        };
        let mut nodes = vec![self.node.clone()];
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.as_deref().map(parse_node) {
                Some(Some(n)) if n.id == id => nodes.push(n),
                // Expired (or not ours to read): whoever notices drops it from the set.
                None => gone.push(id),
                Some(_) => tracing::warn!(node = %id, "ignoring a malformed ring entry"),
            }
        }
        if !gone.is_empty() {
            r.client.srem::<(), _, _>(&r.members, gone).await?;
        }
        Ok(Ring::new(nodes))
    }
}

/// A ring entry as another node wrote it; `None` if it is not one.
fn parse_node(json: &str) -> Option<Node> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = v.get("id")?.as_str()?;
    let url = v.get("url")?.as_str()?;
    (valid_node_id(id) && valid_advertise_url(url)).then(|| Node {
        id: id.to_string(),
        url: url.to_string(),
    })
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
