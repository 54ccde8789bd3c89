//! The behaviour every store's search index must have: the durable queue, chunks and full
//! text, the change feed, vectors, tenant isolation and deletion.

use std::sync::Arc;

use bytes::Bytes;

use crate::search::{Chunk, HIT_END, HIT_START, RoomFilter};
use crate::{AppendBatch, RoomKey, Store};

fn chunk(hash: &str, ord: i32, text: &str, vector: Option<Vec<f32>>) -> Chunk {
    Chunk {
        hash: hash.into(),
        ord,
        start: i64::from(ord) * 100,
        field: "default".into(),
        position: Some(format!("pos-{hash}")),
        lines: Some(format!("[[0, \"pos-{hash}\"]]")),
        text: text.into(),
        model: if vector.is_some() {
            "m".into()
        } else {
            String::new()
        },
        vector,
    }
}

fn all() -> RoomFilter {
    RoomFilter::from_patterns(&["*"], None)
}

async fn edit(store: &dyn Store, tenant: &str, room: &str, due: Option<i64>) {
    store
        .append(&[AppendBatch {
            key: RoomKey::new(tenant, room),
            updates: vec![Bytes::from_static(b"\x00\x00")],
            events: Vec::new(),
            search_due: due,
        }])
        .await
        .expect("append");
}

/// Edits queue their room in the append's transaction; a burst costs one job; a job whose room
/// changed while it ran comes back; a claim that is never finished comes back after its lease.
pub async fn queue_is_durable_and_coalesces(store: Arc<dyn Store>) {
    edit(&*store, "a", "r1", Some(1_000)).await;
    edit(&*store, "a", "r1", Some(1_500)).await;
    edit(&*store, "a", "r1", Some(1_900)).await;
    edit(&*store, "b", "r1", Some(5_000)).await;
    edit(&*store, "a", "off", None).await;
    assert_eq!(
        store.search_queue_depth(2_000).await.expect("depth"),
        (2, 1)
    );
    assert!(
        store
            .claim_search_jobs(999, 60_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let jobs = store
        .claim_search_jobs(2_000, 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        jobs.len(),
        1,
        "one job for a burst of three edits: {jobs:?}"
    );
    assert_eq!(
        (jobs[0].tenant.as_str(), jobs[0].room.as_str()),
        ("a", "r1")
    );
    // Leased: nobody else gets it meanwhile.
    assert!(
        store
            .claim_search_jobs(2_001, 60_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // Edited while being indexed: the job stays, due again.
    edit(&*store, "a", "r1", Some(2_500)).await;
    assert!(
        !store
            .finish_search_job(&jobs[0], 3_000)
            .await
            .expect("finish")
    );
    let again = store
        .claim_search_jobs(3_000, 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert!(
        store
            .finish_search_job(&again[0], 9_999)
            .await
            .expect("finish")
    );
    assert_eq!(
        store.search_queue_depth(10_000).await.expect("depth"),
        (1, 1)
    );
    // A node that dies holding a job: the lease runs out and another claims it.
    let held = store
        .claim_search_jobs(10_000, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(held.len(), 1);
    assert!(
        store
            .claim_search_jobs(10_500, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let retaken = store
        .claim_search_jobs(11_000, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(retaken, held);
    // Backfill queues rooms without edits.
    store
        .enqueue_search("c", &["x".into(), "y".into()], 0)
        .await
        .expect("enqueue");
    assert_eq!(
        store
            .claim_search_jobs(20_000, 1_000, 10)
            .await
            .expect("claim")
            .len(),
        3
    );
    // Every room with a stored document, once: of one tenant, then of all (queued rooms keep
    // their row).
    edit(&*store, "d", "r1", None).await;
    edit(&*store, "d", "r2", None).await;
    edit(&*store, "e", "r1", None).await;
    assert_eq!(
        store
            .enqueue_stored_rooms(Some("d"), 30_000)
            .await
            .expect("backfill"),
        2
    );
    assert_eq!(
        store
            .enqueue_stored_rooms(None, 30_000)
            .await
            .expect("backfill"),
        3
    );
    // The limit holds: three now, the other five (not the leased three) next.
    let first = store
        .claim_search_jobs(30_000, 1_000, 3)
        .await
        .expect("claim");
    assert_eq!(first.len(), 3);
    let rest = store
        .claim_search_jobs(30_000, 1_000, 100)
        .await
        .expect("claim");
    assert_eq!(rest.len(), 5);
    let mut keys: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|j| format!("{}/{}", j.tenant, j.room))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "a/off", "a/r1", "b/r1", "c/x", "c/y", "d/r1", "d/r2", "e/r1"
        ]
    );
}

/// Chunks are found by their words with marked snippets, the best chunk per room, only in
/// rooms the filter allows and only in the tenant asked for.
pub async fn full_text_finds_ranked_marked_and_filtered(store: Arc<dyn Store>) {
    store
        .replace_room_chunks(
            "a",
            "team/plan",
            &[
                chunk(
                    "h1",
                    0,
                    "We decided the pricing last month: ten euros a seat.",
                    None,
                ),
                chunk(
                    "h2",
                    1,
                    "Pricing pricing pricing, and more pricing talk.",
                    None,
                ),
            ],
            "english",
            1,
            None,
        )
        .await
        .expect("replace");
    store
        .replace_room_chunks(
            "a",
            "hr/pay",
            &[chunk("h3", 0, "Salary and pricing bands", None)],
            "english",
            1,
            None,
        )
        .await
        .expect("replace");
    store
        .replace_room_chunks(
            "b",
            "team/plan",
            &[chunk("h4", 0, "pricing of tenant b", None)],
            "english",
            1,
            None,
        )
        .await
        .expect("replace");
    let hits = store
        .search_text("a", "pricing", "english", &all(), 10)
        .await
        .expect("search");
    let rooms: Vec<&str> = hits.iter().map(|h| h.room.as_str()).collect();
    assert_eq!(rooms.len(), 2, "one hit per room: {hits:?}");
    assert!(rooms.contains(&"team/plan") && rooms.contains(&"hr/pay"));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let plan = hits.iter().find(|h| h.room == "team/plan").expect("plan");
    assert!(
        plan.snippet.contains(HIT_START) && plan.snippet.contains(HIT_END),
        "marked snippet: {:?}",
        plan.snippet
    );
    assert_eq!(plan.field, "default");
    assert!(
        plan.position
            .as_deref()
            .is_some_and(|p| p.starts_with("pos-"))
    );
    // The token's grant, inside the query.
    let team = RoomFilter::from_patterns(&["team/*"], None);
    let hits = store
        .search_text("a", "pricing", "english", &team, 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].room, "team/plan");
    let none = RoomFilter::from_patterns(&["*"], Some("eng/".into()));
    assert!(
        store
            .search_text("a", "pricing", "english", &none, 10)
            .await
            .expect("search")
            .is_empty()
    );
    // Words that need stemming, and operators that must not be operators.
    let stemmed = store
        .search_text("a", "decide", "english", &all(), 10)
        .await
        .expect("search");
    assert_eq!(stemmed.len(), 1, "{stemmed:?}");
    for hostile in [
        "\"unbalanced",
        "pricing OR",
        "NEAR(x y)",
        "col:pricing",
        "*",
        "-",
        "'; DROP",
    ] {
        store
            .search_text("a", hostile, "english", &all(), 10)
            .await
            .unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
    }
    assert!(
        store
            .search_text("c", "pricing", "english", &all(), 10)
            .await
            .expect("search")
            .is_empty()
    );
}

/// Replacing keeps unchanged chunks' embeddings, drops deleted text, and moves the change
/// feed; deleting a room or a tenant takes its index with it.
pub async fn replace_delete_and_change_feed(store: Arc<dyn Store>) {
    let v = |x: f32| Some(vec![x, 0.0, 0.0]);
    let before = store.last_search_change().await.expect("last");
    store
        .replace_room_chunks(
            "a",
            "r",
            &[
                chunk("h1", 0, "alpha words", v(1.0)),
                chunk("h2", 1, "beta words", v(0.5)),
            ],
            "simple",
            1,
            None,
        )
        .await
        .expect("replace");
    let first = store.last_search_change().await.expect("last");
    assert!(first > before);
    // h1 kept without a new embedding (its vector stays), h2 deleted, h3 new.
    store
        .replace_room_chunks(
            "a",
            "r",
            &[
                chunk("h1", 1, "alpha words", None),
                chunk("h3", 0, "gamma", v(0.25)),
            ],
            "simple",
            2,
            None,
        )
        .await
        .expect("replace");
    let chunks = store.room_chunks("a", "r").await.expect("chunks");
    let hashes: Vec<&str> = chunks.iter().map(|c| c.hash.as_str()).collect();
    assert_eq!(hashes, ["h3", "h1"]);
    assert_eq!(chunks[1].vector, v(1.0));
    assert!(
        store
            .search_text("a", "beta", "simple", &all(), 10)
            .await
            .expect("search")
            .is_empty()
    );
    let vectors = store.room_vectors("a", "r").await.expect("vectors");
    assert_eq!(vectors.len(), 2);
    let changes = store.search_changes(first, 10).await.expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].tenant.as_str(), changes[0].room.as_str()),
        ("a", "r")
    );
    let found = store
        .chunks_by_hash(
            "a",
            &[
                ("r".into(), "h3".into()),
                ("r".into(), "h2".into()),
                ("x".into(), "h1".into()),
            ],
        )
        .await
        .expect("by hash");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.text, "gamma");
    assert!(
        store
            .chunks_by_hash("b", &[("r".into(), "h3".into())])
            .await
            .expect("by hash")
            .is_empty()
    );
    // Pages of the tenant's vectors, by room and hash.
    store
        .replace_room_chunks(
            "a",
            "s",
            &[chunk("k1", 0, "one", v(0.1)), chunk("k2", 1, "two", v(0.2))],
            "simple",
            3,
            None,
        )
        .await
        .expect("replace");
    let mut after = (String::new(), String::new());
    let mut seen = Vec::new();
    loop {
        let page = store
            .tenant_vectors("a", (&after.0, &after.1), 3)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = (last.room.clone(), last.hash.clone());
        seen.extend(page.into_iter().map(|p| format!("{}/{}", p.room, p.hash)));
    }
    assert_eq!(seen, ["r/h1", "r/h3", "s/k1", "s/k2"]);
    assert!(
        store
            .tenant_vectors("b", ("", ""), 10)
            .await
            .expect("page")
            .is_empty()
    );
    // A deleted room leaves the index and the feed says so.
    let mark = store.last_search_change().await.expect("last");
    edit(&*store, "a", "r", Some(1)).await;
    assert!(
        store
            .delete_room_everything("a", "r")
            .await
            .expect("delete")
    );
    assert!(
        store
            .room_chunks("a", "r")
            .await
            .expect("chunks")
            .is_empty()
    );
    let changes = store.search_changes(mark, 10).await.expect("changes");
    assert_eq!(
        changes.iter().map(|c| c.room.as_str()).collect::<Vec<_>>(),
        ["r"]
    );
    assert!(
        store
            .claim_search_jobs(i64::MAX / 2, 1, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a deleted room is not indexed again"
    );
    // An indexing that overlaps the deletion (claimed before, written after) writes nothing.
    let late = crate::search::SearchJob {
        tenant: "a".into(),
        room: "r".into(),
        generation: 0,
    };
    store
        .replace_room_chunks(
            "a",
            "r",
            &[chunk("z", 0, "back again", None)],
            "simple",
            9,
            Some(&late),
        )
        .await
        .expect("replace");
    assert!(
        store
            .room_chunks("a", "r")
            .await
            .expect("chunks")
            .is_empty()
    );
    // Change numbers only grow, even when the rows holding the highest go with a tenant.
    let high = store.last_search_change().await.expect("last");
    store.delete_tenant("a").await.expect("delete tenant");
    assert!(store.last_search_change().await.expect("last") >= high);
    assert!(
        store
            .room_chunks("a", "s")
            .await
            .expect("chunks")
            .is_empty()
    );
    assert!(
        store
            .tenant_vectors("a", ("", ""), 10)
            .await
            .expect("page")
            .is_empty()
    );
}

/// Embedding tokens count toward the day's AI use.
pub async fn embedding_tokens_count_toward_the_day(store: Arc<dyn Store>) {
    let day = 86_400 * 20_000;
    store
        .record_ai_usage("a", day + 5, 70)
        .await
        .expect("usage");
    store
        .record_ai_usage("a", day + 50, 30)
        .await
        .expect("usage");
    store
        .record_ai_usage("a", day - 5, 1_000)
        .await
        .expect("yesterday");
    store
        .record_ai_usage("b", day + 5, 7)
        .await
        .expect("other tenant");
    assert_eq!(store.ai_tokens_since("a", day).await.expect("since"), 100);
    assert_eq!(store.ai_tokens_since("b", day).await.expect("since"), 7);
}
