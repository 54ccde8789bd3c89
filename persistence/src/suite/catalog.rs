//! Behaviour tests every [`Catalog`] must pass, run by each store's test file. Each function
//! takes a fresh, empty store and panics with a description when the store misbehaves.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;

use crate::{
    ApiKey, AppendBatch, Attempt, NewEvent, OutboxEvent, RoomCreated, RoomKey, SigningKey, Store,
    Tenant, Webhook,
};

/// The wall clock in seconds: `append` stamps outbox rows with the database's clock, which
/// is this machine's.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.to_owned(),
        name: format!("Tenant {id}"),
        settings: json!({"max_rooms": 10, "ai": {"enabled": true}}),
        created: 1_700_000_000,
    }
}

fn signing_key(tenant: &str, kid: &str, created: i64) -> SigningKey {
    SigningKey {
        tenant: tenant.to_owned(),
        kid: kid.to_owned(),
        alg: "HS256".to_owned(),
        material: format!("secret-of-{tenant}-{kid}"),
        created,
        revoked: None,
    }
}

fn api_key(tenant: &str, key_id: &str, created: i64) -> ApiKey {
    ApiKey {
        tenant: tenant.to_owned(),
        key_id: key_id.to_owned(),
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1${key_id}"),
        name: format!("key {key_id}"),
        created,
        revoked: None,
    }
}

fn webhook(url: &str) -> Webhook {
    Webhook {
        url: url.to_owned(),
        secret: "whsec".to_owned(),
        events: vec!["document.changed".to_owned(), "room.deleted".to_owned()],
        last_status: None,
        last_error: None,
        last_attempt: None,
    }
}

fn event(tenant: &str, n: u32) -> NewEvent {
    NewEvent {
        tenant: tenant.to_owned(),
        event: "document.changed".to_owned(),
        body: json!({"room": format!("r{n}"), "n": n}),
        delay: 0,
    }
}

fn batch(
    tenant: &str,
    room: &str,
    updates: &[&'static [u8]],
    events: Vec<NewEvent>,
) -> AppendBatch {
    AppendBatch {
        key: RoomKey::new(tenant, room),
        updates: updates.iter().map(|u| Bytes::from_static(u)).collect(),
        events,
        search_due: None,
    }
}

fn ids(events: &[OutboxEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

/// Tenants: create, duplicate id, get, list by id, partial updates, delete.
pub async fn tenant_crud(store: Arc<dyn Store>) {
    assert!(store.list_tenants().await.expect("list").is_empty());
    assert!(store.create_tenant(&tenant("b")).await.expect("create b"));
    assert!(store.create_tenant(&tenant("a")).await.expect("create a"));
    let mut dup = tenant("a");
    dup.name = "impostor".to_owned();
    assert!(
        !store.create_tenant(&dup).await.expect("create dup"),
        "a taken id must be refused"
    );
    assert_eq!(store.get_tenant("a").await.expect("get"), Some(tenant("a")));
    assert_eq!(store.get_tenant("zz").await.expect("get"), None);
    let listed = store.list_tenants().await.expect("list");
    assert_eq!(listed, vec![tenant("a"), tenant("b")], "listed by id");

    assert!(
        store
            .update_tenant("a", Some("Renamed"), None)
            .await
            .expect("update")
    );
    let got = store.get_tenant("a").await.expect("get").expect("tenant a");
    assert_eq!(got.name, "Renamed");
    assert_eq!(
        got.settings,
        tenant("a").settings,
        "settings kept when not given"
    );
    let settings = json!({"max_rooms": 3});
    assert!(
        store
            .update_tenant("a", None, Some(&settings))
            .await
            .expect("update")
    );
    let got = store.get_tenant("a").await.expect("get").expect("tenant a");
    assert_eq!((got.name.as_str(), &got.settings), ("Renamed", &settings));
    assert!(
        !store
            .update_tenant("zz", Some("x"), None)
            .await
            .expect("update unknown")
    );

    assert!(store.delete_tenant("a").await.expect("delete"));
    assert!(!store.delete_tenant("a").await.expect("delete again"));
    assert_eq!(store.get_tenant("a").await.expect("get"), None);
    assert_eq!(store.list_tenants().await.expect("list"), vec![tenant("b")]);
}

/// Signing keys: add, duplicate kid, list oldest first with revoked ones, revoke once.
pub async fn signing_keys(store: Arc<dyn Store>) {
    assert!(
        store
            .add_signing_key(&signing_key("a", "k2", 100))
            .await
            .expect("add")
    );
    assert!(
        store
            .add_signing_key(&signing_key("a", "k1", 200))
            .await
            .expect("add")
    );
    assert!(
        store
            .add_signing_key(&signing_key("a", "k3", 200))
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_signing_key(&signing_key("a", "k1", 300))
            .await
            .expect("add dup"),
        "a taken kid must be refused"
    );
    // The same kid in another tenant is another key.
    assert!(
        store
            .add_signing_key(&signing_key("b", "k1", 50))
            .await
            .expect("add b")
    );
    let kids: Vec<String> = store
        .list_signing_keys("a")
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(
        kids,
        ["k2", "k1", "k3"],
        "oldest first, insertion order within a second"
    );

    assert!(
        store
            .revoke_signing_key("a", "k1", 500)
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_signing_key("a", "k1", 600)
            .await
            .expect("revoke again")
    );
    assert!(
        !store
            .revoke_signing_key("a", "nope", 600)
            .await
            .expect("revoke unknown")
    );
    let keys = store.list_signing_keys("a").await.expect("list");
    let k1 = keys
        .iter()
        .find(|k| k.kid == "k1")
        .expect("revoked keys are listed");
    assert_eq!(k1.revoked, Some(500), "the first revocation time stays");
    assert_eq!(k1.material, "secret-of-a-k1");
    let b = store.list_signing_keys("b").await.expect("list b");
    assert_eq!(
        b,
        vec![signing_key("b", "k1", 50)],
        "b's key untouched by a's revocation"
    );
}

/// API keys: add, duplicate, lookup, list oldest first, revoke once.
pub async fn api_keys(store: Arc<dyn Store>) {
    assert!(
        store
            .add_api_key(&api_key("a", "ak_2", 10))
            .await
            .expect("add")
    );
    assert!(
        store
            .add_api_key(&api_key("a", "ak_1", 20))
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_api_key(&api_key("a", "ak_1", 30))
            .await
            .expect("add dup")
    );
    assert_eq!(
        store.get_api_key("a", "ak_1").await.expect("get"),
        Some(api_key("a", "ak_1", 20))
    );
    assert_eq!(store.get_api_key("a", "nope").await.expect("get"), None);
    let listed = store.list_api_keys("a").await.expect("list");
    assert_eq!(
        listed,
        vec![api_key("a", "ak_2", 10), api_key("a", "ak_1", 20)]
    );

    assert!(store.revoke_api_key("a", "ak_1", 99).await.expect("revoke"));
    assert!(
        !store
            .revoke_api_key("a", "ak_1", 100)
            .await
            .expect("revoke again")
    );
    assert!(
        !store
            .revoke_api_key("a", "nope", 100)
            .await
            .expect("revoke unknown")
    );
    let got = store
        .get_api_key("a", "ak_1")
        .await
        .expect("get")
        .expect("revoked key");
    assert_eq!(
        got.revoked,
        Some(99),
        "revoked keys are still found (to say so)"
    );
}

/// Room records: created once, then `Exists`; `max_rooms` refuses new rooms only.
pub async fn create_room_and_limit(store: Arc<dyn Store>) {
    let meta = json!({"title": "Plan", "tags": ["q3"]});
    let created = store
        .create_room("a", "r1", &meta, Some(2), 100)
        .await
        .expect("create");
    assert_eq!(created, RoomCreated::Created);
    let again = store
        .create_room("a", "r1", &json!({}), Some(2), 200)
        .await
        .expect("create");
    assert_eq!(again, RoomCreated::Exists);
    let got = store
        .get_room("a", "r1")
        .await
        .expect("get")
        .expect("room r1");
    assert_eq!(
        (got.meta, got.created),
        (meta, 100),
        "an existing record is left unchanged"
    );

    let r2 = store
        .create_room("a", "r2", &json!({}), Some(2), 100)
        .await
        .expect("create");
    assert_eq!(r2, RoomCreated::Created);
    let r3 = store
        .create_room("a", "r3", &json!({}), Some(2), 100)
        .await
        .expect("create");
    assert_eq!(
        r3,
        RoomCreated::LimitReached,
        "a third room with max_rooms = 2"
    );
    assert_eq!(
        store.get_room("a", "r3").await.expect("get"),
        None,
        "nothing written"
    );
    let r1 = store
        .create_room("a", "r1", &json!({}), Some(2), 100)
        .await
        .expect("create");
    assert_eq!(
        r1,
        RoomCreated::Exists,
        "an existing room is not refused by the limit"
    );
    let zero = store
        .create_room("a", "r4", &json!({}), Some(0), 100)
        .await
        .expect("create");
    assert_eq!(zero, RoomCreated::LimitReached);
    // The limit counts the tenant's own rooms only.
    let b = store
        .create_room("b", "r3", &json!({}), Some(1), 100)
        .await
        .expect("create b");
    assert_eq!(b, RoomCreated::Created);
    let unlimited = store
        .create_room("a", "r5", &json!({}), None, 100)
        .await
        .expect("create");
    assert_eq!(unlimited, RoomCreated::Created);
}

/// Concurrent creates racing for the last free slot: exactly one wins.
pub async fn create_room_limit_under_concurrency(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_room("a", &format!("r{i}"), &json!({}), Some(3), 1)
                .await
                .expect("create")
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.expect("task") == RoomCreated::Created {
            created += 1;
        }
    }
    assert_eq!(
        created, 3,
        "max_rooms = 3 must hold under concurrent creates"
    );
    assert_eq!(
        store.list_rooms("a", None, 100).await.expect("list").len(),
        3
    );
}

/// Room listing: by name, paged with `after`, with stored size and last activity.
pub async fn list_rooms_paging_and_stats(store: Arc<dyn Store>) {
    for name in ["e", "c", "a", "d", "b"] {
        store
            .create_room("t", name, &json!({"n": name}), None, 10)
            .await
            .expect("create");
    }
    let page = |after: Option<&'static str>| {
        let store = store.clone();
        async move {
            store
                .list_rooms("t", after, 2)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.room)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None).await, ["a", "b"]);
    assert_eq!(page(Some("b")).await, ["c", "d"]);
    assert_eq!(page(Some("d")).await, ["e"]);
    assert!(page(Some("e")).await.is_empty());

    let before = now();
    store
        .append(&[batch("t", "a", &[b"12345", b"678"], Vec::new())])
        .await
        .expect("append");
    store
        .write_snapshot(&RoomKey::new("t", "b"), 0, b"snapshot!")
        .await
        .expect("snapshot");
    // A document in another tenant with the same room name counts for that tenant only.
    store
        .append(&[batch("u", "a", &[b"elsewhere"], Vec::new())])
        .await
        .expect("append");
    let rooms = store.list_rooms("t", None, 10).await.expect("list");
    assert_eq!(rooms.len(), 5);
    let a = &rooms[0];
    assert_eq!(
        (a.room.as_str(), a.stored_bytes),
        ("a", 8),
        "log bytes of a"
    );
    assert!(
        a.last_activity
            .is_some_and(|t| t >= before - 1 && t <= now() + 1)
    );
    assert_eq!(a.meta, json!({"n": "a"}));
    assert_eq!(a.created, 10);
    assert_eq!(
        (rooms[1].stored_bytes, rooms[1].last_activity.is_some()),
        (9, true)
    );
    assert_eq!(
        (rooms[2].stored_bytes, rooms[2].last_activity),
        (0, None),
        "no document yet"
    );
    let got = store
        .get_room("t", "a")
        .await
        .expect("get")
        .expect("room a");
    assert_eq!(&got, a);
    assert_eq!(store.get_room("t", "zz").await.expect("get"), None);
    // A document without a record is not listed.
    assert_eq!(store.get_room("u", "a").await.expect("get"), None);
}

/// Deleting a room removes its record, document and versions; other rooms stay.
pub async fn delete_room_everything(store: Arc<dyn Store>) {
    let key = RoomKey::new("t", "doomed");
    store
        .create_room("t", "doomed", &json!({}), None, 1)
        .await
        .expect("create");
    store
        .append(&[batch("t", "doomed", &[b"u1", b"u2"], Vec::new())])
        .await
        .expect("append");
    store
        .write_snapshot(&key, 1, b"snap")
        .await
        .expect("snapshot");
    store
        .append(&[batch("t", "doomed", &[b"u3"], Vec::new())])
        .await
        .expect("append");
    store
        .create_version("t", "doomed", "v1", b"state", 2)
        .await
        .expect("version");
    store
        .create_room("t", "kept", &json!({}), None, 1)
        .await
        .expect("create");
    store
        .append(&[batch("t", "kept", &[b"k"], Vec::new())])
        .await
        .expect("append");
    store
        .create_version("t", "kept", "v1", b"state", 2)
        .await
        .expect("version");

    assert!(
        store
            .delete_room_everything("t", "doomed")
            .await
            .expect("delete")
    );
    assert!(
        store.load(&key).await.expect("load").is_empty(),
        "document deleted"
    );
    assert_eq!(
        store.get_room("t", "doomed").await.expect("get"),
        None,
        "record deleted"
    );
    assert!(
        store
            .list_versions("t", "doomed")
            .await
            .expect("versions")
            .is_empty()
    );
    assert!(
        !store
            .delete_room_everything("t", "doomed")
            .await
            .expect("delete again")
    );

    // A document without a record counts as something to delete.
    store
        .append(&[batch("t", "orphan", &[b"o"], Vec::new())])
        .await
        .expect("append");
    assert!(
        store
            .delete_room_everything("t", "orphan")
            .await
            .expect("delete orphan")
    );

    let kept = RoomKey::new("t", "kept");
    assert_eq!(store.load(&kept).await.expect("load").updates.len(), 1);
    assert!(store.get_room("t", "kept").await.expect("get").is_some());
    assert_eq!(
        store
            .list_versions("t", "kept")
            .await
            .expect("versions")
            .len(),
        1
    );
}

/// Versions: create, list oldest first, fetch with state, scoped to the room.
pub async fn versions_roundtrip(store: Arc<dyn Store>) {
    let v1 = store
        .create_version("t", "r", "first", b"one", 10)
        .await
        .expect("create");
    let v2 = store
        .create_version("t", "r", "second", b"three", 20)
        .await
        .expect("create");
    store
        .create_version("t", "other", "x", b"x", 30)
        .await
        .expect("create");
    assert!(v2.id > v1.id, "ids increase");
    assert_eq!(
        (v1.room.as_str(), v1.name.as_str(), v1.created, v1.bytes),
        ("r", "first", 10, 3)
    );
    assert_eq!(
        store.list_versions("t", "r").await.expect("list"),
        vec![v1.clone(), v2.clone()]
    );
    let (info, state) = store
        .get_version("t", "r", v2.id)
        .await
        .expect("get")
        .expect("v2");
    assert_eq!((info, &state[..]), (v2.clone(), &b"three"[..]));
    assert_eq!(
        store.get_version("t", "other", v2.id).await.expect("get"),
        None,
        "a version is found through its own room only"
    );
    assert_eq!(
        store
            .get_version("t", "r", v2.id + 1000)
            .await
            .expect("get"),
        None
    );
    assert!(
        store
            .list_versions("t", "none")
            .await
            .expect("list")
            .is_empty()
    );
}

/// Webhooks: set, replace (status reset), delete with undelivered events.
pub async fn webhook_set_get_delete(store: Arc<dyn Store>) {
    assert_eq!(store.get_webhook("t").await.expect("get"), None);
    assert!(!store.delete_webhook("t").await.expect("delete none"));
    store
        .set_webhook("t", &webhook("https://a.example/hook"))
        .await
        .expect("set");
    assert_eq!(
        store.get_webhook("t").await.expect("get"),
        Some(webhook("https://a.example/hook"))
    );
    let mut all = webhook("https://b.example/hook");
    all.events.clear();
    store.set_webhook("t", &all).await.expect("replace");
    assert_eq!(
        store.get_webhook("t").await.expect("get"),
        Some(all.clone())
    );

    // An attempt updates the status; replacing the webhook resets it.
    store
        .enqueue_events(&[event("t", 1), event("t", 2)], 100)
        .await
        .expect("enqueue");
    let claimed = store.claim_events(100, 30, 10).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let failure = Attempt {
        at: 101,
        status: Some(503),
        error: Some("unavailable".to_owned()),
        delivered: false,
        retry_at: Some(160),
    };
    store
        .record_attempt("t", claimed[0].id, &failure)
        .await
        .expect("attempt");
    let hook = store.get_webhook("t").await.expect("get").expect("hook");
    assert_eq!(
        (
            hook.last_status,
            hook.last_error.as_deref(),
            hook.last_attempt
        ),
        (Some(503), Some("unavailable"), Some(101))
    );
    let ok = Attempt {
        at: 102,
        status: Some(200),
        error: None,
        delivered: true,
        retry_at: None,
    };
    store
        .record_attempt("t", claimed[1].id, &ok)
        .await
        .expect("attempt");
    store.set_webhook("t", &all).await.expect("replace");
    assert_eq!(
        store.get_webhook("t").await.expect("get"),
        Some(all),
        "status reset"
    );

    assert!(store.delete_webhook("t").await.expect("delete"));
    assert_eq!(store.get_webhook("t").await.expect("get"), None);
    let left = store.list_events("t", 10).await.expect("list");
    assert_eq!(
        ids(&left),
        vec![claimed[1].id],
        "undelivered events go, delivered stay"
    );
    assert!(!store.delete_webhook("t").await.expect("delete again"));
}

/// Events enqueued directly are claimed oldest first, once per lease, up to `limit`.
pub async fn enqueued_events_are_claimed_once(store: Arc<dyn Store>) {
    let t0 = 1_000;
    store
        .enqueue_events(&[event("a", 1), event("b", 2), event("a", 3)], t0)
        .await
        .expect("enqueue");
    store
        .enqueue_events(&[event("c", 4)], t0 + 50)
        .await
        .expect("enqueue later");
    assert!(
        store
            .claim_events(t0 - 1, 30, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due"
    );

    let first = store.claim_events(t0, 30, 2).await.expect("claim");
    assert_eq!(first.len(), 2, "limit respected");
    let rest = store.claim_events(t0, 30, 10).await.expect("claim");
    assert_eq!(rest.len(), 1, "only the third due event is left");
    let mut all: Vec<OutboxEvent> = first.iter().chain(&rest).cloned().collect();
    all.sort_by_key(|e| e.id);
    let bodies: Vec<_> = all.iter().map(|e| e.body["n"].clone()).collect();
    assert_eq!(bodies, [json!(1), json!(2), json!(3)]);
    assert!(
        ids(&first)
            .iter()
            .all(|id| ids(&rest).iter().all(|r| r > id)),
        "oldest first"
    );
    let e = &all[0];
    assert_eq!(
        (e.tenant.as_str(), e.event.as_str()),
        ("a", "document.changed")
    );
    assert_eq!((e.created, e.attempts, e.next_attempt), (t0, 0, t0 + 30));
    assert_eq!((e.delivered, e.failed, e.last_status), (None, false, None));

    assert!(
        store
            .claim_events(t0 + 29, 30, 10)
            .await
            .expect("claim")
            .is_empty(),
        "claimed events are leased"
    );
    let later = store.claim_events(t0 + 50, 30, 10).await.expect("claim");
    assert_eq!(later.len(), 4, "leases ran out and the later event is due");
}

/// Events written with `append` land in the outbox with the updates and are claimed once.
pub async fn appended_events_are_claimed_once(store: Arc<dyn Store>) {
    store
        .append(&[
            batch("a", "r", &[b"u"], vec![event("a", 1)]),
            batch("b", "r", &[b"v"], vec![event("b", 2), event("b", 3)]),
            // Events without updates are allowed too.
            batch("a", "quiet", &[], vec![event("a", 4)]),
        ])
        .await
        .expect("append");
    assert_eq!(
        store
            .load(&RoomKey::new("a", "r"))
            .await
            .expect("load")
            .updates
            .len(),
        1
    );
    let t = now() + 1;
    let claimed = store.claim_events(t, 60, 100).await.expect("claim");
    let mut bodies: Vec<_> = claimed.iter().map(|e| e.body["n"].clone()).collect();
    bodies.sort_by_key(|v| v.as_u64());
    assert_eq!(bodies, [json!(1), json!(2), json!(3), json!(4)]);
    assert!(
        claimed.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    assert!(
        claimed
            .iter()
            .all(|e| e.created <= t && e.created >= t - 120),
        "stamped with the current time"
    );
    assert!(
        store
            .claim_events(t, 60, 100)
            .await
            .expect("claim")
            .is_empty(),
        "claimed once"
    );
}

/// Concurrent claimers never receive the same event.
pub async fn concurrent_claims_are_disjoint(store: Arc<dyn Store>) {
    let events: Vec<NewEvent> = (0..60)
        .map(|i| event(["a", "b", "c"][i % 3], i as u32))
        .collect();
    store.enqueue_events(&events, 10).await.expect("enqueue");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim_events(10, 300, 7).await.expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(ids(&batch));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "an event was claimed twice");
    assert_eq!(total, 60, "every event claimed");
}

/// Attempts: delivered, retried at a time, given up; counted and shown in `list_events`.
pub async fn record_attempt_outcomes(store: Arc<dyn Store>) {
    store
        .set_webhook("t", &webhook("https://t.example"))
        .await
        .expect("set");
    store
        .enqueue_events(&[event("t", 1), event("t", 2), event("t", 3)], 100)
        .await
        .expect("enqueue");
    let claimed = store.claim_events(100, 30, 10).await.expect("claim");
    let [delivered, retried, abandoned] = [claimed[0].id, claimed[1].id, claimed[2].id];
    let attempt = |delivered: bool, status: Option<i32>, retry_at: Option<i64>| Attempt {
        at: 105,
        status,
        error: (!delivered).then(|| "boom".to_owned()),
        delivered,
        retry_at,
    };
    store
        .record_attempt("t", delivered, &attempt(true, Some(204), None))
        .await
        .expect("ok");
    store
        .record_attempt("t", retried, &attempt(false, Some(500), Some(200)))
        .await
        .expect("retry");
    store
        .record_attempt("t", abandoned, &attempt(false, None, None))
        .await
        .expect("give up");

    let listed = store.list_events("t", 10).await.expect("list");
    assert_eq!(
        ids(&listed),
        vec![abandoned, retried, delivered],
        "newest first"
    );
    let by_id = |id: i64| listed.iter().find(|e| e.id == id).expect("listed").clone();
    let d = by_id(delivered);
    assert_eq!(
        (d.delivered, d.failed, d.attempts, d.last_status),
        (Some(105), false, 1, Some(204))
    );
    let r = by_id(retried);
    assert_eq!(
        (r.delivered, r.failed, r.attempts, r.next_attempt),
        (None, false, 1, 200)
    );
    assert_eq!(
        (r.last_status, r.last_error.as_deref()),
        (Some(500), Some("boom"))
    );
    let a = by_id(abandoned);
    assert_eq!(
        (a.delivered, a.failed, a.attempts, a.last_status),
        (None, true, 1, None)
    );
    let hook = store.get_webhook("t").await.expect("get").expect("hook");
    assert_eq!(
        (hook.last_status, hook.last_attempt),
        (None, Some(105)),
        "latest attempt"
    );
    // A late record (a node whose lease ran out) never revives a settled event.
    store
        .record_attempt("t", delivered, &attempt(false, Some(500), Some(200)))
        .await
        .expect("late record");
    store
        .record_attempt("t", abandoned, &attempt(false, Some(500), Some(200)))
        .await
        .expect("late record");
    let late = store.list_events("t", 10).await.expect("list");
    let settled = |id: i64| late.iter().find(|e| e.id == id).expect("listed").clone();
    assert_eq!(settled(delivered).delivered, Some(105));
    assert_eq!(settled(delivered).attempts, 1);
    assert!(settled(abandoned).failed);

    assert!(
        store
            .claim_events(199, 30, 10)
            .await
            .expect("claim")
            .is_empty(),
        "retry not due"
    );
    let again = store.claim_events(1_000, 30, 10).await.expect("claim");
    assert_eq!(
        ids(&again),
        vec![retried],
        "delivered and given-up events are never claimed"
    );
    store
        .record_attempt("t", retried, &attempt(false, Some(502), Some(300)))
        .await
        .expect("retry");
    assert_eq!(
        store.list_events("t", 10).await.expect("list")[1].attempts,
        2
    );
    assert_eq!(
        ids(&store.list_events("t", 1).await.expect("list")),
        vec![abandoned],
        "limit"
    );
}

/// Pruning removes only delivered and given-up rows older than the cut-off, of one tenant.
pub async fn prune_keeps_pending_and_recent_events(store: Arc<dyn Store>) {
    for t in ["t", "u"] {
        store
            .set_webhook(t, &webhook("https://t.example"))
            .await
            .expect("set");
        store
            .enqueue_events(&[event(t, 1), event(t, 2), event(t, 3)], 100)
            .await
            .expect("enqueue");
    }
    let claimed = store.claim_events(100, 30, 10).await.expect("claim");
    let of_t: Vec<i64> = claimed
        .iter()
        .filter(|e| e.tenant == "t")
        .map(|e| e.id)
        .collect();
    let done = |delivered: bool| Attempt {
        at: 101,
        status: delivered.then_some(200),
        error: (!delivered).then(|| "gone".to_owned()),
        delivered,
        retry_at: None,
    };
    store
        .record_attempt("t", of_t[0], &done(true))
        .await
        .expect("delivered");
    store
        .record_attempt("t", of_t[1], &done(false))
        .await
        .expect("given up");
    for e in claimed.iter().filter(|e| e.tenant == "u") {
        store
            .record_attempt("u", e.id, &done(true))
            .await
            .expect("delivered");
    }
    assert_eq!(
        store.prune_events("t", 100).await.expect("prune"),
        0,
        "not older"
    );
    assert_eq!(store.prune_events("t", 101).await.expect("prune"), 2);
    assert_eq!(
        ids(&store.list_events("t", 10).await.expect("list")),
        vec![of_t[2]],
        "the pending event stays"
    );
    assert_eq!(
        store.list_events("u", 10).await.expect("list").len(),
        3,
        "other tenants untouched"
    );
}

/// Tenant B never sees or changes tenant A's rows through any method; deleting B's tenant
/// removes only B's rows, deleting A's removes all of A's.
pub async fn tenant_isolation(store: Arc<dyn Store>) {
    // Everything for A, and a little for B with the same names.
    for t in ["a", "b"] {
        store.create_tenant(&tenant(t)).await.expect("tenant");
        store
            .add_signing_key(&signing_key(t, &format!("{t}-kid"), 1))
            .await
            .expect("key");
        store
            .add_api_key(&api_key(t, &format!("{t}-key"), 1))
            .await
            .expect("api key");
        store
            .create_room(t, &format!("{t}-room"), &json!({}), Some(1), 1)
            .await
            .expect("room");
        store
            .create_room(t, "shared", &json!({"owner": t}), None, 1)
            .await
            .expect("room");
        store
            .set_webhook(t, &webhook(&format!("https://{t}.example")))
            .await
            .expect("hook");
    }
    let a_room = RoomKey::new("a", "a-room");
    store
        .append(&[batch("a", "a-room", &[b"a1"], vec![event("a", 1)])])
        .await
        .expect("append");
    store
        .write_snapshot(&a_room, 0, b"a-snap")
        .await
        .expect("snapshot");
    let a_version = store
        .create_version("a", "a-room", "v", b"a-state", 1)
        .await
        .expect("v");
    store
        .enqueue_events(&[event("a", 2)], 1)
        .await
        .expect("enqueue");
    let a_events = store.list_events("a", 10).await.expect("events");
    assert_eq!(a_events.len(), 2);

    // B's view.
    assert!(
        store
            .list_signing_keys("b")
            .await
            .expect("keys")
            .iter()
            .all(|k| k.tenant == "b")
    );
    assert!(
        !store
            .revoke_signing_key("b", "a-kid", 9)
            .await
            .expect("revoke")
    );
    assert_eq!(store.get_api_key("b", "a-key").await.expect("get"), None);
    assert!(
        store
            .list_api_keys("b")
            .await
            .expect("keys")
            .iter()
            .all(|k| k.tenant == "b")
    );
    assert!(!store.revoke_api_key("b", "a-key", 9).await.expect("revoke"));
    assert_eq!(store.get_room("b", "a-room").await.expect("room"), None);
    let b_rooms: Vec<String> = store
        .list_rooms("b", None, 100)
        .await
        .expect("rooms")
        .into_iter()
        .map(|r| r.room)
        .collect();
    assert_eq!(b_rooms, ["b-room", "shared"]);
    let shared = store
        .get_room("b", "shared")
        .await
        .expect("room")
        .expect("b's shared");
    assert_eq!(
        (shared.meta, shared.stored_bytes),
        (json!({"owner": "b"}), 0)
    );
    assert!(
        store
            .load(&RoomKey::new("b", "a-room"))
            .await
            .expect("load")
            .is_empty()
    );
    assert!(
        store
            .list_versions("b", "a-room")
            .await
            .expect("versions")
            .is_empty()
    );
    assert_eq!(
        store
            .get_version("b", "a-room", a_version.id)
            .await
            .expect("get"),
        None
    );
    assert!(
        !store
            .delete_room_everything("b", "a-room")
            .await
            .expect("delete")
    );
    assert!(
        store
            .list_events("b", 100)
            .await
            .expect("events")
            .is_empty()
    );
    let spoof = Attempt {
        at: 9,
        status: Some(200),
        error: None,
        delivered: true,
        retry_at: None,
    };
    store
        .record_attempt("b", a_events[0].id, &spoof)
        .await
        .expect("attempt");

    // A is intact.
    let a_keys = store.list_signing_keys("a").await.expect("keys");
    assert_eq!((a_keys.len(), a_keys[0].revoked), (1, None));
    assert_eq!(
        store
            .get_api_key("a", "a-key")
            .await
            .expect("get")
            .and_then(|k| k.revoked),
        None
    );
    let a_info = store
        .get_room("a", "a-room")
        .await
        .expect("room")
        .expect("a's room");
    assert_eq!(a_info.stored_bytes, 2 + 6);
    assert_eq!(
        store.list_events("a", 10).await.expect("events"),
        a_events,
        "no attempt recorded"
    );
    assert_eq!(
        store
            .get_webhook("a")
            .await
            .expect("hook")
            .expect("a's hook")
            .last_attempt,
        None
    );

    // Deleting B leaves A whole; deleting A leaves nothing of A.
    assert!(store.delete_tenant("b").await.expect("delete b"));
    assert!(
        store
            .list_rooms("b", None, 10)
            .await
            .expect("rooms")
            .is_empty()
    );
    assert!(store.list_signing_keys("b").await.expect("keys").is_empty());
    assert_eq!(store.get_webhook("b").await.expect("hook"), None);
    assert!(store.get_tenant("a").await.expect("get").is_some());
    assert_eq!(
        store.list_rooms("a", None, 10).await.expect("rooms").len(),
        2
    );
    assert_eq!(store.load(&a_room).await.expect("load").stored_bytes(), 8);
    assert_eq!(store.list_events("a", 10).await.expect("events").len(), 2);

    assert!(store.delete_tenant("a").await.expect("delete a"));
    assert_eq!(store.get_tenant("a").await.expect("get"), None);
    assert!(store.list_signing_keys("a").await.expect("keys").is_empty());
    assert!(store.list_api_keys("a").await.expect("keys").is_empty());
    assert!(
        store
            .list_rooms("a", None, 10)
            .await
            .expect("rooms")
            .is_empty()
    );
    assert!(store.load(&a_room).await.expect("load").is_empty());
    assert!(
        store
            .list_versions("a", "a-room")
            .await
            .expect("versions")
            .is_empty()
    );
    assert_eq!(store.get_webhook("a").await.expect("hook"), None);
    assert!(store.list_events("a", 10).await.expect("events").is_empty());
    assert!(
        store
            .claim_events(i64::MAX / 2, 1, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(store.list_tenants().await.expect("list").is_empty());
}

/// Every catalog test, for stores that want to run them in one go.
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    tenant_crud(fresh().await).await;
    signing_keys(fresh().await).await;
    api_keys(fresh().await).await;
    create_room_and_limit(fresh().await).await;
    create_room_limit_under_concurrency(fresh().await).await;
    list_rooms_paging_and_stats(fresh().await).await;
    delete_room_everything(fresh().await).await;
    versions_roundtrip(fresh().await).await;
    webhook_set_get_delete(fresh().await).await;
    enqueued_events_are_claimed_once(fresh().await).await;
    appended_events_are_claimed_once(fresh().await).await;
    concurrent_claims_are_disjoint(fresh().await).await;
    record_attempt_outcomes(fresh().await).await;
    prune_keeps_pending_and_recent_events(fresh().await).await;
    tenant_isolation(fresh().await).await;
}
