//! A hub that refuses the load tester's credentials: by closing the accepted socket at once
//! (4401 / 4403, what Chorus does) or with an HTTP 401 (what a proxy or an older hub does).
//! Either way the run ends quickly, no handshake waits out its timeout, and the user is told
//! to pass `--token`.

use std::time::{Duration, Instant};

use chorus_loadtest::scenario::{self, ConnectParams, EditParams, Target};

const SECRET: &str = "loadtest-auth-test-secret-0123456789";

mod common;

use common::{Hub, hub_with};

/// A hub on 127.0.0.1:0 that requires HS256 tokens signed with [`SECRET`].
async fn secured_hub() -> Hub {
    hub_with(|c| c.jwt_secret = Some(SECRET.into())).await
}

fn token(room: &str) -> String {
    let args = chorus_hub::config::TokenArgs {
        rooms: vec![room.into()],
        role: "write".into(),
        tenant: "default".into(),
        sub: "loadtest".into(),
        name: None,
        ttl: Duration::from_secs(600),
        jwt_secret: SECRET.into(),
    };
    chorus_hub::auth::mint_hs256(&args).expect("token")
}

fn target(url: &str, token: Option<String>) -> Target {
    let mut t = Target::new(url);
    t.room_prefix = "auth-".into();
    t.concurrency = 4;
    // Far longer than the test allows: a refusal must not be waited out.
    t.timeout = Duration::from_secs(30);
    t.token = token;
    t
}

fn connect(sessions: usize) -> ConnectParams {
    ConnectParams {
        sessions,
        rooms: 2,
        hold: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_reported_at_once_with_advice() {
    let hub = secured_hub().await;
    let t = target(&hub.url, None);
    let started = Instant::now();
    let report = scenario::connect(&t, &connect(6)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal was waited out (or the hold was not skipped): {:?}",
        started.elapsed()
    );
    assert!(!report.passed());
    assert_eq!(report.metrics["sessions_ok"], 0.0);
    let advice = t.refused().expect("the refusal is remembered");
    assert!(advice.contains("4401"), "{advice}");
    assert!(advice.contains("--token"), "{advice}");
    assert!(report.problems[0].contains("--token"), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_other_rooms_is_forbidden_and_the_edit_run_stops_early() {
    let hub = secured_hub().await;
    let t = target(&hub.url, Some(token("elsewhere-*")));
    let p = EditParams {
        users: 4,
        room_size: 2,
        rate: 1.0,
        duration: Duration::from_secs(30),
        doc_bytes: 0,
    };
    let started = Instant::now();
    let report = scenario::edit(&t, &p).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let advice = t.refused().expect("refused");
    assert!(advice.contains("4403"), "{advice}");
    assert!(advice.contains("does not grant"), "{advice}");
    assert!(!report.metrics.contains_key("edits_sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_passes() {
    let hub = secured_hub().await;
    let t = target(&hub.url, Some(token("auth-*")));
    let mut p = connect(4);
    p.hold = Duration::ZERO;
    let report = scenario::connect(&t, &p).await;
    assert!(report.passed(), "{}", report.table());
    assert!(t.refused().is_none());
}

/// A server that answers every request with `401 Unauthorized` and a JSON error body.
async fn http_401_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"error":{"code":"unauthenticated","message":"missing token"}}"#;
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(resp.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_401_makes_the_command_fail_with_advice_on_stderr_only() {
    let addr = http_401_server().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus-loadtest"))
        .args(["connect", "--url", &format!("ws://{addr}/ws")])
        .args(["--sessions", "5", "--hold", "30s"])
        .env_remove("CHORUS_LOADTEST_TOKEN")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the run ends quickly")
        .expect("run the load tester");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HTTP 401 Unauthorized: missing token"),
        "{stderr}"
    );
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(stderr.contains("CHORUS_LOADTEST_TOKEN"), "{stderr}");
    // No table, and no progress bar residue: stderr is not a terminal here.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_to_stdout_is_only_json() {
    let addr = http_401_server().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus-loadtest"))
        .args(["connect", "--url", &format!("ws://{addr}/ws")])
        .args(["--sessions", "2", "--hold", "0s", "--json", "-"])
        .env_remove("CHORUS_LOADTEST_TOKEN")
        .output()
        .await
        .expect("run the load tester");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert!(
        report["refused"]
            .as_str()
            .is_some_and(|r| r.contains("--token"))
    );
    assert_eq!(report["metrics"]["sessions_failed"], 2);
    assert_eq!(report["params"]["scenario"]["hold_s"], 0.0);
}
