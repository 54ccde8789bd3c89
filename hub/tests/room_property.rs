//! The room as a whole, without sockets: members are outbound queues read in the test, the
//! store is SQLite behind a wrapper that fails on demand, and the other nodes are one "ghost"
//! node on the in-memory broker, played by the test: it stores its own edits and publishes
//! them, and some of its messages are lost (sequence gaps). Random interleavings of local and
//! remote edits, lost messages, store failures, waits, compactions (a tiny threshold) and room
//! restarts always end with every member and the store holding the same document as a
//! reference replica, and no member is ever told `saved` for an update the store does not
//! hold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_hub::auth::Role;
use chorus_hub::cluster::broker::{Broker, BrokerHandler, Topic};
use chorus_hub::cluster::envelope::{Envelope, Payload};
use chorus_hub::cluster::memory::{MemoryBroker, MemoryNetwork};
use chorus_hub::outbound::{self, ConnQueue, Next, Outbound};
use chorus_hub::registry::{Registry, RoomHandle};
use chorus_hub::room::{Inbound, RoomContext, RoomLimits};
use chorus_persistence::{
    AppendBatch, CompactStats, DocStore, LoadedDoc, LogSummary, Persister, RoomKey, SqliteStore,
    Store, StoreError,
};
use chorus_protocol::ext::ServerMessage;
use chorus_protocol::sync::Message;
use proptest::prelude::*;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, Text, Transact, Update};

/// SQLite, failing every write while `failing` is set.
struct Flaky {
    inner: Arc<SqliteStore>,
    failing: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Task("injected failure".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl DocStore for Flaky {
    async fn load(&self, key: &RoomKey) -> Result<LoadedDoc, StoreError> {
        self.inner.load(key).await
    }
    async fn append(&self, batches: &[AppendBatch]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append(batches).await
    }
    async fn log_summary(&self, key: &RoomKey) -> Result<LogSummary, StoreError> {
        self.inner.log_summary(key).await
    }
    async fn write_snapshot(
        &self,
        key: &RoomKey,
        upto: i64,
        snapshot: &[u8],
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write_snapshot(key, upto, snapshot).await
    }
    async fn compact_exclusive(&self, key: &RoomKey) -> Result<Option<CompactStats>, StoreError> {
        self.check()?;
        self.inner.compact_exclusive(key).await
    }
    async fn delete_room(&self, key: &RoomKey) -> Result<(), StoreError> {
        self.inner.delete_room(key).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[derive(Debug, Clone)]
enum Op {
    Edit {
        member: usize,
        text: String,
    },
    /// The ghost node edits, stores its edit, and publishes it unless the message is `lost`.
    Remote {
        text: String,
        lost: bool,
    },
    Fail(bool),
    Wait(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, "[a-z]{1,4}").prop_map(|(member, text)| Op::Edit { member, text }),
        3 => ("[A-Z]{1,3}", prop::bool::weighted(0.3))
            .prop_map(|(text, lost)| Op::Remote { text, lost }),
        1 => any::<bool>().prop_map(Op::Fail),
        2 => (0..40u64).prop_map(Op::Wait),
        1 => Just(Op::Restart),
    ]
}

/// The other node, played by the test: its replica of the room, and its side of the broker.
struct Ghost {
    doc: yrs::Doc,
    broker: Arc<MemoryBroker>,
    topic: Topic,
    seq: AtomicU64,
}

const GHOST: &str = "ghost";

impl Ghost {
    fn publish(&self, payload: &Payload) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.broker.publish(&self.topic, seq, None, payload);
    }
}

/// What a node does with the room's messages: applies updates, answers sync requests with
/// what the asker lacks, and asks back when the asker holds something it lacks.
impl BrokerHandler for Ghost {
    fn envelope(&self, _key: &RoomKey, envelope: Envelope) {
        use yrs::updates::encoder::Encode;
        match envelope.payload {
            Payload::Update(u) => {
                if let Ok(u) = Update::decode_v1(&u) {
                    let _ = self.doc.transact_mut().apply_update(u);
                }
            }
            Payload::SyncReply { to, update } if to == GHOST => {
                if let Ok(u) = Update::decode_v1(&update) {
                    let _ = self.doc.transact_mut().apply_update(u);
                }
            }
            Payload::SyncRequest(sv) => {
                let Ok(sv) = yrs::StateVector::decode_v1(&sv) else {
                    return;
                };
                let (diff, ours) = {
                    let txn = self.doc.transact();
                    (txn.encode_state_as_update_v1(&sv), txn.state_vector())
                };
                if diff.len() > 2 {
                    self.publish(&Payload::SyncReply {
                        to: envelope.origin,
                        update: Bytes::from(diff),
                    });
                }
                if sv.iter().any(|(c, clock)| *clock > ours.get(c)) {
                    self.publish(&Payload::SyncRequest(Bytes::from(ours.encode_v1())));
                }
            }
            Payload::SyncReply { .. } | Payload::Awareness(_) => {}
        }
    }
    fn lost(&self) {}
    fn change(&self, _change: chorus_hub::cluster::Change) {}
}

/// One member: its replica, what it sent, and what it was told is saved.
struct Member {
    doc: yrs::Doc,
    conn: chorus_hub::outbound::ConnHandle,
    room: RoomHandle,
    // The member's own clock after each of its updates, in order.
    clocks: Vec<u32>,
    saved: Arc<AtomicU64>,
}

const KEY_TENANT: &str = "default";

async fn join(
    registry: &Arc<Registry>,
    key: &RoomKey,
    doc: &yrs::Doc,
    store: Arc<SqliteStore>,
    violations: Arc<Mutex<Vec<String>>>,
    clocks: Arc<Mutex<Vec<u32>>>,
) -> (chorus_hub::outbound::ConnHandle, RoomHandle, Arc<AtomicU64>) {
    let (conn, queue) = outbound::channel(
        outbound::next_conn_id(),
        true,
        Role::Write,
        1 << 16,
        1 << 28,
    );
    let room = registry.join(key, conn.clone()).await.expect("join");
    let saved = Arc::new(AtomicU64::new(0));
    tokio::spawn(read(
        queue,
        doc.clone(),
        key.clone(),
        doc.client_id().get(),
        store,
        saved.clone(),
        violations,
        clocks,
    ));
    // Catch up with what the room holds.
    let sv = doc.transact().state_vector();
    assert!(room.inbound(conn.id, vec![Inbound::SyncStep1(sv)]).await);
    (conn, room, saved)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one read step of the model, every part of it named"
)]
async fn read(
    queue: ConnQueue,
    doc: yrs::Doc,
    key: RoomKey,
    client: u64,
    store: Arc<SqliteStore>,
    saved: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
    clocks: Arc<Mutex<Vec<u32>>>,
) {
    while let Next::Message(msg) = queue.next().await {
        queue.written(&msg);
        match msg {
            Outbound::Binary(frame) => {
                for m in chorus_protocol::sync::decode_frame(frame).flatten() {
                    if let Message::SyncStep2(u) | Message::Update(u) = m
                        && let Ok(u) = Update::decode_v1(&u)
                    {
                        let _ = doc.transact_mut().apply_update(u);
                    }
                }
            }
            Outbound::Text(text) => {
                if let Ok(ServerMessage::Saved { updates }) =
                    chorus_protocol::ext::decode_server(&text)
                {
                    // Told saved: the store must hold this member's first `updates` updates.
                    let want = clocks
                        .lock()
                        .expect("clocks")
                        .get(updates as usize - 1)
                        .copied();
                    let loaded = store.load(&key).await.expect("load");
                    let (stored, _) = loaded.into_doc(&key);
                    let have = stored
                        .transact()
                        .state_vector()
                        .get(&yrs::ClientID::new(client));
                    if let Some(want) = want
                        && have < want
                    {
                        violations.lock().expect("violations").push(format!(
                            "client {client} told {updates} saved, store has clock {have} < {want}"
                        ));
                    }
                    saved.store(updates, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
}

fn text(doc: &yrs::Doc) -> String {
    // The root is taken before the transaction: inside an open read transaction yrs would
    // deadlock creating it.
    let t = doc.get_or_insert_text("t");
    t.get_string(&doc.transact())
}

async fn run_case(ops: Vec<Op>) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(
        SqliteStore::open_file(&dir.path().join("c.db"))
            .await
            .expect("open"),
    );
    let store: Arc<dyn Store> = sqlite.clone();
    let flaky = Arc::new(Flaky {
        inner: sqlite.clone(),
        failing: AtomicBool::new(false),
    });
    let docs: Arc<dyn DocStore> = flaky.clone();
    let tenants = chorus_hub::tenants::Tenants::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let (notify, _webhooks) =
        chorus_hub::webhooks::spawn(store.clone(), Default::default(), stop.clone());
    let events = chorus_hub::webhooks::events::Events::new(store.clone(), tenants.clone(), notify);
    // This node and the ghost on one in-memory network.
    let net = MemoryNetwork::new();
    let node = chorus_hub::cluster::Node {
        id: "node-a".into(),
        url: "http://127.0.0.1:1".into(),
    };
    let node_broker: Arc<dyn Broker> = net.broker(&node.id);
    let cluster = chorus_hub::cluster::Cluster::start(
        node,
        net.membership(),
        node_broker.clone(),
        Duration::from_secs(3),
        stop.clone(),
    )
    .await;
    let key = RoomKey::new(KEY_TENANT, "prop");
    let ghost_broker = net.broker(GHOST);
    let ghost = Arc::new(Ghost {
        doc: yrs::Doc::with_client_id(99),
        topic: ghost_broker.topic(&key),
        broker: ghost_broker,
        seq: AtomicU64::new(0),
    });
    let handler: std::sync::Weak<dyn BrokerHandler> = Arc::downgrade(&(ghost.clone() as Arc<_>));
    ghost.broker.attach(handler);
    ghost
        .broker
        .subscribe(&ghost.topic)
        .await
        .expect("subscribe");
    let ctx = Arc::new(RoomContext {
        limits: RoomLimits {
            max_rooms: 10,
            max_document_bytes: 1 << 24,
            persist_batch: Duration::from_millis(5),
            compact_threshold: 3,
            awareness_tick: Duration::from_millis(10),
            room_idle: Duration::from_secs(60),
            max_nesting_depth: 64,
            tenant_share_percent: 100,
        },
        tenants,
        events,
        webhook_debounce: Duration::from_secs(2),
        store: docs.clone(),
        persister: Persister::spawn(docs, 4096, Duration::from_millis(5)),
        cluster: Some(chorus_hub::room::ClusterLink {
            broker: node_broker.clone(),
            cluster,
        }),
        applied: Default::default(),
        faults: Default::default(),
        search_debounce: None,
    });
    let registry = Registry::new(ctx);
    // The node's state routes what the broker receives; here the registry does it directly.
    let router = Arc::new(Router(registry.clone()));
    let weak: std::sync::Weak<dyn BrokerHandler> = Arc::downgrade(&(router.clone() as Arc<_>));
    node_broker.attach(weak);
    let violations = Arc::new(Mutex::new(Vec::new()));
    let reference = yrs::Doc::new();
    let mut members = Vec::new();
    for i in 0..3u32 {
        let doc = yrs::Doc::with_client_id(u64::from(i) + 1);
        let clocks = Arc::new(Mutex::new(Vec::new()));
        let (conn, room, saved) = join(
            &registry,
            &key,
            &doc,
            sqlite.clone(),
            violations.clone(),
            clocks.clone(),
        )
        .await;
        members.push((
            Member {
                doc,
                conn,
                room,
                clocks: Vec::new(),
                saved,
            },
            clocks,
        ));
    }
    for op in ops {
        match op {
            Op::Edit { member, text } => {
                let (m, clocks) = &mut members[member];
                let raw = {
                    let t = m.doc.get_or_insert_text("t");
                    let mut txn = m.doc.transact_mut();
                    let len = t.len(&txn);
                    t.insert(&mut txn, len, &text);
                    Bytes::from(txn.encode_update_v1())
                };
                reference
                    .transact_mut()
                    .apply_update(Update::decode_v1(&raw).expect("own update"))
                    .expect("apply");
                let clock = m.doc.transact().state_vector().get(&m.doc.client_id());
                m.clocks.push(clock);
                clocks.lock().expect("clocks").push(clock);
                let (update, nesting, clocks) =
                    chorus_hub::session::decode_update(&raw, 64).expect("valid");
                if !m
                    .room
                    .inbound(
                        m.conn.id,
                        vec![Inbound::Update {
                            update,
                            raw,
                            nesting,
                            clocks,
                        }],
                    )
                    .await
                {
                    return Err("the room went away".into());
                }
            }
            Op::Remote { text, lost } => {
                remote_edit(&ghost, &reference, &sqlite, &key, &text, lost).await?;
            }
            Op::Fail(on) => flaky.failing.store(on, Ordering::SeqCst),
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Restart => {
                // A restart flushes first: the store works again for it.
                flaky.failing.store(false, Ordering::SeqCst);
                let room = members[0].0.room.clone();
                tokio::time::timeout(Duration::from_secs(10), room.shutdown())
                    .await
                    .map_err(|_| "shutdown hung")?;
                for (m, clocks) in &mut members {
                    // What the member sent before is durable (the shutdown flushed it).
                    let (conn, room, saved) = join(
                        &registry,
                        &key,
                        &m.doc,
                        sqlite.clone(),
                        violations.clone(),
                        clocks.clone(),
                    )
                    .await;
                    // Acks count a connection's own updates: a new connection starts at 0.
                    clocks.lock().expect("clocks").clear();
                    m.clocks.clear();
                    *m = Member {
                        doc: m.doc.clone(),
                        conn,
                        room,
                        clocks: Vec::new(),
                        saved,
                    };
                }
            }
        }
    }
    flaky.failing.store(false, Ordering::SeqCst);
    // The ghost's last messages may have been lost with no later number to reveal it: its
    // closing edit arrives, and its number shows the room what it missed.
    ops_done(&ghost, &reference, &sqlite, &key).await?;
    // Everything sent is acknowledged in the end, and everyone converges on the reference.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let acked = members
            .iter()
            .all(|(m, _)| m.saved.load(Ordering::SeqCst) as usize >= m.clocks.len());
        let same = members.iter().all(|(m, _)| text_eq(&m.doc, &reference))
            && text_eq(&ghost.doc, &reference);
        if acked && same {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "no convergence: reference {:?}, ghost {:?}, members {:?}, saved {:?}",
                text(&reference),
                text(&ghost.doc),
                members
                    .iter()
                    .map(|(m, _)| text(&m.doc))
                    .collect::<Vec<_>>(),
                members
                    .iter()
                    .map(|(m, _)| (m.saved.load(Ordering::SeqCst), m.clocks.len()))
                    .collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (stored, errors) = sqlite.load(&key).await.expect("load").into_doc(&key);
    if !errors.is_empty() || !text_eq(&stored, &reference) {
        return Err(format!(
            "store holds {:?}, reference {:?} ({errors:?})",
            text(&stored),
            text(&reference)
        ));
    }
    stop.cancel();
    let found = violations.lock().expect("violations").clone();
    if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

/// The ghost edits, stores its edit as its node would before publishing, and publishes it,
/// unless the message is `lost` (its number is spent all the same).
async fn remote_edit(
    ghost: &Ghost,
    reference: &yrs::Doc,
    sqlite: &SqliteStore,
    key: &RoomKey,
    text: &str,
    lost: bool,
) -> Result<(), String> {
    let raw = {
        let t = ghost.doc.get_or_insert_text("t");
        let mut txn = ghost.doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, text);
        Bytes::from(txn.encode_update_v1())
    };
    reference
        .transact_mut()
        .apply_update(Update::decode_v1(&raw).expect("own update"))
        .expect("apply");
    sqlite
        .append(&[AppendBatch {
            key: key.clone(),
            updates: vec![raw.clone()],
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .map_err(|e| e.to_string())?;
    if lost {
        ghost.seq.fetch_add(1, Ordering::SeqCst);
    } else {
        ghost.publish(&Payload::Update(raw));
    }
    Ok(())
}

/// The ghost's closing edit, never lost.
async fn ops_done(
    ghost: &Ghost,
    reference: &yrs::Doc,
    sqlite: &SqliteStore,
    key: &RoomKey,
) -> Result<(), String> {
    remote_edit(ghost, reference, sqlite, key, "!", false).await
}

/// Routes envelopes to the room, as the node's state does.
struct Router(Arc<Registry>);

impl BrokerHandler for Router {
    fn envelope(&self, key: &RoomKey, envelope: Envelope) {
        self.0.route(key, envelope);
    }
    fn lost(&self) {
        self.0.resync_all();
    }
    fn change(&self, _change: chorus_hub::cluster::Change) {}
}

/// Same content: yrs orders concurrent inserts the same way on every replica, so equal
/// strings mean converged documents.
fn text_eq(a: &yrs::Doc, b: &yrs::Doc) -> bool {
    text(a) == text(b) && a.transact().state_vector() == b.transact().state_vector()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn any_interleaving_converges_and_nothing_is_saved_before_the_store_has_it(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let result = runtime.block_on(run_case(ops));
        prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    }
}
