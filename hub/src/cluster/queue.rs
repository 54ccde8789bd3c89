//! Work handed between nodes, at least once: each node consumes its own queue, and the
//! survivors take over the entries of a node that died. The assistant hands its runs to the
//! room's home node this way (`crate::ai::handoff`); pub/sub could lose a run.
//!
//! The Redis implementation ([`RedisQueue`]) is one stream per node, `{prefix}:ai:<node>`,
//! read through the consumer group `runs` by the node as consumer `<node>`. An entry stays
//! pending until the node acknowledges it; while it works on one it keeps the entry's idle
//! time low ([`RunQueue::touch`]), so an entry idle for long belongs to a node that stopped.
//! Survivors take such entries with XAUTOCLAIM ([`RunQueue::claim`]). The set
//! `{prefix}:ai-queues` names every node that has a queue, so survivors know where to look.
//! With `--bus-secret`, entries are signed like bus messages and unsigned ones are dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface, SetsInterface, StreamsInterface};
use fred::prelude::Client;
use fred::types::Value;
use fred::types::streams::{XCap, XID};
use futures_util::future::BoxFuture;

use super::broker::BrokerError;
use super::signing::{open, seal};

/// The largest entry a node accepts from the queue (a run's request is a few KiB).
pub const MAX_ENTRY: usize = 1 << 20;

/// One entry of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Its id in the queue.
    pub id: String,
    /// Its body (checked against `--bus-secret`; `None` when unsigned, forged or too large:
    /// acknowledge and drop it).
    pub body: Option<Bytes>,
}

/// The nodes' queues.
pub trait RunQueue: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// Appends `body` to `node`'s queue.
    fn push<'a>(&'a self, node: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Entries of this node's queue: new ones (waiting at most `wait` for one), or, with
    /// `pending`, those delivered to this node before and never acknowledged (a previous
    /// life of a node with the same id).
    fn read(
        &self,
        pending: bool,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<QueueEntry>, BrokerError>>;
    /// Done with entry `id` of `node`'s queue: it is removed.
    fn ack<'a>(&'a self, node: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// This node still works on `ids` of its own queue: their idle time starts again.
    fn touch<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// The nodes that have a queue.
    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>>;
    /// Takes over `node`'s entries: those pending for at least `idle`, and those never
    /// delivered. They become this node's, to settle and acknowledge on `node`'s queue.
    fn claim<'a>(
        &'a self,
        node: &'a str,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Vec<QueueEntry>, BrokerError>>;
    /// Removes `node`'s queue if nothing is left in it.
    fn forget<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// Consumer group of every queue.
const GROUP: &str = "runs";
/// Entries a queue keeps at most (approximately): a node that cannot keep up drops the oldest
/// rather than filling Redis.
const CAP: i64 = 100_000;
/// Entries read or claimed at once.
const BATCH: u64 = 64;

/// The queues in Redis streams (see the module's doc).
pub struct RedisQueue {
    /// Commands that return at once.
    client: Client,
    /// Its own connection for the blocking read, so that it holds up nothing else.
    blocking: Client,
    prefix: String,
    node_id: String,
    mine: String,
    secret: Option<Arc<[u8]>>,
    /// This node's queue and group exist (as far as we know: a read that finds no group
    /// clears it, and the next read creates them again).
    ready: std::sync::atomic::AtomicBool,
}

/// Entries as Redis sends them: `[id, [field, value, ...]]`, or `[id, nil]` for an entry
/// deleted while pending.
fn raw_entries(list: Value) -> Vec<(String, Option<Bytes>)> {
    let Value::Array(list) = list else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let mut parts = parts.into_iter();
            let id = match parts.next()? {
                Value::String(id) => id.to_string(),
                Value::Bytes(id) => String::from_utf8(id.to_vec()).ok()?,
                _ => return None,
            };
            let fields = parts.next().unwrap_or(Value::Null);
            let mut body = None;
            if !fields.is_null() {
                let mut kv = fields.into_array().into_iter();
                while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                    if k.as_str().as_deref() == Some("m") {
                        body = v.into_bytes();
                    }
                }
            }
            Some((id, body))
        })
        .collect()
}

/// The entries of XREADGROUP's answer for one stream: `[[key, entries]]` (RESP2), a map of
/// key to entries (RESP3), or nil when nothing came.
fn read_answer(answer: Value) -> Vec<(String, Option<Bytes>)> {
    match answer {
        Value::Null => Vec::new(),
        Value::Map(map) => map.inner().into_values().flat_map(raw_entries).collect(),
        other => other
            .into_array()
            .into_iter()
            .flat_map(|pair| {
                let mut kv = pair.into_array().into_iter();
                let _key = kv.next();
                kv.next().map(raw_entries).unwrap_or_default()
            })
            .collect(),
    }
}

impl RedisQueue {
    /// The queues under `prefix`, as node `node_id`.
    pub(super) fn new(
        client: Client,
        prefix: &str,
        node_id: &str,
        secret: Option<&[u8]>,
    ) -> Arc<Self> {
        let blocking = client.clone_new();
        blocking.connect();
        Arc::new(RedisQueue {
            mine: format!("{{{prefix}}}:ai:{node_id}"),
            client,
            blocking,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            secret: secret.map(Arc::from),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn key(&self, node: &str) -> String {
        format!("{{{}}}:ai:{node}", self.prefix)
    }

    fn set(&self) -> String {
        format!("{{{}}}:ai-queues", self.prefix)
    }

    /// Creates this node's queue and group if they are missing, and names it in the set.
    async fn ensure_mine(&self) -> Result<(), fred::error::Error> {
        match self
            .client
            .xgroup_create::<(), _, _, _>(&self.mine, GROUP, "0", true)
            .await
        {
            Ok(()) => {}
            Err(e) if e.details().contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.client
            .sadd::<(), _, _>(self.set(), &self.node_id)
            .await
    }

    fn entries(&self, key: &str, raw: Vec<(String, Option<Bytes>)>) -> Vec<QueueEntry> {
        raw.into_iter()
            .map(|(id, body)| {
                let body = body.filter(|b| b.len() <= MAX_ENTRY);
                let body = match (&self.secret, body) {
                    (Some(secret), Some(b)) => open(secret, key, b),
                    (None, b) => b,
                    (_, None) => None,
                };
                QueueEntry { id, body }
            })
            .collect()
    }
}

fn err(e: fred::error::Error) -> BrokerError {
    BrokerError(e.to_string())
}

impl RunQueue for RedisQueue {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn push<'a>(&'a self, node: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = self.key(node);
            let body = match &self.secret {
                Some(secret) => seal(secret, &key, body),
                None => body,
            };
            self.client
                .xadd::<(), _, _, _, _>(
                    &key,
                    false,
                    XCap::try_from(("MAXLEN", "~", CAP)).map_err(err)?,
                    XID::Auto,
                    vec![("m", body)],
                )
                .await
                .map_err(err)
        })
    }

    fn read(
        &self,
        pending: bool,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<QueueEntry>, BrokerError>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            if !self.ready.load(Ordering::Acquire) {
                self.ensure_mine().await.map_err(err)?;
                self.ready.store(true, Ordering::Release);
            }
            let block = (!pending).then(|| u64::try_from(wait.as_millis()).unwrap_or(1000));
            let id = if pending { "0" } else { ">" };
            let answer = self
                .blocking
                .xreadgroup::<Value, _, _, _, _>(
                    GROUP,
                    &self.node_id,
                    Some(BATCH),
                    block,
                    false,
                    &self.mine,
                    id,
                )
                .await
                .map_err(|e| {
                    // Redis lost the stream (a restart without persistence, or a survivor
                    // removed it while this node was out of the ring): create it again.
                    if e.details().contains("NOGROUP") {
                        self.ready.store(false, Ordering::Release);
                    }
                    err(e)
                })?;
            Ok(self.entries(&self.mine, read_answer(answer)))
        })
    }

    fn ack<'a>(&'a self, node: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = self.key(node);
            self.client
                .xack::<(), _, _, _>(&key, GROUP, id)
                .await
                .map_err(err)?;
            self.client.xdel::<(), _, _>(&key, id).await.map_err(err)
        })
    }

    fn touch<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            self.client
                .xclaim::<fred::types::Value, _, _, _, _>(
                    &self.mine,
                    GROUP,
                    &self.node_id,
                    0,
                    ids.to_vec(),
                    None,
                    None,
                    None,
                    false,
                    true,
                )
                .await
                .map(drop)
                .map_err(err)
        })
    }

    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(async move { self.client.smembers(self.set()).await.map_err(err) })
    }

    fn claim<'a>(
        &'a self,
        node: &'a str,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Vec<QueueEntry>, BrokerError>> {
        Box::pin(async move {
            let key = self.key(node);
            let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
            // `[cursor, entries, deleted ids]`.
            let claimed = self
                .client
                .xautoclaim::<Value, _, _, _, _>(
                    &key,
                    GROUP,
                    &self.node_id,
                    idle_ms,
                    "0-0",
                    Some(BATCH),
                    false,
                )
                .await;
            let mut out = match claimed {
                Ok(answer) => {
                    let entries = answer
                        .into_array()
                        .into_iter()
                        .nth(1)
                        .unwrap_or(Value::Null);
                    self.entries(&key, raw_entries(entries))
                }
                Err(e) if e.details().contains("NOGROUP") => return Ok(Vec::new()),
                Err(e) => return Err(err(e)),
            };
            // Entries the node never read: nobody else will.
            let fresh = self
                .client
                .xreadgroup::<Value, _, _, _, _>(
                    GROUP,
                    &self.node_id,
                    Some(BATCH),
                    None,
                    false,
                    &key,
                    ">",
                )
                .await
                .map_err(err)?;
            out.extend(self.entries(&key, read_answer(fresh)));
            Ok(out)
        })
    }

    fn forget<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = self.key(node);
            let len: u64 = self.client.xlen(&key).await.map_err(err)?;
            if len == 0 {
                self.client.del::<(), _>(&key).await.map_err(err)?;
                self.client
                    .srem::<(), _, _>(self.set(), node)
                    .await
                    .map_err(err)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn redis_answers_parse_and_odd_ones_give_nothing() {
        let entry = |id: &str, body: Option<&str>| {
            Value::Array(vec![
                s(id),
                match body {
                    Some(b) => Value::Array(vec![
                        s("m"),
                        Value::Bytes(Bytes::copy_from_slice(b.as_bytes())),
                    ]),
                    None => Value::Null,
                },
            ])
        };
        let answer = Value::Array(vec![Value::Array(vec![
            s("{p}:ai:n1"),
            Value::Array(vec![entry("1-0", Some("a")), entry("2-0", None)]),
        ])]);
        assert_eq!(
            read_answer(answer),
            vec![
                ("1-0".to_owned(), Some(Bytes::from_static(b"a"))),
                ("2-0".to_owned(), None)
            ]
        );
        assert!(read_answer(Value::Null).is_empty());
        // An entry without the field, or with others only.
        let odd = Value::Array(vec![Value::Array(vec![
            s("k"),
            Value::Array(vec![Value::Array(vec![
                s("3-0"),
                Value::Array(vec![s("x"), s("y")]),
            ])]),
        ])]);
        assert_eq!(read_answer(odd), vec![("3-0".to_owned(), None)]);
        assert!(raw_entries(Value::Integer(7)).is_empty());
    }
}
