//! Webhook delivery end to end: a real SQLite outbox, the dispatcher, and an HTTP receiver on
//! 127.0.0.1 that records every request and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chorus_hub::webhooks::{self, WebhookNotify, WebhookOptions};
use chorus_persistence::{Catalog, NewEvent, OutboxEvent, SqliteStore, Tenant, Webhook};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(10);
const SECRET: &str = "whsec-test";

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answers (within the test), to hold a request in flight.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    got: Vec<Received>,
}

/// A local webhook endpoint: answers from `script`, then with `fallback` forever.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(script: &[Reply], fallback: Reply) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            script: script.iter().copied().collect(),
            fallback: Some(fallback),
            got: Vec::new(),
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.state.lock().expect("receiver lock").got.clone()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let reply = {
        let mut state = state.lock().expect("receiver lock");
        state.got.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        let fallback = state.fallback.unwrap_or(Reply::Status(200));
        state.script.pop_front().unwrap_or(fallback)
    };
    match reply {
        Reply::Status(code) => (
            StatusCode::from_u16(code).expect("status code"),
            "receiver says boom",
        ),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, "")
        }
    }
}

/// A store in a temp dir and a running dispatcher.
struct Harness {
    store: Arc<SqliteStore>,
    notify: WebhookNotify,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
    _dir: TempDir,
}

impl Harness {
    async fn start(options: WebhookOptions) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open_file(&dir.path().join("chorus.db"))
                .await
                .expect("open store"),
        );
        let shutdown = CancellationToken::new();
        let (notify, handle) = webhooks::spawn(store.clone(), options, shutdown.clone());
        Harness {
            store,
            notify,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    async fn tenant(&self, id: &str, hook: Option<(&str, &[&str])>) {
        let created = self
            .store
            .create_tenant(&Tenant {
                id: id.to_owned(),
                name: id.to_owned(),
                settings: json!({}),
                created: unix_now(),
            })
            .await
            .expect("create tenant");
        assert!(created);
        if let Some((url, events)) = hook {
            let hook = Webhook {
                url: url.to_owned(),
                secret: SECRET.to_owned(),
                events: events.iter().map(|e| (*e).to_owned()).collect(),
                last_status: None,
                last_error: None,
                last_attempt: None,
            };
            self.store
                .set_webhook(id, &hook)
                .await
                .expect("set webhook");
        }
    }

    /// Writes one event and wakes the dispatcher; returns its outbox id.
    async fn enqueue(&self, tenant: &str, event: &str, body: Value) -> i64 {
        let before: Vec<i64> = self.events(tenant).await.iter().map(|e| e.id).collect();
        self.store
            .enqueue_events(
                &[NewEvent {
                    tenant: tenant.to_owned(),
                    event: event.to_owned(),
                    body,
                    delay: 0,
                }],
                unix_now(),
            )
            .await
            .expect("enqueue");
        self.notify.notify();
        let after = self.events(tenant).await;
        let new: Vec<i64> = after
            .iter()
            .map(|e| e.id)
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(new.len(), 1, "one new outbox row");
        new[0]
    }

    async fn events(&self, tenant: &str) -> Vec<OutboxEvent> {
        self.store
            .list_events(tenant, 100)
            .await
            .expect("list events")
    }

    async fn event(&self, tenant: &str, id: i64) -> OutboxEvent {
        self.events(tenant)
            .await
            .into_iter()
            .find(|e| e.id == id)
            .expect("event in the outbox")
    }

    /// Waits until the event is delivered or given up, and returns it.
    async fn settled(&self, tenant: &str, id: i64) -> OutboxEvent {
        eventually("event settled", async || {
            let event = self.event(tenant, id).await;
            (event.delivered.is_some() || event.failed).then_some(event)
        })
        .await
    }

    async fn webhook(&self, tenant: &str) -> Webhook {
        self.store
            .get_webhook(tenant)
            .await
            .expect("get webhook")
            .expect("webhook exists")
    }

    /// Cancels the dispatcher and checks that it ends promptly.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.handle)
            .await
            .expect("dispatcher ends within 2 s of shutdown")
            .expect("dispatcher task did not panic");
    }
}

/// Small delays so retries happen within a test; the outbox keeps whole seconds, so each retry
/// still waits for the next second.
fn fast() -> WebhookOptions {
    WebhookOptions {
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(30),
        max_attempts: 5,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        batch: 16,
        concurrency: 4,
        // The receivers of these tests listen on 127.0.0.1.
        allow_private: true,
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("seconds fit")
}

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_str()
        .expect("ascii header")
}

fn delivery_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .got()
        .iter()
        .map(|r| header(r, "chorus-delivery").to_owned())
        .collect()
}

#[tokio::test]
async fn delivers_a_signed_event_once() {
    let receiver = Receiver::start(&[], Reply::Status(200)).await;
    // An hour between polls: only the notify after enqueueing can make delivery this quick.
    let h = Harness::start(WebhookOptions {
        poll: Duration::from_secs(3600),
        ..fast()
    })
    .await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let before = unix_now();
    let id = h
        .enqueue(
            "acme",
            "document.changed",
            json!({"room": "notes", "updates": 2}),
        )
        .await;
    let event = h.settled("acme", id).await;
    assert!(event.delivered.is_some(), "delivered: {event:?}");
    assert_eq!(event.last_status, Some(200));

    // A second event is delivered after the first; by then the first arrived exactly once.
    let second = h
        .enqueue(
            "acme",
            "user.joined",
            json!({"room": "notes", "user": "ada"}),
        )
        .await;
    assert!(h.settled("acme", second).await.delivered.is_some());
    assert_eq!(
        delivery_ids(&receiver),
        [id.to_string(), second.to_string()]
    );

    let got = receiver.got();
    let first = &got[0];
    assert_eq!(header(first, "content-type"), "application/json");
    assert_eq!(header(first, "chorus-event"), "document.changed");
    let timestamp: i64 = header(first, "chorus-timestamp")
        .parse()
        .expect("numeric timestamp");
    assert!(timestamp >= before && timestamp <= unix_now());
    let signature = header(first, "chorus-signature");
    assert!(signature.starts_with("v1="));
    let tolerance = Duration::from_secs(300);
    assert!(webhooks::verify(
        SECRET.as_bytes(),
        timestamp,
        &first.body,
        signature,
        unix_now(),
        tolerance
    ));
    assert!(!webhooks::verify(
        b"another secret",
        timestamp,
        &first.body,
        signature,
        unix_now(),
        tolerance
    ));
    assert!(
        !webhooks::verify(
            SECRET.as_bytes(),
            timestamp,
            &first.body,
            signature,
            timestamp + 301,
            tolerance
        ),
        "stale timestamps are refused"
    );

    let body: Value = serde_json::from_slice(&first.body).expect("json body");
    assert_eq!(
        body,
        json!({
            "id": id,
            "event": "document.changed",
            "tenant": "acme",
            "created": event.created,
            "data": {"room": "notes", "updates": 2},
        })
    );

    let hook = h.webhook("acme").await;
    assert_eq!(hook.last_status, Some(200));
    assert_eq!(hook.last_error, None);
    assert!(hook.last_attempt.is_some());
    h.stop().await;
}

#[tokio::test]
async fn a_tampered_body_fails_verification() {
    let body = br#"{"id":1,"event":"room.created","tenant":"acme","created":0,"data":{}}"#;
    let now = unix_now();
    let signature = webhooks::sign(SECRET.as_bytes(), now, body);
    let tolerance = Duration::from_secs(300);
    assert!(webhooks::verify(
        SECRET.as_bytes(),
        now,
        body,
        &signature,
        now,
        tolerance
    ));
    let tampered = br#"{"id":1,"event":"room.deleted","tenant":"acme","created":0,"data":{}}"#;
    assert!(!webhooks::verify(
        SECRET.as_bytes(),
        now,
        tampered,
        &signature,
        now,
        tolerance
    ));
    // The timestamp is signed too: moving it forward to dodge the staleness check fails.
    assert!(!webhooks::verify(
        SECRET.as_bytes(),
        now + 1,
        body,
        &signature,
        now,
        tolerance
    ));
    assert!(!webhooks::verify(
        SECRET.as_bytes(),
        now,
        body,
        "v1=not-hex",
        now,
        tolerance
    ));
    assert!(!webhooks::verify(
        SECRET.as_bytes(),
        now,
        body,
        "",
        now,
        tolerance
    ));
}

#[tokio::test]
async fn failures_are_retried_with_growing_delays() {
    let receiver = Receiver::start(
        &[Reply::Status(500), Reply::Status(500)],
        Reply::Status(200),
    )
    .await;
    let options = fast();
    let h = Harness::start(options.clone()).await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let id = h
        .enqueue("acme", "room.created", json!({"room": "plans"}))
        .await;

    let event = h.settled("acme", id).await;
    assert!(event.delivered.is_some(), "delivered: {event:?}");
    assert!(!event.failed);
    assert_eq!(event.attempts, 3);
    assert_eq!(event.last_status, Some(200));

    let got = receiver.got();
    assert_eq!(got.len(), 3, "two failures and a success");
    assert!(
        delivery_ids(&receiver).iter().all(|d| *d == id.to_string()),
        "one delivery id across retries"
    );
    // Lower bounds only: each retry waits at least its backoff, which doubles.
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= options.base_backoff, "gaps {gaps:?}");
    assert!(gaps[1] >= options.base_backoff * 2, "gaps {gaps:?}");
    let stamps: Vec<i64> = got
        .iter()
        .map(|r| header(r, "chorus-timestamp").parse().expect("timestamp"))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "stamps {stamps:?}");
    for r in &got {
        let t = header(r, "chorus-timestamp").parse().expect("timestamp");
        assert!(webhooks::verify(
            SECRET.as_bytes(),
            t,
            &r.body,
            header(r, "chorus-signature"),
            t,
            Duration::ZERO
        ));
    }

    let hook = h.webhook("acme").await;
    assert_eq!(hook.last_status, Some(200));
    assert_eq!(hook.last_error, None);
    h.stop().await;
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_given_up() {
    let receiver = Receiver::start(&[], Reply::Status(500)).await;
    let h = Harness::start(WebhookOptions {
        max_attempts: 3,
        ..fast()
    })
    .await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let id = h
        .enqueue("acme", "room.deleted", json!({"room": "old"}))
        .await;

    let event = h.settled("acme", id).await;
    assert!(event.failed, "given up: {event:?}");
    assert!(event.delivered.is_none());
    assert_eq!(event.attempts, 3);
    assert_eq!(event.last_status, Some(500));
    let error = event.last_error.expect("an error is recorded");
    assert!(error.starts_with("HTTP 500"), "{error}");
    assert!(error.chars().count() <= 200);
    assert_eq!(receiver.got().len(), 3);

    let hook = h.webhook("acme").await;
    assert_eq!(hook.last_status, Some(500));
    assert!(hook.last_error.is_some());
    h.stop().await;
}

#[tokio::test]
async fn gone_is_given_up_at_once() {
    let receiver = Receiver::start(&[], Reply::Status(410)).await;
    let h = Harness::start(fast()).await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let id = h
        .enqueue("acme", "user.left", json!({"room": "r", "user": "bo"}))
        .await;
    let event = h.settled("acme", id).await;
    assert!(event.failed);
    assert_eq!(event.attempts, 1);
    assert_eq!(event.last_status, Some(410));
    assert_eq!(receiver.got().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_given_up() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let h = Harness::start(WebhookOptions {
        max_attempts: 2,
        ..fast()
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/hook");
    h.tenant("acme", Some((&url, &[]))).await;
    let id = h
        .enqueue("acme", "room.created", json!({"room": "r"}))
        .await;
    let event = h.settled("acme", id).await;
    assert!(event.failed);
    assert_eq!(event.attempts, 2);
    assert_eq!(event.last_status, None);
    let error = event.last_error.expect("an error is recorded");
    assert!(error.starts_with("connection failed"), "{error}");
    h.stop().await;
}

#[tokio::test]
async fn events_without_webhook_or_subscription_are_retired() {
    let receiver = Receiver::start(&[], Reply::Status(200)).await;
    let h = Harness::start(fast()).await;
    h.tenant("nohook", None).await;
    h.tenant("picky", Some((&receiver.url, &["user.joined"])))
        .await;

    let orphan = h
        .enqueue("nohook", "document.changed", json!({"room": "r"}))
        .await;
    let skipped = h
        .enqueue("picky", "document.changed", json!({"room": "r"}))
        .await;
    let wanted = h
        .enqueue("picky", "user.joined", json!({"room": "r", "user": "cy"}))
        .await;

    let orphan = h.settled("nohook", orphan).await;
    assert!(orphan.failed);
    assert_eq!(orphan.last_error.as_deref(), Some(webhooks::NO_WEBHOOK));

    let skipped = h.settled("picky", skipped).await;
    assert!(skipped.delivered.is_some());
    assert_eq!(skipped.last_status, None);
    assert_eq!(skipped.last_error.as_deref(), Some(webhooks::FILTERED));

    assert!(h.settled("picky", wanted).await.delivered.is_some());
    let got = receiver.got();
    assert_eq!(got.len(), 1, "only the subscribed event is sent");
    assert_eq!(header(&got[0], "chorus-event"), "user.joined");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_the_loop_with_a_request_in_flight() {
    let receiver = Receiver::start(&[], Reply::Hang).await;
    let h = Harness::start(WebhookOptions {
        timeout: Duration::from_secs(20),
        ..fast()
    })
    .await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let id = h
        .enqueue("acme", "room.created", json!({"room": "r"}))
        .await;
    eventually("the request reaches the receiver", async || {
        (!receiver.got().is_empty()).then_some(())
    })
    .await;
    let store = h.store.clone();
    h.stop().await;
    // Nothing was recorded: the lease runs out and another dispatcher sends it again.
    let event = store
        .list_events("acme", 10)
        .await
        .expect("list events")
        .into_iter()
        .find(|e| e.id == id)
        .expect("event");
    assert!(event.delivered.is_none() && !event.failed);
    assert_eq!(event.attempts, 0);
}

#[tokio::test]
async fn a_backlog_larger_than_a_batch_is_delivered_once_each() {
    let receiver = Receiver::start(&[], Reply::Status(204)).await;
    let h = Harness::start(WebhookOptions {
        batch: 8,
        concurrency: 3,
        ..fast()
    })
    .await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    let events: Vec<NewEvent> = (0..40)
        .map(|i| NewEvent {
            tenant: "acme".to_owned(),
            event: "document.changed".to_owned(),
            body: json!({ "room": format!("r{i}") }),
            delay: 0,
        })
        .collect();
    h.store
        .enqueue_events(&events, unix_now())
        .await
        .expect("enqueue");
    h.notify.notify();
    eventually("every event delivered", async || {
        h.events("acme")
            .await
            .iter()
            .all(|e| e.delivered.is_some())
            .then_some(())
    })
    .await;
    let mut ids = delivery_ids(&receiver);
    assert_eq!(ids.len(), 40);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no event sent twice");
    h.stop().await;
}

#[tokio::test]
async fn pruning_removes_settled_events_of_every_tenant_and_keeps_pending_ones() {
    let receiver = Receiver::start(&[], Reply::Status(200)).await;
    let h = Harness::start(fast()).await;
    h.tenant("acme", Some((&receiver.url, &[]))).await;
    h.tenant("globex", Some((&receiver.url, &[]))).await;
    let a = h.enqueue("acme", "user.joined", json!({"room": "r"})).await;
    let g = h.enqueue("globex", "user.left", json!({"room": "r"})).await;
    assert!(h.settled("acme", a).await.delivered.is_some());
    assert!(h.settled("globex", g).await.delivered.is_some());
    let store: &dyn chorus_persistence::Store = &*h.store;
    // Nothing is old enough yet.
    assert_eq!(
        chorus_hub::webhooks::events::prune_once(store, unix_now() - 3600)
            .await
            .expect("prune"),
        0
    );
    // With the dispatcher stopped, a new event stays pending; settled ones of both tenants go.
    h.shutdown.cancel();
    let before: Vec<i64> = h.events("acme").await.iter().map(|e| e.id).collect();
    h.store
        .enqueue_events(
            &[NewEvent {
                tenant: "acme".to_owned(),
                event: "user.left".to_owned(),
                body: json!({"room": "r"}),
                delay: 0,
            }],
            unix_now(),
        )
        .await
        .expect("enqueue");
    let stuck = h
        .events("acme")
        .await
        .iter()
        .map(|e| e.id)
        .find(|id| !before.contains(id))
        .expect("new event");
    assert_eq!(
        chorus_hub::webhooks::events::prune_once(store, unix_now() + 10)
            .await
            .expect("prune"),
        2
    );
    let left = h.store.list_events("acme", 10).await.expect("list");
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [stuck]);
    assert!(
        h.store
            .list_events("globex", 10)
            .await
            .expect("list")
            .is_empty()
    );
}
