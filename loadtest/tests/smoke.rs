//! Short runs of every scenario against a real hub on 127.0.0.1:0. They check correctness (no
//! lost deliveries, convergence, no failed connections), never timings.

use std::time::Duration;

use chorus_loadtest::scenario::{self, ConnectParams, EditParams, Target};

struct Hub {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn hub() -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = chorus_hub::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..chorus_hub::Config::default()
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(chorus_hub::run(listener, config, async move {
        let _ = rx.await;
    }));
    Hub {
        url: format!("ws://{addr}/ws"),
        stop: Some(stop),
        _dir: dir,
    }
}

fn target(url: &str) -> Target {
    Target {
        url: url.to_string(),
        token: None,
        room_prefix: "smoke-".into(),
        concurrency: 16,
        timeout: Duration::from_secs(20),
        server_pid: Some(std::process::id()),
    }
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

/// The real traces live in the shared folder beside the checkout (CI gets a copy too).
fn shared_trace(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces/sequential")
        .join(name);
    p.exists().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_replay_ends_with_the_traces_text() {
    use chorus_loadtest::trace::{Trace, TraceParams, trace};
    let Some(file) = shared_trace("sveltecomponent.json.gz") else {
        if std::env::var_os("CI").is_some() {
            panic!("../shared/traces is missing under CI");
        }
        eprintln!("SKIPPED: ../shared/traces not found; the trace smoke test did not run");
        return;
    };
    // The reference: applying the patches to a plain string gives endContent.
    let t = Trace::load(&file).expect("load trace");
    assert_eq!(
        t.replay_locally(),
        t.end,
        "trace file and its replay disagree"
    );
    let hub = hub().await;
    let p = TraceParams {
        file,
        rooms: 1,
        observers: 2,
        batch: 2000,
    };
    let report = trace(&target(&hub.url), &p).await;
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
    use chorus_loadtest::rooms::{JoinStormParams, join_storm};
    let hub = hub().await;
    let p = JoinStormParams {
        doc_bytes: 200_000,
        joiners: 20,
    };
    let report = join_storm(&target(&hub.url), &p).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.metrics["joined"], 20.0);
    assert_eq!(report.latency["join_to_full_state"].count, 20);
}
