//! The cluster's transport behind two small traits, so that the rest of the node never names
//! Redis: a [`Broker`] carries rooms' messages between nodes (subscribe, unsubscribe, publish
//! envelopes, announce cache invalidations) and [`Membership`] says which nodes are live.
//!
//! Two implementations: Redis (`super::redis`, what a cluster runs on) and in memory
//! (`super::memory`, several nodes in one process, for tests). Both are at-most-once, like
//! Redis pub/sub: a room detects a skipped sequence number and resyncs, and a broker that may
//! have lost messages tells its [`BrokerHandler::lost`] so that every room resyncs.
//!
//! Messages go one way only: a broker hands what it receives to a [`BrokerHandler`] (the node
//! routes them to its rooms), and never knows what a room is. Modelled on centrifuge's
//! `Broker` (broker.go) and its memory broker (broker_memory.go).

use std::sync::{Arc, Weak};

use chorus_persistence::RoomKey;
use futures_util::future::BoxFuture;

use super::envelope::{Envelope, Payload, TraceContext};
use super::{Change, Node};

/// Why a broker or membership call failed (the transport's error, as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

/// A room's topic: the key and the channel name derived from it once, so that publishing
/// builds no string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    key: RoomKey,
    channel: fred::bytes_utils::Str,
}

impl Topic {
    /// The topic of `key` under `prefix`: `{prefix}:room:<tenant>/<room>`. Tenant ids hold no
    /// `/` (`tenants::valid_id`), so the channel names its room unambiguously.
    pub fn new(prefix: &str, key: &RoomKey) -> Self {
        Topic {
            channel: format!("{prefix}:room:{}/{}", key.tenant, key.room).into(),
            key: key.clone(),
        }
    }

    /// The room.
    pub fn key(&self) -> &RoomKey {
        &self.key
    }

    /// The channel name.
    pub fn channel(&self) -> &fred::bytes_utils::Str {
        &self.channel
    }
}

/// Where a broker delivers what other nodes sent. Implemented by the node, which routes
/// envelopes to its rooms: the broker holds it weakly and never waits on it.
pub trait BrokerHandler: Send + Sync {
    /// Another node's message on the topic of `key` (this node's own never come back).
    /// Must not wait: a room whose queue is full drops it and resyncs on the gap.
    fn envelope(&self, key: &RoomKey, envelope: Envelope);
    /// Messages may have been lost (a reconnection, a lag, a failed publish): every open room
    /// should ask the others for what it lacks.
    fn lost(&self);
    /// Another node's cache invalidation.
    fn change(&self, change: Change);
}

/// Pub/sub between the nodes of a cluster.
pub trait Broker: Send + Sync {
    /// This node's id, stamped on every envelope it publishes.
    fn node_id(&self) -> &str;
    /// Delivers what arrives from now on to `handler`. Called once, when the node is built.
    fn attach(&self, handler: Weak<dyn BrokerHandler>);
    /// The topic of `key`.
    fn topic(&self, key: &RoomKey) -> Topic;
    /// Starts receiving the topic's messages; resolves once the transport has the
    /// subscription, so that answers to a request published next are received. Counted: a
    /// room's next incarnation may subscribe before the last one unsubscribes.
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Undoes one [`Broker::subscribe`]; the last one stops the topic's messages.
    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, ()>;
    /// Publishes this node's message number `seq` on `topic`, continuing `trace` if any.
    /// Never waits; a message the transport refuses is counted as failed, and the other nodes
    /// resync on the gap. Messages of one topic published from one task leave in the order
    /// published.
    fn publish(&self, topic: &Topic, seq: u64, trace: Option<&TraceContext>, payload: &Payload);
    /// Publishes a cache invalidation to every node.
    fn announce(&self, change: &Change);
}

/// Which nodes are live.
pub trait Membership: Send + Sync {
    /// Says that `me` is live (until the transport's TTL passes without another beat) and
    /// returns every live node, `me` included.
    fn beat<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<Vec<Node>, BrokerError>>;
    /// Leaves at once (shutdown).
    fn leave<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Whether the transport is connected now (a degraded node checks it to recover).
    fn connected(&self) -> bool {
        true
    }
}

/// The handler, if the node still exists.
pub(super) fn handler_of(
    slot: &std::sync::OnceLock<Weak<dyn BrokerHandler>>,
) -> Option<Arc<dyn BrokerHandler>> {
    slot.get().and_then(Weak::upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_their_room() {
        let key = RoomKey::new("acme", "notes/2026 plan");
        let t = Topic::new("chorus", &key);
        assert_eq!(&**t.channel(), "chorus:room:acme/notes/2026 plan");
        assert_eq!(t.key(), &key);
    }
}
