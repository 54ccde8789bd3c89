//! Search end to end: a real hub on SQLite, real WebSocket members writing Tiptap-shaped
//! documents, the stand-in model server's embeddings over real HTTP (it hashes words into
//! vectors, so texts that share words are near: "by meaning" finds what the words alone do not
//! match), REST and socket queries, the assistant's `search_documents` tool, deletions, the
//! first-start backfill and a killed hub.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use chorus_ai_bridge::chat;
use chorus_ai_bridge::standin::{Behavior, ScriptedCall, StandIn};
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::ext::ServerMessage;
use common::{PATIENCE, SECRET, TestServer, test_config, token};

const OPERATOR: &str = "operator-key-for-search-tests-0123456789";
use serde_json::{Value, json};
use yrs::types::xml::Xml;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Transact, XmlElementPrelim, XmlFragment, XmlTextPrelim};

const CORPUS: [(&str, &str); 5] = [
    (
        "team/pricing",
        "We decided the pricing last month: ten euros per seat for every team.",
    ),
    (
        "team/holiday",
        "The summer holiday plans: the office closes for two weeks in August.",
    ),
    (
        "team/infra",
        "Database migration to Postgres finished; replicas run in two zones.",
    ),
    (
        "hr/pay",
        "Salary bands and the pricing of bonuses are confidential.",
    ),
    (
        "eng/notes",
        "Notes from the standup: the search box ships on Friday.",
    ),
];

struct Setup {
    server: TestServer,
    standin: StandIn,
    _dir: tempfile::TempDir,
}

async fn setup(tweak: impl FnOnce(&mut chorus_hub::Config)) -> Setup {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(dir.path())
    };
    config.ai.ai_base_url = Some(standin.base_url());
    config.ai.ai_model = Some("standin-1".into());
    config.search.search_embedding_model = Some("standin-embed".into());
    config.search.search_debounce = Duration::from_millis(200);
    config.operator_key = Some(OPERATOR.into());
    tweak(&mut config);
    let server = TestServer::start(config).await;
    Setup {
        server,
        standin,
        _dir: dir,
    }
}

fn all_rooms() -> String {
    token(json!({"rooms": ["*"], "role": "write", "sub": "ann"}))
}

async fn member(server: &TestServer, room: &str, tok: &str) -> Client {
    server
        .client_with(
            room,
            ClientOptions {
                ext: true,
                token: Some(tok.to_owned()),
                ..ClientOptions::default()
            },
        )
        .await
}

/// Waits until the hub has saved `n` of the client's updates.
async fn saved(c: &Client, n: u64) {
    c.wait_for("saved", PATIENCE, move |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= n))
    })
    .await
    .unwrap_or_else(|_| panic!("not saved; events: {:?}", c.state().events));
}

/// Writes a paragraph as Tiptap does (a heading first, to show tags are not text).
fn paragraph(c: &Client, text: &str) {
    let f = c.doc().get_or_insert_xml_fragment("default");
    let mut txn = c.doc().transact_mut();
    let h = f.push_back(&mut txn, XmlElementPrelim::empty("heading"));
    h.insert_attribute(&mut txn, "level", "2");
    h.push_back(&mut txn, XmlTextPrelim::new("Minutes"));
    let p = f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
    p.push_back(&mut txn, XmlTextPrelim::new(text));
}

async fn write(server: &TestServer, room: &str, text: &str) -> Client {
    let c = member(server, room, &all_rooms()).await;
    c.synced(PATIENCE).await.expect("synced");
    paragraph(&c, text);
    saved(&c, 1).await;
    c
}

async fn search(server: &TestServer, bearer: Option<&str>, query: &str) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http.get(format!("http://{}/v1/search?{query}", server.addr));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Rooms indexed so far from `source` (`live`: an open room's document; `store`).
async fn indexed(server: &TestServer, source: &str) -> u64 {
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let series = format!("chorus_search_indexed_total{{source=\"{source}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or_else(|| panic!("no {series} in\n{metrics}"), |v| v as u64)
}

fn rooms(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|h| h["room"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until `query` returns `room` (or, with `gone`, no longer does); returns how long.
async fn until(server: &TestServer, query: &str, room: &str, gone: bool) -> Duration {
    let started = Instant::now();
    let tok = all_rooms();
    loop {
        let (status, answer) = search(server, Some(&tok), query).await;
        assert_eq!(status, 200, "{answer}");
        if rooms(&answer).iter().any(|r| r == room) != gone {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{query}: {room} {} after 20 s: {answer}",
            if gone { "still found" } else { "not found" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn corpus(server: &TestServer) -> Vec<Client> {
    let mut clients = Vec::new();
    for (room, text) in CORPUS {
        clients.push(write(server, room, text).await);
    }
    for (room, _) in CORPUS {
        until(server, "q=minutes&mode=text&limit=50", room, false).await;
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_found_by_words_by_meaning_and_both_within_the_grant() {
    let s = setup(|_| {}).await;
    let clients = corpus(&s.server).await;
    let tok = all_rooms();

    // Words: both rooms that say "pricing", the match marked, tags never indexed.
    let (status, a) = search(&s.server, Some(&tok), "q=pricing&mode=text").await;
    assert_eq!(status, 200, "{a}");
    let mut found = rooms(&a);
    found.sort();
    assert_eq!(found, ["hr/pay", "team/pricing"]);
    let hit = &a["results"][0];
    let snippet: Vec<char> = hit["snippet"].as_str().expect("snippet").chars().collect();
    let [start, end] = [
        hit["highlights"][0][0].as_u64().expect("start") as usize,
        hit["highlights"][0][1].as_u64().expect("end") as usize,
    ];
    assert_eq!(
        snippet[start..end]
            .iter()
            .collect::<String>()
            .to_lowercase(),
        "pricing"
    );
    assert_eq!(hit["matched"], json!(["text"]));
    assert_eq!(a["mode"], "text");
    let (_, none) = search(&s.server, Some(&tok), "q=heading&mode=text").await;
    assert!(rooms(&none).is_empty(), "tag names are not text: {none}");
    let (_, none) = search(&s.server, Some(&tok), "q=level&mode=text").await;
    assert!(
        rooms(&none).is_empty(),
        "attribute names are not text: {none}"
    );

    // By meaning: no room holds all of these words, yet the one about seats and euros is
    // nearest; the words alone find nothing.
    let query = "q=seat+cost+in+euros";
    let (_, words) = search(&s.server, Some(&tok), &format!("{query}&mode=text")).await;
    assert!(rooms(&words).is_empty(), "{words}");
    let (status, meaning) = search(&s.server, Some(&tok), &format!("{query}&mode=semantic")).await;
    assert_eq!(status, 200, "{meaning}");
    assert_eq!(meaning["semantic"], true);
    assert_eq!(rooms(&meaning)[0], "team/pricing", "{meaning}");
    let (_, hybrid) = search(&s.server, Some(&tok), query).await;
    assert_eq!(hybrid["mode"], "hybrid");
    assert_eq!(rooms(&hybrid)[0], "team/pricing", "{hybrid}");
    // Found both ways ranks first.
    let (_, both) = search(&s.server, Some(&tok), "q=pricing+euros+seat").await;
    assert_eq!(rooms(&both)[0], "team/pricing");
    assert_eq!(both["results"][0]["matched"], json!(["text", "semantic"]));

    // The grant is applied inside each ranking: a team/* token never sees hr/pay, in any
    // mode, and still gets its best matches.
    let team = token(json!({"rooms": ["team/*"], "role": "read"}));
    for (mode, q) in [
        ("text", "pricing"),
        ("semantic", "pricing+bonuses"),
        ("hybrid", "pricing+bonuses"),
    ] {
        let (status, a) = search(
            &s.server,
            Some(&team),
            &format!("q={q}&mode={mode}&limit=50"),
        )
        .await;
        assert_eq!(status, 200, "{a}");
        let found = rooms(&a);
        assert!(found.iter().all(|r| r.starts_with("team/")), "{mode}: {a}");
        assert!(found.contains(&"team/pricing".to_owned()), "{mode}: {a}");
    }
    let one = token(json!({"rooms": ["eng/notes"], "role": "read"}));
    let (_, a) = search(&s.server, Some(&one), "q=the&mode=semantic&limit=50").await;
    assert_eq!(rooms(&a), ["eng/notes"]);
    let (_, a) = search(
        &s.server,
        Some(&tok),
        "q=the&mode=text&room_prefix=team/&limit=50",
    )
    .await;
    assert!(rooms(&a).iter().all(|r| r.starts_with("team/")) && !rooms(&a).is_empty());
    // Another tenant's token finds nothing of this one.
    let other = token(json!({"rooms": ["*"], "tenant": "other", "role": "write"}));
    let (status, a) = search(&s.server, Some(&other), "q=pricing").await;
    assert_eq!(status, 200);
    assert!(rooms(&a).is_empty(), "{a}");

    // The position resolves, in a member's replica, to the start of the passage's paragraph.
    let relative = hit["position"]["relative"].as_str().expect("relative");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(relative)
        .expect("base64");
    let pos = yrs::StickyIndex::decode_v1(&bytes).expect("position");
    let reader = member(&s.server, hit["room"].as_str().expect("room"), &tok).await;
    reader.synced(PATIENCE).await.expect("synced");
    {
        let txn = reader.doc().transact();
        let at = pos.get_offset(&txn).expect("the position resolves");
        assert_eq!(at.index, 0, "at the start of the paragraph's text");
    }
    drop(clients);

    // The same query over the socket's extension frames, under the socket's token.
    let c = member(&s.server, "team/chat", &team).await;
    c.synced(PATIENCE).await.expect("synced");
    c.send_text(
        &json!({"v": 1, "type": "search", "id": "s1", "q": "pricing", "mode": "text"}).to_string(),
    )
    .expect("send");
    c.send_text(&json!({"v": 1, "type": "search", "id": "s2", "q": ""}).to_string())
        .expect("send");
    c.wait_for("search answers", PATIENCE, |st, _| {
        st.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ServerMessage::SearchResults { .. } | ServerMessage::SearchError { .. }
                )
            })
            .count()
            >= 2
    })
    .await
    .unwrap_or_else(|_| panic!("no answers: {:?}", c.state().events));
    let events = c.state().events.clone();
    let answer = events
        .iter()
        .find_map(|e| match e {
            ServerMessage::SearchResults { id, answer } if id.as_deref() == Some("s1") => {
                Some(answer.clone())
            }
            _ => None,
        })
        .expect("s1");
    assert_eq!(rooms(&answer), ["team/pricing"]);
    assert!(events.iter().any(|e| matches!(e,
        ServerMessage::SearchError { id, code, .. } if id.as_deref() == Some("s2") && code == "bad_request")));

    // Bad requests get a problem body and a status, never a panic.
    for (query, want) in [
        ("", 400),
        ("q=", 400),
        ("q=x&mode=fuzzy", 400),
        ("q=x&limit=0", 400),
        ("q=x&limit=51", 400),
        ("q=x&limit=lots", 400),
        ("q=x&other=1", 400),
    ] {
        let (status, body) = search(&s.server, Some(&tok), query).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["detail"].is_string(), "{query}: {body}");
    }
    let long = format!("q={}", "x".repeat(300));
    assert_eq!(search(&s.server, Some(&tok), &long).await.0, 400);
    for hostile in [
        "%22",
        "NEAR(a+b)",
        "a+OR+b",
        "*",
        "col%3Ax",
        "%27%3B+DROP+TABLE+rooms",
    ] {
        let (status, body) = search(&s.server, Some(&tok), &format!("q={hostile}")).await;
        assert_eq!(status, 200, "{hostile}: {body}");
    }
    let (status, _) = search(&s.server, None, "q=pricing").await;
    assert_eq!(status, 401);
    let (status, _) = search(&s.server, Some("not-a-token"), "q=pricing").await;
    assert_eq!(status, 401);

    // Embedding tokens were counted toward the tenant's day.
    let day = chorus_persistence::search::utc_day(common::now() as i64);
    let used = s
        .server
        .app
        .store
        .ai_tokens_since("default", day)
        .await
        .expect("tokens");
    assert!(used > 0, "embedding tokens count");
}

/// Writes a large room (past the size whose whole-document work leaves the runtime workers)
/// through a member who stays, stores a paragraph behind the room's back (queued for
/// indexing, as a flush does), edits again and waits for that edit to be indexed; answers
/// what a search for the paragraph behind the room's back then finds.
async fn indexed_behind_the_rooms_back(tweak: impl FnOnce(&mut chorus_hub::Config)) -> Vec<String> {
    let s = setup(tweak).await;
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(1_500);
    let c = write(
        &s.server,
        "team/live",
        &format!("{filler} The alpaca grazes."),
    )
    .await;
    until(&s.server, "q=alpaca&mode=text", "team/live", false).await;

    let other = yrs::Doc::new();
    {
        let f = other.get_or_insert_xml_fragment("default");
        let mut txn = other.transact_mut();
        let p = f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("The zeppelin lands."));
    }
    let behind = other
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    s.server
        .app
        .store
        .append(&[chorus_persistence::AppendBatch {
            key: chorus_persistence::RoomKey::new("default", "team/live"),
            updates: vec![behind.into()],
            events: Vec::new(),
            search_due: Some(0),
        }])
        .await
        .expect("append");
    paragraph(&c, "The bison sleeps.");
    saved(&c, 2).await;
    until(&s.server, "q=bison&mode=text", "team/live", false).await;
    let tok = all_rooms();
    let (_, found) = search(&s.server, Some(&tok), "q=alpaca&mode=text").await;
    assert_eq!(rooms(&found), ["team/live"], "{found}");
    let (_, found) = search(&s.server, Some(&tok), "q=zeppelin&mode=text").await;
    drop(c);
    s.server.stop().await.expect("stop");
    rooms(&found)
}

/// A node alone indexes an open room from its live document (read on the blocking pool, the
/// room waiting, for this large one), not from the store: text stored behind the room's back
/// (which the store's only writer never does) is not what gets indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_room_is_indexed_from_its_live_document() {
    assert_eq!(
        indexed_behind_the_rooms_back(|_| {}).await,
        Vec::<String>::new()
    );
}

/// In a cluster another node's update may not have reached this node's copy yet: an open room
/// is still indexed from the store, so what was stored behind the room's back is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_open_room_is_indexed_from_the_store() {
    if common::services::redis().await.is_none() {
        return;
    }
    let prefix = common::services::unique_prefix("search-cluster");
    let found = indexed_behind_the_rooms_back(|c| {
        c.redis_url = Some(common::services::redis_url());
        c.redis_prefix = prefix;
        c.node_id = Some("search-node".into());
    })
    .await;
    assert_eq!(found, ["team/live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_text_and_deleted_rooms_leave_the_index() {
    let s = setup(|_| {}).await;
    let c = write(
        &s.server,
        "a/zoo",
        "A zebra crossing near the giraffe house.",
    )
    .await;
    let took = until(&s.server, "q=zebra&mode=text", "a/zoo", false).await;
    println!("searchable {} ms after it was saved", took.as_millis());
    until(&s.server, "q=giraffe+stripes&mode=semantic", "a/zoo", false).await;

    // A burst of edits, each saved: found once the burst is indexed (the store's suite
    // checks that a burst queues one job).
    for i in 0..20 {
        paragraph(&c, &format!("line {i} about an okapi"));
        saved(&c, 2 + i).await;
    }
    until(&s.server, "q=okapi&mode=text", "a/zoo", false).await;

    // Deleted text leaves the index.
    {
        let f = c.doc().get_or_insert_xml_fragment("default");
        let mut txn = c.doc().transact_mut();
        let n = f.len(&txn);
        f.remove_range(&mut txn, 0, n);
        let p = f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("Only a lion now."));
    }
    saved(&c, 22).await;
    until(&s.server, "q=zebra&mode=text", "a/zoo", true).await;
    until(
        &s.server,
        "q=zebra+giraffe+okapi&mode=semantic",
        "a/zoo",
        true,
    )
    .await;
    until(&s.server, "q=lion&mode=text", "a/zoo", false).await;
    drop(c);

    // A deleted room leaves it too, in every mode.
    let http = reqwest::Client::new();
    let res = http
        .delete(format!("http://{}/v1/rooms/a%2Fzoo", s.server.addr))
        .bearer_auth(OPERATOR)
        .header("chorus-tenant", "default")
        .send()
        .await
        .expect("delete");
    assert!(res.status().is_success(), "{:?}", res.status());
    let tok = all_rooms();
    for mode in ["text", "semantic", "hybrid"] {
        let (_, a) = search(&s.server, Some(&tok), &format!("q=lion&mode={mode}")).await;
        assert!(rooms(&a).is_empty(), "{mode}: {a}");
    }
    drop(s.standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_cites_only_rooms_the_asker_may_open() {
    let s = setup(|_| {}).await;
    let _clients = corpus(&s.server).await;
    s.standin.script([
        Behavior {
            tool_calls: vec![ScriptedCall {
                name: "search_documents".into(),
                arguments: r#"{"query": "pricing bonuses", "limit": 8}"#.into(),
            }],
            ..Behavior::default()
        },
        Behavior {
            answer: Some("We settled on ten euros per seat (team/pricing).".into()),
            ..Behavior::default()
        },
    ]);
    let team = token(json!({"rooms": ["team/*"], "role": "write", "sub": "bo"}));
    let c = member(&s.server, "team/chat", &team).await;
    c.synced(PATIENCE).await.expect("synced");
    c.send_text(
        &json!({"v": 1, "type": "ai.ask", "id": "q1",
        "prompt": "what did we decide about pricing last month?"})
        .to_string(),
    )
    .expect("send");
    c.wait_for("ai.done", Duration::from_secs(30), |st, _| {
        st.events
            .iter()
            .any(|e| matches!(e, ServerMessage::AiDone { .. }))
    })
    .await
    .unwrap_or_else(|_| panic!("no ai.done: {:?}", c.state().events));
    let requests = s.standin.requests();
    assert!(
        requests.len() >= 2,
        "the model was asked again with the results"
    );
    assert_eq!(
        requests[0]["tools"][0]["function"]["name"],
        "search_documents"
    );
    let messages = requests[1]["messages"].as_array().expect("messages");
    let tool = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool result");
    let result = tool["content"].as_str().expect("content");
    assert!(result.contains("team/pricing"), "{result}");
    assert!(
        !result.contains("hr/pay") && !result.contains("Salary"),
        "{result}"
    );
    // The answer in the chat carries its citations: rooms the asker may open, only.
    let started = Instant::now();
    loop {
        let arr = c.doc().get_or_insert_array(chat::CHAT);
        let done = chat::recent(&c.doc().transact(), &arr, 10)
            .iter()
            .any(|m| m.status.as_deref() == Some("done"));
        if done {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "no answer in the chat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let citations = {
        let arr = c.doc().get_or_insert_array(chat::CHAT);
        let txn = c.doc().transact();
        let last = yrs::Array::iter(&arr, &txn).last().expect("message");
        let yrs::Out::YMap(m) = last else {
            panic!("not a map")
        };
        yrs::Map::get(&m, &txn, "citations").map(|v| v.to_string(&txn))
    };
    let citations = citations.expect("citations");
    assert!(citations.contains("team/pricing"), "{citations}");
    assert!(!citations.contains("hr/"), "{citations}");

    // A broken call from the model is an error it reads, not a failed run.
    s.standin.script([
        Behavior {
            tool_calls: vec![ScriptedCall {
                name: "search_documents".into(),
                arguments: "{not json".into(),
            }],
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    c.send_text(&json!({"v": 1, "type": "ai.ask", "id": "q2", "prompt": "again"}).to_string())
        .expect("send");
    c.wait_for("second ai.done", Duration::from_secs(30), |st, _| {
        st.events
            .iter()
            .filter(|e| matches!(e, ServerMessage::AiDone { status, .. } if status == "done"))
            .count()
            >= 2
    })
    .await
    .unwrap_or_else(|_| panic!("no second ai.done: {:?}", c.state().events));
    let requests = s.standin.requests();
    let last = requests.last().expect("request");
    let tool = last["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result");
    assert!(tool["content"].as_str().expect("content").contains("error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_written_before_search_was_on_are_backfilled_at_first_start() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |on: bool| {
        let mut c = chorus_hub::Config {
            jwt_secret: Some(SECRET.into()),
            ..test_config(dir.path())
        };
        c.ai.ai_base_url = Some(standin.base_url());
        c.ai.ai_model = Some("standin-1".into());
        c.search.search_embedding_model = Some("standin-embed".into());
        c.search.search_enabled = on;
        c
    };
    let off = TestServer::start(config(false)).await;
    let tok = all_rooms();
    for (room, text) in CORPUS {
        drop(write(&off, room, text).await);
    }
    let (status, body) = search(&off, Some(&tok), "q=pricing").await;
    assert_eq!(status, 503, "{body}");
    off.stop().await.expect("stop");
    let on = TestServer::start(config(true)).await;
    for (room, _) in CORPUS {
        until(&on, "q=minutes&mode=text&limit=50", room, false).await;
    }
    let (_, a) = search(&on, Some(&tok), "q=seat+cost+in+euros&mode=semantic").await;
    assert_eq!(rooms(&a)[0], "team/pricing", "{a}");
    // No room was open on this hub: every one was rebuilt from the store. (The counter is
    // the process's, which the other tests of this file share: only its series is checked.)
    assert!(indexed(&on, "store").await >= CORPUS.len() as u64);
    on.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_before_indexing_loses_nothing_of_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |debounce: &str| {
        vec![
            "--data-dir".to_owned(),
            dir.path().display().to_string(),
            "--jwt-secret".to_owned(),
            SECRET.to_owned(),
            "--search-debounce".to_owned(),
            debounce.to_owned(),
        ]
    };
    // A debounce long enough that the kill comes first (the room is due 5 s after its edit,
    // whoever indexes it).
    let (mut first, addr) = common::spawn_chorus(&args("5s")).await;
    let c = Client::connect(
        &format!("ws://{addr}/ws/k%2Froom"),
        ClientOptions {
            ext: true,
            token: Some(all_rooms()),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    paragraph(&c, "The wombat survived the crash.");
    saved(&c, 1).await;
    first.kill().await.expect("kill");
    let _ = first.wait().await;
    drop(c);
    // Restarted with a short debounce: the room queued in the killed hub's last commit is
    // indexed now.
    let (mut second, addr) = common::spawn_chorus(&args("100ms")).await;
    let tok = all_rooms();
    let started = Instant::now();
    loop {
        let res = reqwest::Client::new()
            .get(format!("http://{addr}/v1/search?q=wombat&mode=text"))
            .bearer_auth(&tok)
            .send()
            .await;
        if let Ok(res) = res
            && let Ok(text) = res.text().await
            && let Ok(body) = serde_json::from_str::<Value>(&text)
            && rooms(&body) == ["k/room"]
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never indexed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill().await.expect("kill");
}

/// Two nodes sharing one Postgres (as a cluster's nodes do): edits made on one are indexed
/// there (or by either node's workers: the queue is shared) and found on the other, by words
/// from the shared full-text index and by meaning from the other node's own vector index,
/// which follows the store's change feed. Rows stay under row-level security throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_postgres_agree_on_the_index() {
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let (da, dbb) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let node = |dir: &std::path::Path| {
        let mut c = chorus_hub::Config {
            jwt_secret: Some(SECRET.into()),
            database_url: Some(db.url().to_owned()),
            ..test_config(dir)
        };
        c.ai.ai_base_url = Some(standin.base_url());
        c.ai.ai_model = Some("standin-1".into());
        c.search.search_embedding_model = Some("standin-embed".into());
        c.search.search_debounce = Duration::from_millis(200);
        c
    };
    let a = TestServer::start(node(da.path())).await;
    let b = TestServer::start(node(dbb.path())).await;
    for (room, text) in CORPUS {
        drop(write(&a, room, text).await);
    }
    for (room, _) in CORPUS {
        until(&b, "q=minutes&mode=text&limit=50", room, false).await;
    }
    let tok = all_rooms();
    let started = Instant::now();
    loop {
        let (_, found) = search(&b, Some(&tok), "q=seat+cost+in+euros&mode=semantic").await;
        if rooms(&found).first().map(String::as_str) == Some("team/pricing") {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "node b never found it by meaning: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The language of the tenant's full text is Postgres' English: stems match.
    let (_, stemmed) = search(&b, Some(&tok), "q=decide&mode=text").await;
    assert_eq!(rooms(&stemmed), ["team/pricing"], "{stemmed}");
    let team = token(json!({"rooms": ["team/*"], "role": "read"}));
    let (_, a_team) = search(&a, Some(&team), "q=pricing+bonuses&mode=hybrid&limit=50").await;
    assert!(
        rooms(&a_team).iter().all(|r| r.starts_with("team/")),
        "{a_team}"
    );
    // A room deleted through one node leaves the other's answers too.
    let res = reqwest::Client::new()
        .delete(format!("http://{}/v1/rooms/team%2Fpricing", a.addr))
        .bearer_auth(OPERATOR)
        .header("chorus-tenant", "default")
        .send()
        .await
        .expect("delete");
    // Without an operator key configured the delete is refused: then delete through the store.
    if !res.status().is_success() {
        assert!(
            a.app
                .store
                .delete_room_everything("default", "team/pricing")
                .await
                .expect("delete")
        );
    }
    for mode in ["text", "semantic"] {
        let started = Instant::now();
        loop {
            let (_, found) =
                search(&b, Some(&tok), &format!("q=pricing+euros+seat&mode={mode}")).await;
            if !rooms(&found).contains(&"team/pricing".to_owned()) {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{mode}: still found on b: {found}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

/// `chorus reindex` queues every stored room (of one tenant, or all) for running hubs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_reindex_queues_every_stored_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(dir.path())
    };
    config.search.search_enabled = false;
    let hub = TestServer::start(config.clone()).await;
    for (room, text) in CORPUS {
        drop(write(&hub, room, text).await);
    }
    hub.stop().await.expect("stop");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
            .arg("reindex")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("chorus reindex")
    };
    let other = run(&["--tenant", "other"]);
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let store = chorus_hub::open_store(&config).await.expect("store");
    assert_eq!(
        store.search_queue_depth(i64::MAX).await.expect("depth").0,
        0
    );
    drop(store);
    let all = run(&[]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let store = chorus_hub::open_store(&config).await.expect("store");
    assert_eq!(
        store.search_queue_depth(i64::MAX).await.expect("depth").0,
        CORPUS.len() as u64
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["reindex", "--database-url", "mysql://nowhere"])
        .output()
        .expect("chorus reindex");
    assert!(!bad.status.success());
}

/// Searches in progress are bounded per node and per tenant: past the bound a search is
/// refused at once (429), not queued, so a flood of queries behind a provider that never
/// answers holds a bounded part of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_searches_is_refused_past_the_bound_not_queued() {
    // A "provider" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            keep.lock().await.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(dir.path())
    };
    config.ai.ai_base_url = Some(format!("http://{silent_addr}/v1"));
    config.ai.ai_model = Some("m".into());
    config.search.search_embedding_model = Some("e".into());
    let server = TestServer::start(config).await;
    let tok = all_rooms();
    // No client timeout: on a loaded machine a refusal may take seconds to come back, and a
    // timeout would count it as held. What is held is what reached the provider.
    let http = reqwest::Client::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, tok, addr, done) = (http.clone(), tok.clone(), server.addr, done_tx.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .get(format!("http://{addr}/v1/search?q=word{i}&mode=semantic"))
                .bearer_auth(tok)
                .send()
                .await;
            let _ = done.send(res.map(|r| r.status().as_u16()).ok());
        }));
    }
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refused < 24 || held.lock().await.len() < 16 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 60 s: {refused} of 40 searches refused, {} at the provider",
            held.lock().await.len()
        );
        match tokio::time::timeout(Duration::from_millis(100), done_rx.recv()).await {
            Ok(Some(Some(429))) => refused += 1,
            Ok(Some(other)) => panic!("a search ended with {other:?} while 24 were to be refused"),
            Ok(None) => unreachable!("the test holds a sender"),
            Err(_) => {}
        }
    }
    assert_eq!(refused, 24, "the rest are refused at once");
    assert_eq!(
        held.lock().await.len(),
        16,
        "one tenant holds at most 16 searches at the provider"
    );
    // Nothing else ends meanwhile: the 16 are held, not answered or refused late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(done_rx.try_recv().is_err(), "a held search ended");
    for t in &tasks {
        t.abort();
    }
    // Another tenant still searches meanwhile: one tenant's flood leaves the others room.
    let other = token(json!({"rooms": ["*"], "tenant": "other", "role": "read"}));
    let (status, body) = search(&server, Some(&other), "q=anything&mode=text").await;
    assert_eq!(status, 200, "{body}");
}
