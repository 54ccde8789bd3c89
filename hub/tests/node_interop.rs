//! Interop with the real `yjs` + `y-websocket` npm packages: runs `interop/interop.test.mjs`
//! (node's test runner) against a hub started here. Needs Node.js and npm; without them the
//! test skips loudly, except under CI (`CI` set), where it fails.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_y_websocket_providers_work_unchanged() {
    if !have("node") || !have("npm") {
        if std::env::var_os("CI").is_some() {
            panic!("node and npm are required for the interop test under CI");
        }
        eprintln!("SKIPPED: node/npm not found; the y-websocket interop test did not run");
        return;
    }
    let dir_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    if !dir_path.join("node_modules/y-websocket").exists() {
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
            .current_dir(&dir_path)
            .output()
            .await
            .expect("npm ci");
        assert!(
            out.status.success(),
            "npm ci failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let out = tokio::process::Command::new("node")
        .args(["--test", "interop.test.mjs"])
        .current_dir(&dir_path)
        .env("CHORUS_WS_URL", format!("ws://{}/ws", server.addr))
        .output()
        .await
        .expect("node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node interop tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{stdout}"
    );
    server.stop().await.expect("stop");
}
