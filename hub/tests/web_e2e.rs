//! The web client end to end (`web-client/e2e/`): the page this hub serves, in Debian's
//! Chromium driven by playwright-core, two browser contexts in one room, with the stand-in
//! model server behind the assistant. Needs Node.js, npm and Chromium (`scripts/web-client-check`
//! installs the `chromium` package); without them the test skips loudly, except under CI
//! (`CI` set), where it fails.

mod common;

use std::path::PathBuf;

use chorus_ai_bridge::standin::{Behavior, StandIn};
use common::*;
use serde_json::json;

/// Chromium: `CHROMIUM`, or Debian's.
fn chromium() -> Option<String> {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::path::Path::new(&path).exists().then_some(path)
}

/// `web-client/` with its npm packages (playwright-core included) installed.
async fn web_client() -> Option<PathBuf> {
    if !have("node") || !have("npm") {
        chorus_persistence::testing::skip("node or npm is not installed");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-client");
    npm_ci(
        &dir,
        &[
            "playwright-core",
            "axe-core",
            "ws",
            "y-websocket",
            "@chorus/client",
            "lighthouse",
        ],
        &["--no-audit", "--no-fund"],
    )
    .await;
    Some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_works_in_chromium_for_two_people() {
    let Some(dir) = web_client().await else {
        return;
    };
    let Some(browser) = chromium() else {
        chorus_persistence::testing::skip(
            "Chromium is not installed (apt-get install chromium; scripts/web-client-check does)",
        );
        return;
    };
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(data.path())
    };
    config.ai.ai_base_url = Some(standin.base_url());
    config.ai.ai_model = Some("standin".into());
    let server = TestServer::start(config).await;
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("two-tabs.png");
    // Page-load figures (measured, never asserted): the e2e run prints Lighthouse's table
    // and writes its summary here.
    let lighthouse = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lighthouse.json");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "e2e/"])
        .current_dir(&dir)
        .env("CHORUS_URL", format!("http://{}", server.addr))
        .env("STANDIN_URL", standin.base_url().trim_end_matches("/v1"))
        .env("WRITE_TOKEN", token(json!({"role": "write"})))
        .env(
            "READ_TOKEN",
            token(json!({"role": "read", "sub": "reader"})),
        )
        .env("CHROMIUM", browser)
        .env("SCREENSHOT", &screenshot)
        .env("LIGHTHOUSE_OUT", &lighthouse)
        .output()
        .await
        .expect("node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "the e2e tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `cargo test -- --nocapture` shows the measurements with the test.
    for line in stdout
        .lines()
        .filter(|l| l.contains("lighthouse") || l.contains("LCP"))
    {
        println!("{line}");
    }
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    server.stop().await.expect("stop");
}
