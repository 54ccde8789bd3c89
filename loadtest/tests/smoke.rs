//! Short runs of every scenario against a real hub on 127.0.0.1:0. They check correctness (no
//! lost deliveries, convergence, no failed connections), never timings.

use std::time::Duration;

use chorus_loadtest::scenario::{self, ConnectParams, EditParams, Target};

mod common;

use common::{Hub, hub_with};

async fn hub() -> Hub {
    hub_with(|_| {}).await
}

async fn hub_recording(record_dir: Option<std::path::PathBuf>) -> Hub {
    hub_with(|c| c.record_dir = record_dir).await
}

fn target(url: &str) -> Target {
    let mut t = Target::new(url);
    t.room_prefix = "smoke-".into();
    t.concurrency = 16;
    t.timeout = Duration::from_secs(20);
    t.server_pid = Some(std::process::id());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_scenario_opens_every_session() {
    let hub = hub().await;
    let p = ConnectParams {
        sessions: 40,
        rooms: 5,
        hold: Duration::from_millis(100),
    };
    let report = scenario::connect(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["sessions_ok"], 40.0);
    assert_eq!(report.latency["handshake_to_synced"].count, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_scenario_delivers_everything_and_converges() {
    let hub = hub().await;
    let p = EditParams {
        users: 12,
        room_size: 4,
        rate: 10.0,
        duration: Duration::from_secs(1),
        doc_bytes: 0,
    };
    let report = scenario::edit(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    let sent = report.metrics["edits_sent"];
    assert!(sent > 0.0);
    // Rooms of 4: every edit reaches the 3 other members.
    assert_eq!(report.metrics["deliveries_expected"], sent * 3.0);
    assert_eq!(report.metrics["deliveries_received"], sent * 3.0);
    assert_eq!(report.metrics["rooms_diverged"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_scenario_in_the_hocuspocus_dialect_from_several_source_addresses() {
    let hub = hub().await;
    let mut t = target(&hub.url.replace("/ws", "/hocuspocus"));
    t.dialect = scenario::Dialect::Hocuspocus;
    t.sources = vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
    let p = EditParams {
        users: 12,
        room_size: 4,
        rate: 10.0,
        duration: Duration::from_secs(1),
        doc_bytes: 200_000,
    };
    let report = scenario::edit(&t, &p).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["doc_bytes"], 200_000.0);
    let sent = report.metrics["edits_sent"];
    assert!(sent > 0.0);
    assert_eq!(report.metrics["deliveries_received"], sent * 3.0);
    assert_eq!(report.metrics["rooms_diverged"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_split_the_rooms_and_merge_their_reports() {
    let hub = hub().await;
    let out = tempfile::tempdir().expect("tempdir");
    let json = out.path().join("edit.json");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus-loadtest"))
        .args([
            "edit",
            "--url",
            &hub.url,
            "--users",
            "30",
            "--room-size",
            "5",
        ])
        .args([
            "--rate",
            "5",
            "--duration",
            "1s",
            "--workers",
            "3",
            "--json",
        ])
        .arg(&json)
        .status()
        .await
        .expect("run the load tester");
    assert!(status.success(), "exit status {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    let m = &report["metrics"];
    let sent = m["edits_sent"].as_f64().expect("edits_sent");
    // Six rooms of five over three workers: every edit still reaches the four others.
    assert!(sent > 0.0);
    assert_eq!(m["deliveries_received"].as_f64(), Some(sent * 4.0));
    assert_eq!(
        report["latency"]["delivery"]["count"].as_f64(),
        Some(sent * 4.0)
    );
    assert_eq!(report["params"]["target"]["workers"], 3);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[tokio::test]
async fn a_dead_target_is_reported_not_hung() {
    // Nothing listens on this port (bound then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = ConnectParams {
        sessions: 3,
        rooms: 1,
        hold: Duration::ZERO,
    };
    let report = scenario::connect(&target(&format!("ws://127.0.0.1:{port}/ws")), &p).await;
    assert!(!report.passed());
    assert_eq!(report.metrics["sessions_failed"], 3.0);
}

/// A small deterministic pseudo-random number source for the generated traces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below.max(1)
    }

    fn word(&mut self) -> String {
        (0..1 + self.next(3))
            .map(|_| char::from(b'a' + self.next(26) as u8))
            .collect()
    }
}

/// An edit against `text`: an insert, or (when there is text) sometimes a deletion; applied to
/// `text` and returned as a trace patch `[position, deleted, inserted]`.
fn edit(rng: &mut Lcg, text: &mut String) -> serde_json::Value {
    let pos = rng.next(text.len() + 1);
    if text.len() > 10 && rng.next(5) == 0 {
        let del = (1 + rng.next(3)).min(text.len() - pos.min(text.len() - 1));
        let pos = pos.min(text.len() - del);
        text.replace_range(pos..pos + del, "");
        serde_json::json!([pos, del, ""])
    } else {
        let ins = rng.word();
        text.insert_str(pos, &ins);
        serde_json::json!([pos, 0, ins])
    }
}

/// Writes an editing trace in the format of josephg/editing-traces (the real ones are only
/// used by benchmarks): a sequential one of one typist, or a concurrent one of two agents
/// whose histories fork and merge again every third transaction. `endContent` is computed
/// here, independently of yrs.
fn generated_trace(dir: &std::path::Path, concurrent: bool) -> std::path::PathBuf {
    let mut rng = Lcg(42);
    let mut text = String::new();
    let json = if concurrent {
        let mut txns = Vec::new();
        let mut last: Option<usize> = None;
        for round in 0..500 {
            let parents: Vec<usize> = last.into_iter().collect();
            // Both agents edit the same version at once: agent 0 at the start, agent 1 at
            // the end, so the merge is the same in any CRDT.
            let (a, b) = (rng.word(), rng.word());
            txns.push(
                serde_json::json!({ "parents": parents, "agent": 0, "patches": [[0, 0, a]] }),
            );
            txns.push(serde_json::json!({ "parents": parents, "agent": 1, "patches": [[text.len(), 0, b]] }));
            text = format!("{a}{text}{b}");
            let merged = vec![txns.len() - 2, txns.len() - 1];
            let patch = edit(&mut rng, &mut text);
            txns.push(
                serde_json::json!({ "parents": merged, "agent": round % 2, "patches": [patch] }),
            );
            last = Some(txns.len() - 1);
        }
        serde_json::json!({ "kind": "concurrent", "numAgents": 2, "endContent": text, "txns": txns })
    } else {
        let txns: Vec<serde_json::Value> = (0..3_000)
            .map(|_| serde_json::json!({ "patches": [edit(&mut rng, &mut text)] }))
            .collect();
        serde_json::json!({ "startContent": "", "endContent": text, "txns": txns })
    };
    let path = dir.join(if concurrent {
        "concurrent.json"
    } else {
        "sequential.json"
    });
    std::fs::write(&path, json.to_string()).expect("write trace");
    path
}

/// Replays `file` through one room with two observers of a fresh hub.
async fn replay_trace(file: std::path::PathBuf) -> chorus_loadtest::report::Report {
    use chorus_loadtest::trace::{TraceParams, trace};
    let hub = hub().await;
    let p = TraceParams {
        file,
        rooms: 1,
        observers: 2,
        batch: 2000,
    };
    trace(&target(&hub.url), &p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_trace_replay_merges_to_the_traces_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = generated_trace(dir.path(), true);
    let report = replay_trace(file).await;
    // The replay itself checks every replica (agents and observers) against endContent.
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["agents"], 2.0);
    assert_eq!(report.metrics["transactions"], 1_500.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_replay_ends_with_the_traces_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = generated_trace(dir.path(), false);
    // The reference: applying the patches to a plain string gives endContent.
    let t = chorus_loadtest::trace::Trace::load(&file).expect("load trace");
    assert_eq!(
        t.replay_locally(),
        t.end,
        "trace file and its replay disagree"
    );
    let report = replay_trace(file).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["transactions"], t.txns.len() as f64);
}

#[tokio::test]
async fn a_missing_trace_file_is_a_clear_failure() {
    use chorus_loadtest::trace::{TraceParams, trace};
    let p = TraceParams {
        file: "/nonexistent/trace.json.gz".into(),
        rooms: 1,
        observers: 1,
        batch: 10,
    };
    let report = trace(&target("ws://127.0.0.1:9/ws"), &p).await;
    assert!(!report.passed());
    assert!(report.problems[0].contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_scenario_delivers_every_awareness_update() {
    use chorus_loadtest::rooms::{PresenceParams, presence};
    let hub = hub().await;
    let p = PresenceParams {
        viewers: 8,
        rate: 5.0,
        duration: Duration::from_secs(1),
    };
    let report = presence(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    let sent = report.metrics["updates_sent"];
    assert!(sent > 0.0);
    assert_eq!(report.metrics["deliveries_received"], sent * 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_gives_every_joiner_the_whole_document() {
    use chorus_loadtest::rooms::join_storm;
    let hub = hub().await;
    let report = join_storm(&quiet_target(&hub.url), &small_storm()).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["joined"], 20.0);
    assert_eq!(report.latency["join_to_full_state"].count, 20);
}

fn small_storm() -> chorus_loadtest::rooms::JoinStormParams {
    chorus_loadtest::rooms::JoinStormParams {
        doc_bytes: 200_000,
        joiners: 20,
    }
}

/// Without a server pid the storm waits a fixed pause for the server to settle: this test
/// process, hub included, is never quiet while other tests run.
fn quiet_target(url: &str) -> Target {
    let mut t = target(url);
    t.server_pid = None;
    t
}

/// The comparison's floor hands joiners the updates it relayed, merged into one, in
/// fragments written straight to the socket: every joiner must get the whole document (the
/// storm's probe decodes it, the joiners count its bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_relay_serves_a_join_storm() {
    use chorus_loadtest::rooms::join_storm;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let _relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus-bare-relay"))
        .arg(addr.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("start the relay");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = join_storm(&quiet_target(&format!("ws://{addr}/ws")), &small_storm()).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["joined"], 20.0);
    assert!(report.metrics["full_state_bytes"] >= 200_000.0);
}

/// Each client in turn appends `[i]` to the text "t"; returns the text once every one of them
/// holds all of it.
async fn append_in_turns(turns: &[&chorus_protocol::client::Client]) -> String {
    use yrs::{GetString, Text, Transact};
    for (i, c) in turns.iter().enumerate() {
        let t = c.doc().get_or_insert_text("t");
        let mut txn = c.doc().transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, &format!("[{i}]"));
    }
    let want = turns
        .iter()
        .enumerate()
        .map(|(i, _)| format!("[{i}]").len())
        .sum::<usize>();
    for c in turns {
        c.wait_for("every edit", Duration::from_secs(10), |_, doc| {
            doc.get_or_insert_text("t")
                .get_string(&doc.transact())
                .len()
                == want
        })
        .await
        .expect("converged");
    }
    let doc = turns[0].doc();
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

/// Replays the recordings in `dir` as 2 copies into a fresh hub, then checks that each copy's
/// room `smoke-c<copy>-notes`, read over y-websocket, holds `original` in its text "t".
/// Given the y-websocket URL, replay finds the Hocuspocus endpoint beside it.
async fn replayed_copies_hold(dir: &std::path::Path, original: &str) {
    use chorus_loadtest::replay::{ReplayParams, replay};
    use chorus_protocol::client::{Client, ClientOptions};
    use yrs::{GetString, Transact};

    let hub = hub().await;
    let p = ReplayParams {
        dir: dir.to_path_buf(),
        copies: 2,
        speed: 5.0,
    };
    let report = replay(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["sessions"], 4.0);
    for copy in 0..2 {
        let c = Client::connect(
            &format!("{}/smoke-c{copy}-notes", hub.url),
            ClientOptions::default(),
        )
        .await
        .expect("connect");
        c.synced(Duration::from_secs(10)).await.expect("synced");
        let got = c
            .doc()
            .get_or_insert_text("t")
            .get_string(&c.doc().transact());
        assert_eq!(got, original, "copy {copy} differs from the recorded room");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sessions_replay_to_the_same_document() {
    use chorus_protocol::client::{Client, ClientOptions};

    let rec_dir = tempfile::tempdir().expect("tempdir");
    let original = {
        let hub = hub_recording(Some(rec_dir.path().to_path_buf())).await;
        let a = Client::connect(&format!("{}/notes", hub.url), ClientOptions::default())
            .await
            .expect("connect");
        a.synced(Duration::from_secs(10)).await.expect("synced");
        let b = Client::connect(&format!("{}/notes", hub.url), ClientOptions::default())
            .await
            .expect("connect");
        b.synced(Duration::from_secs(10)).await.expect("synced");
        let text = append_in_turns(&[&a, &b, &a, &b]).await;
        a.close().await;
        b.close().await;
        text
    };
    let files = std::fs::read_dir(rec_dir.path()).expect("dir").count();
    assert_eq!(files, 2, "one recording per session");

    replayed_copies_hold(rec_dir.path(), &original).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_hocuspocus_sessions_replay_to_the_same_documents() {
    use chorus_protocol::client::{Client, ClientOptions};

    let hp = |url: &str, doc: &str| {
        let url = url.replace("/ws", "/hocuspocus");
        let doc = doc.to_string();
        async move {
            let opts = ClientOptions {
                hocuspocus: Some(doc),
                ..ClientOptions::default()
            };
            let c = Client::connect(&url, opts).await.expect("connect");
            c.synced(Duration::from_secs(10)).await.expect("synced");
            c
        }
    };
    let rec_dir = tempfile::tempdir().expect("tempdir");
    let original = {
        let hub = hub_recording(Some(rec_dir.path().to_path_buf())).await;
        let (a, b) = (hp(&hub.url, "notes").await, hp(&hub.url, "notes").await);
        let text = append_in_turns(&[&a, &b, &a]).await;
        a.close().await;
        b.close().await;
        text
    };
    let files = std::fs::read_dir(rec_dir.path()).expect("dir").count();
    assert_eq!(files, 2, "one recording per socket");

    replayed_copies_hold(rec_dir.path(), &original).await;
}

#[test]
fn hocuspocus_frames_are_renamed_per_copy_with_the_replay_token() {
    use chorus_loadtest::replay::rename_hocuspocus;
    use chorus_protocol::hocuspocus::{self, DocMessage, Incoming};

    let old = hocuspocus::address_prefix("a b\0session-1");
    let auth = hocuspocus::auth(&old, "", "4.8.0");
    let renamed = rename_hocuspocus(&auth, "lt-", 3, Some("tok"));
    assert_eq!(
        Incoming::decode(renamed).expect("decodes"),
        Incoming::Doc {
            address: "lt-c3-a_b\0session-1".into(),
            body: DocMessage::Auth {
                token: "tok".into(),
                provider_version: Some("4.8.0".into()),
            },
        }
    );
    let sync = hocuspocus::wrap(&old, &[0, 0, 1, 0]);
    let renamed = rename_hocuspocus(&sync, "lt-", 0, None);
    let Incoming::Doc { address, body } = Incoming::decode(renamed).expect("decodes") else {
        panic!("a document message");
    };
    assert_eq!(address, "lt-c0-a_b\0session-1");
    assert_eq!(
        body,
        DocMessage::YSync(bytes::Bytes::from_static(&[0, 0, 1, 0]))
    );
    // Connection-level frames go as recorded.
    let pong = bytes::Bytes::from_static(hocuspocus::PONG_FRAME);
    assert_eq!(rename_hocuspocus(&pong, "lt-", 0, None), pong);
}

/// With several URLs (the nodes of a cluster) the members of each room are spread over them,
/// client `i` on node `i % 2`: in rooms of 4, two of each sender's three peers are on the other
/// node, and the report times those deliveries (through Redis) apart from the others. Skips
/// without Redis, unless `CI` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_scenario_spreads_rooms_over_the_nodes_of_a_cluster() {
    let redis_url =
        std::env::var("CHORUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = redis_url
        .strip_prefix("redis://")
        .and_then(|a| std::net::TcpStream::connect(a.trim_end_matches('/')).ok())
        .is_some();
    if !reachable {
        chorus_persistence::testing::skip(&format!("Redis at {redis_url} is unreachable"));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("lt-smoke-{}", std::process::id());
    let mut urls = Vec::new();
    let mut stops = Vec::new();
    for id in ["node-a", "node-b"] {
        let config = chorus_hub::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().join(id),
            redis_url: Some(redis_url.clone()),
            redis_prefix: prefix.clone(),
            node_id: Some(id.into()),
            node_ttl: Duration::from_millis(900),
            ..chorus_hub::Config::default()
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        urls.push(format!("ws://{}/ws", listener.local_addr().expect("addr")));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(chorus_hub::run(listener, config, async move {
            let _ = rx.await;
        }));
        stops.push(stop);
    }
    let mut t = target(&urls.join(","));
    t.server_pid = None;
    let p = EditParams {
        users: 8,
        room_size: 4,
        rate: 10.0,
        duration: Duration::from_secs(1),
        doc_bytes: 0,
    };
    let report = scenario::edit(&t, &p).await;
    assert!(report.passed(), "{}", report.table());
    let sent = report.metrics["edits_sent"];
    assert!(sent > 0.0);
    assert_eq!(report.metrics["deliveries_received"], sent * 3.0);
    assert_eq!(report.metrics["rooms_diverged"], 0.0);
    let count = |name: &str| report.latency[name].count;
    assert_eq!(
        count("delivery_cross_node"),
        2 * count("delivery_same_node")
    );
    assert_eq!(
        count("delivery_cross_node") + count("delivery_same_node"),
        count("delivery")
    );
    for s in stops {
        let _ = s.send(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_scenario_runs_every_phase_and_the_probe_keeps_getting_through() {
    let hub = hub().await;
    let p = chorus_loadtest::attack::AttackParams {
        phase: Duration::from_millis(600),
        attackers: 2,
        doc_bytes: 80_000,
    };
    let report = chorus_loadtest::attack::attack(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    for phase in chorus_loadtest::attack::PHASES {
        assert!(
            report.latency[&format!("probe_{phase}")].count > 0,
            "{phase}: {}",
            report.table()
        );
    }
    for phase in [
        "deep_value",
        "deep_maps",
        "state_flood",
        "awareness_flood",
        "slowloris",
    ] {
        assert!(
            report.metrics[&format!("{phase}_attack_messages")] > 0.0,
            "{phase} sent nothing: {}",
            report.table()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_scenario_delivers_every_token_to_every_member() {
    // A free port for the stand-in, which the hub must know before it starts.
    let standin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let base = format!("http://{standin}/v1");
    let hub = hub_with(|c| {
        c.ai.ai_base_url = Some(base);
        c.ai.ai_model = Some("standin".into());
    })
    .await;
    let p = chorus_loadtest::ai::AiParams {
        runs: 3,
        members: 3,
        tokens_per_second: 100.0,
        tokens: 20,
        edit_rate: 5.0,
        phase: Duration::from_millis(500),
        standin_listen: standin,
        writer: chorus_loadtest::ai::Writer::Hub,
    };
    let report = chorus_loadtest::ai::ai(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    // 3 runs x 3 members x 20 tokens, each token timed at each member.
    assert_eq!(report.metrics["token_deliveries"], 180.0);
    assert_eq!(report.latency["token_to_member"].count, 180);
    assert!(report.latency["edit_with_ai"].count > 0);
    assert!(report.latency["edit_without_ai"].count > 0);
    // The same traffic written by clients instead of the hub's assistant (for servers
    // without one): every token reaches every member too.
    let mut t = target(&hub.url);
    t.room_prefix = "simulated-".into();
    let p = chorus_loadtest::ai::AiParams {
        writer: chorus_loadtest::ai::Writer::Clients,
        standin_listen: {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        },
        ..p
    };
    let report = chorus_loadtest::ai::ai(&t, &p).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["token_deliveries"], 180.0);
    assert!(report.latency["edit_with_ai"].count > 0);
}
