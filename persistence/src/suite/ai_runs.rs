//! The behaviour every store's record of AI runs must have.

use std::sync::Arc;

use crate::{AiRun, AiRunFilter, AiRunUpdate, Store};

/// A run of `tenant` in `room`, asked at `created`.
pub fn run(tenant: &str, id: &str, room: &str, created: i64) -> AiRun {
    AiRun {
        tenant: tenant.into(),
        id: id.into(),
        room: room.into(),
        user: "alice".into(),
        provider: "default".into(),
        model: "m".into(),
        target: "chat".into(),
        mode: "direct".into(),
        status: "running".into(),
        client_id: 4_000_000_000,
        node: "n1".into(),
        idempotency_key: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        ttft_ms: None,
        duration_ms: None,
        error: None,
        created,
        finished: None,
    }
}

/// Insert, update, get, list with filters, newest first.
pub async fn record_update_and_list(store: Arc<dyn Store>) {
    for (i, room) in ["r1", "r2", "r1"].iter().enumerate() {
        let r = run("t", &format!("run{i}"), room, 100 + i as i64);
        assert_eq!(store.insert_ai_run(&r).await.expect("insert"), None);
    }
    let update = AiRunUpdate {
        status: "done".into(),
        tokens: Some((12, 34)),
        ttft_ms: Some(80),
        duration_ms: Some(900),
        error: None,
        finished: Some(105),
    };
    assert!(
        store
            .update_ai_run("t", "run0", &update)
            .await
            .expect("update")
    );
    assert!(
        !store
            .update_ai_run("t", "nope", &update)
            .await
            .expect("update")
    );
    let got = store
        .get_ai_run("t", "run0")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.status, "done");
    assert_eq!((got.prompt_tokens, got.completion_tokens), (12, 34));
    assert_eq!(
        (got.ttft_ms, got.duration_ms, got.finished),
        (Some(80), Some(900), Some(105))
    );
    assert_eq!(got.client_id, 4_000_000_000);
    // A later status change keeps the figures.
    let reverted = AiRunUpdate {
        status: "reverted".into(),
        ..AiRunUpdate::default()
    };
    assert!(
        store
            .update_ai_run("t", "run0", &reverted)
            .await
            .expect("revert")
    );
    let got = store
        .get_ai_run("t", "run0")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (got.status.as_str(), got.completion_tokens),
        ("reverted", 34)
    );

    let all = store
        .list_ai_runs(
            "t",
            &AiRunFilter {
                limit: 10,
                ..AiRunFilter::default()
            },
        )
        .await
        .expect("list");
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["run2", "run1", "run0"]);
    let r1 = store
        .list_ai_runs(
            "t",
            &AiRunFilter {
                room: Some("r1".into()),
                limit: 10,
                ..AiRunFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(r1.len(), 2);
    let page = store
        .list_ai_runs(
            "t",
            &AiRunFilter {
                before: Some(102),
                limit: 1,
                ..AiRunFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "run1");
    let running = store
        .list_ai_runs(
            "t",
            &AiRunFilter {
                status: Some("running".into()),
                limit: 10,
                ..AiRunFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(running.len(), 2);
    assert_eq!(store.ai_tokens_since("t", 0).await.expect("tokens"), 46);
    assert_eq!(store.ai_tokens_since("t", 101).await.expect("tokens"), 0);
}

/// The same idempotency key (per tenant and asker) gives back the first run.
pub async fn idempotency_keys_return_the_first_run(store: Arc<dyn Store>) {
    let mut a = run("t", "first", "r", 1);
    a.idempotency_key = Some("k1".into());
    assert_eq!(store.insert_ai_run(&a).await.expect("insert"), None);
    let mut b = run("t", "second", "r", 2);
    b.idempotency_key = Some("k1".into());
    let existing = store
        .insert_ai_run(&b)
        .await
        .expect("insert")
        .expect("existing");
    assert_eq!(existing.id, "first");
    assert!(
        store
            .get_ai_run("t", "second")
            .await
            .expect("get")
            .is_none()
    );
    // Another asker, or another tenant, has its own keys.
    let mut c = run("t", "third", "r", 3);
    c.user = "bob".into();
    c.idempotency_key = Some("k1".into());
    assert_eq!(store.insert_ai_run(&c).await.expect("insert"), None);
    let mut d = run("u", "fourth", "r", 4);
    d.idempotency_key = Some("k1".into());
    assert_eq!(store.insert_ai_run(&d).await.expect("insert"), None);
}

/// Runs a node left running become `interrupted` when it starts again; others stay.
pub async fn interrupted_runs_are_marked_at_start(store: Arc<dyn Store>) {
    store
        .insert_ai_run(&run("t", "a", "r", 1))
        .await
        .expect("insert");
    let mut other_node = run("t", "b", "r", 2);
    other_node.node = "n2".into();
    store.insert_ai_run(&other_node).await.expect("insert");
    let mut done = run("t", "c", "r", 3);
    done.status = "done".into();
    store.insert_ai_run(&done).await.expect("insert");
    let hit = store
        .interrupt_ai_runs("t", "n1", 10)
        .await
        .expect("interrupt");
    assert_eq!(hit.len(), 1);
    assert_eq!(
        (hit[0].id.as_str(), hit[0].status.as_str()),
        ("a", "interrupted")
    );
    let b = store.get_ai_run("t", "b").await.expect("get").expect("b");
    assert_eq!(b.status, "running");
    let c = store.get_ai_run("t", "c").await.expect("get").expect("c");
    assert_eq!(c.status, "done");
}

/// One tenant never sees or changes another's runs; deleting a tenant deletes its runs.
pub async fn runs_are_per_tenant(store: Arc<dyn Store>) {
    store
        .insert_ai_run(&run("a", "x", "r", 1))
        .await
        .expect("insert");
    store
        .insert_ai_run(&run("b", "x", "r", 1))
        .await
        .expect("same id, other tenant");
    let done = AiRunUpdate {
        status: "done".into(),
        ..AiRunUpdate::default()
    };
    assert!(store.update_ai_run("a", "x", &done).await.expect("update"));
    let b = store.get_ai_run("b", "x").await.expect("get").expect("b");
    assert_eq!(b.status, "running");
    assert!(store.get_ai_run("c", "x").await.expect("get").is_none());
    let listed = store
        .list_ai_runs(
            "b",
            &AiRunFilter {
                limit: 10,
                ..AiRunFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(
        store
            .interrupt_ai_runs("c", "n1", 5)
            .await
            .expect("interrupt")
            .is_empty()
    );
    store.delete_tenant("a").await.expect("delete");
    assert!(store.get_ai_run("a", "x").await.expect("get").is_none());
    assert!(store.get_ai_run("b", "x").await.expect("get").is_some());
}
