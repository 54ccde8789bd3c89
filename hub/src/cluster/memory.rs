//! The in-memory transport: several nodes in one process share a [`MemoryNetwork`], which
//! carries their rooms' messages and their membership the way Redis does (at most once, each
//! publisher's messages in order, a node's own messages not delivered back), so that
//! multi-node behaviour is tested without Redis. Tests also use it to do what Redis cannot be
//! asked to do on cue: cut a node off ([`MemoryNetwork::sever`]), kill one
//! ([`MemoryNetwork::kill`]) and speak as a stranger ([`MemoryNetwork::inject`]).
//!
//! Envelopes travel encoded, through the same decoder as Redis's. Queues are unbounded: this
//! transport is for tests and single-process set-ups, not for untrusted load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use chorus_persistence::RoomKey;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::broker::{Broker, BrokerError, BrokerHandler, Membership, Topic, handler_of};
use super::envelope::{Envelope, Payload, TraceContext};
use super::{Change, Node};

/// The channel prefix of in-memory topics.
const PREFIX: &str = "memory";

/// What a node's inbox receives.
enum Delivery {
    Message(RoomKey, Bytes),
    Change(Change),
    Lost,
}

#[derive(Default)]
struct Net {
    /// Live nodes, by id.
    nodes: Mutex<HashMap<String, Node>>,
    /// Each node's inbox.
    inboxes: Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
    /// Subscriptions: topic channel -> node id -> count.
    subscribers: Mutex<HashMap<String, HashMap<String, usize>>>,
    /// Nodes cut off: nothing they publish arrives, nothing reaches them, and their beats fail.
    severed: Mutex<HashSet<String>>,
}

impl Net {
    /// Hands `raw` to every node subscribed to `channel` but its sender (none for a
    /// stranger), unless the sender or the receiver is cut off.
    fn deliver(&self, from: Option<&str>, channel: &str, key: &RoomKey, raw: Bytes) {
        let severed = lock(&self.severed);
        if from.is_some_and(|f| severed.contains(f)) {
            return;
        }
        let subscribers = lock(&self.subscribers);
        let Some(nodes) = subscribers.get(channel) else {
            return;
        };
        let inboxes = lock(&self.inboxes);
        for node in nodes.keys() {
            if Some(node.as_str()) == from || severed.contains(node) {
                continue;
            }
            if let Some(inbox) = inboxes.get(node) {
                let _ = inbox.send(Delivery::Message(key.clone(), raw.clone()));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Nodes of one process that see each other (cheap to clone: a shared handle).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    net: Arc<Net>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker of node `node_id`, delivering on a task of the current runtime.
    pub fn broker(&self, node_id: &str) -> Arc<MemoryBroker> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.net.inboxes).insert(node_id.to_string(), tx);
        let broker = Arc::new(MemoryBroker {
            net: self.net.clone(),
            node_id: node_id.to_string(),
            handler: OnceLock::new(),
        });
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let Some(broker) = weak.upgrade() else { break };
                let Some(handler) = handler_of(&broker.handler) else {
                    continue;
                };
                match delivery {
                    Delivery::Message(key, raw) => match Envelope::decode(raw) {
                        Some(envelope) => handler.envelope(&key, envelope),
                        None => tracing::debug!("dropping a message that is not an envelope"),
                    },
                    Delivery::Change(change) => handler.change(change),
                    Delivery::Lost => handler.lost(),
                }
            }
        });
        broker
    }

    /// The membership every node of this network shares.
    pub fn membership(&self) -> Arc<MemoryMembership> {
        Arc::new(MemoryMembership {
            net: self.net.clone(),
        })
    }

    /// Cuts `node_id` off, as a lost connection to Redis would: its messages are dropped both
    /// ways and its beats fail (it keeps its last ring). The others keep it in theirs: this
    /// membership has no TTL, a node leaves it by leaving or by [`MemoryNetwork::kill`].
    pub fn sever(&self, node_id: &str) {
        lock(&self.net.severed).insert(node_id.to_string());
    }

    /// Reconnects a severed node: every node hears that messages may have been lost, as after
    /// a Redis reconnection.
    pub fn heal(&self, node_id: &str) {
        lock(&self.net.severed).remove(node_id);
        for inbox in lock(&self.net.inboxes).values() {
            let _ = inbox.send(Delivery::Lost);
        }
    }

    /// The node died (kill -9): nothing more from it arrives and it leaves the ring without
    /// saying goodbye.
    pub fn kill(&self, node_id: &str) {
        self.sever(node_id);
        lock(&self.net.nodes).remove(node_id);
        lock(&self.net.inboxes).remove(node_id);
        // Its subscriptions die with it: a node restarted under its id starts from none.
        lock(&self.net.subscribers).retain(|_, nodes| {
            nodes.remove(node_id);
            !nodes.is_empty()
        });
    }

    /// Delivers `raw` on the topic of `key` to every subscribed node, as a stranger publishing
    /// on the channel would.
    pub fn inject(&self, key: &RoomKey, raw: Bytes) {
        let channel = Topic::new(PREFIX, key).channel().to_string();
        self.net.deliver(None, &channel, key, raw);
    }

    /// Ids of the nodes subscribed to the topic of `key`.
    pub fn subscribers(&self, key: &RoomKey) -> Vec<String> {
        let channel = Topic::new(PREFIX, key).channel().to_string();
        lock(&self.net.subscribers)
            .get(&channel)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// One node's side of a [`MemoryNetwork`].
pub struct MemoryBroker {
    net: Arc<Net>,
    node_id: String,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
}

impl Broker for MemoryBroker {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn attach(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn topic(&self, key: &RoomKey) -> Topic {
        Topic::new(PREFIX, key)
    }

    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        *lock(&self.net.subscribers)
            .entry(topic.channel().to_string())
            .or_default()
            .entry(self.node_id.clone())
            .or_insert(0) += 1;
        if lock(&self.net.severed).contains(&self.node_id) {
            return Box::pin(std::future::ready(Err(BrokerError("severed".into()))));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, ()> {
        let mut subscribers = lock(&self.net.subscribers);
        let channel = topic.channel().to_string();
        if let Some(nodes) = subscribers.get_mut(&channel) {
            if let Some(n) = nodes.get_mut(&self.node_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    nodes.remove(&self.node_id);
                }
            }
            if nodes.is_empty() {
                subscribers.remove(&channel);
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn publish(&self, topic: &Topic, seq: u64, trace: Option<&TraceContext>, payload: &Payload) {
        let raw = Envelope::encode_parts(&self.node_id, seq, trace, payload);
        self.net
            .deliver(Some(&self.node_id), topic.channel(), topic.key(), raw);
    }

    fn announce(&self, change: &Change) {
        let severed = lock(&self.net.severed);
        if severed.contains(&self.node_id) {
            return;
        }
        for (node, inbox) in lock(&self.net.inboxes).iter() {
            if !severed.contains(node) {
                let _ = inbox.send(Delivery::Change(change.clone()));
            }
        }
    }
}

/// Membership of a [`MemoryNetwork`]: a node is live from its first beat until it leaves or
/// is killed.
pub struct MemoryMembership {
    net: Arc<Net>,
}

impl Membership for MemoryMembership {
    fn beat<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<Vec<Node>, BrokerError>> {
        let res = if lock(&self.net.severed).contains(&me.id) {
            Err(BrokerError("severed".into()))
        } else {
            let mut nodes = lock(&self.net.nodes);
            nodes.insert(me.id.clone(), me.clone());
            Ok(nodes.values().cloned().collect())
        };
        Box::pin(std::future::ready(res))
    }

    fn leave<'a>(&'a self, me: &'a Node) -> BoxFuture<'a, Result<(), BrokerError>> {
        lock(&self.net.nodes).remove(&me.id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::envelope::Payload;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl BrokerHandler for Seen {
        fn envelope(&self, key: &RoomKey, e: Envelope) {
            lock(&self.0).push(format!("{key} {} {}", e.origin, e.seq));
        }
        fn lost(&self) {
            lock(&self.0).push("lost".into());
        }
        fn change(&self, change: Change) {
            lock(&self.0).push(format!("change {}", change.tenant));
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn messages_reach_subscribers_in_order_and_not_their_sender() {
        let net = MemoryNetwork::new();
        let (a, b, c) = (net.broker("a"), net.broker("b"), net.broker("c"));
        let seen: Vec<Arc<Seen>> = (0..3).map(|_| Arc::new(Seen::default())).collect();
        for (broker, seen) in [&a, &b, &c].into_iter().zip(&seen) {
            let weak: Weak<dyn BrokerHandler> = Arc::downgrade(&(seen.clone() as Arc<_>));
            broker.attach(weak);
        }
        let key = RoomKey::new("t", "r");
        let topic = a.topic(&key);
        a.subscribe(&topic).await.expect("a");
        b.subscribe(&topic).await.expect("b");
        for seq in 1..=3 {
            a.publish(
                &topic,
                seq,
                None,
                &Payload::Update(Bytes::from_static(&[0, 0])),
            );
        }
        b.publish(
            &topic,
            1,
            None,
            &Payload::SyncRequest(Bytes::from_static(&[0])),
        );
        settle().await;
        assert_eq!(*lock(&seen[0].0), ["t/r b 1"]);
        assert_eq!(*lock(&seen[1].0), ["t/r a 1", "t/r a 2", "t/r a 3"]);
        assert!(lock(&seen[2].0).is_empty(), "c is not subscribed");

        // Counted subscriptions: the second unsubscribe of b stops its messages.
        b.subscribe(&topic).await.expect("again");
        b.unsubscribe(&topic).await;
        a.publish(
            &topic,
            4,
            None,
            &Payload::Update(Bytes::from_static(&[0, 0])),
        );
        b.unsubscribe(&topic).await;
        a.publish(
            &topic,
            5,
            None,
            &Payload::Update(Bytes::from_static(&[0, 0])),
        );
        settle().await;
        assert_eq!(lock(&seen[1].0).last().map(String::as_str), Some("t/r a 4"));
        assert_eq!(net.subscribers(&key), ["a"]);

        // Severed: nothing either way; healed: everyone hears it may have lost messages.
        b.subscribe(&topic).await.expect("b");
        net.sever("a");
        a.publish(
            &topic,
            6,
            None,
            &Payload::Update(Bytes::from_static(&[0, 0])),
        );
        net.heal("a");
        a.publish(
            &topic,
            7,
            None,
            &Payload::Update(Bytes::from_static(&[0, 0])),
        );
        a.announce(&Change::tenant("acme"));
        settle().await;
        let b_seen = lock(&seen[1].0).clone();
        assert_eq!(
            &b_seen[b_seen.len() - 3..],
            ["lost", "t/r a 7", "change acme"]
        );
        assert!(!b_seen.iter().any(|s| s == "t/r a 6"));

        // A stranger's garbage is dropped by the decoder.
        net.inject(&key, Bytes::from_static(b"not an envelope"));
        settle().await;
        assert_eq!(lock(&seen[1].0).len(), b_seen.len());
    }

    #[tokio::test]
    async fn members_are_live_from_their_first_beat_until_they_leave_or_die() {
        let net = MemoryNetwork::new();
        let m = net.membership();
        let node = |id: &str| Node {
            id: id.into(),
            url: format!("http://{id}"),
        };
        let ids = |nodes: Vec<Node>| {
            let mut ids: Vec<String> = nodes.into_iter().map(|n| n.id).collect();
            ids.sort();
            ids
        };
        m.beat(&node("a")).await.expect("a");
        assert_eq!(ids(m.beat(&node("b")).await.expect("b")), ["a", "b"]);
        m.beat(&node("c")).await.expect("c");
        m.leave(&node("a")).await.expect("leave");
        net.kill("c");
        assert!(m.beat(&node("c")).await.is_err(), "a dead node cannot beat");
        assert_eq!(ids(m.beat(&node("b")).await.expect("b")), ["b"]);
    }
}
