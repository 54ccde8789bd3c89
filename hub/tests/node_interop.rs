//! Interop with the real npm clients: `yjs` + `y-websocket` (`interop/interop.test.mjs`),
//! `@hocuspocus/provider` (`interop/hocuspocus.test.mjs`) and the AI assistant checked against
//! Tiptap StarterKit's schema (`interop/ai.test.mjs`), run with node's test runner against
//! a hub started here. Needs Node.js and npm; without them the tests skip loudly, except under
//! CI (`CI` set), where they fail.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

/// The interop folder with its npm packages installed, or `None` (skip) without node.
async fn interop_dir() -> Option<PathBuf> {
    if !have("node") || !have("npm") {
        chorus_persistence::testing::skip("node or npm is not installed");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    npm_ci(
        &dir,
        &["y-websocket", "@hocuspocus/provider", "@tiptap/starter-kit"],
        &["--omit=dev", "--no-audit", "--no-fund"],
    )
    .await;
    Some(dir)
}

async fn node_test(dir: &PathBuf, file: &str, envs: &[(&str, String)]) {
    let out = tokio::process::Command::new("node")
        .args(["--test", file])
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node tests in {file} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_y_websocket_providers_work_unchanged() {
    let Some(dir) = interop_dir().await else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    node_test(
        &dir,
        "interop.test.mjs",
        &[("CHORUS_WS_URL", format!("ws://{}/ws", server.addr))],
    )
    .await;
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_hocuspocus_providers_work_unchanged() {
    let Some(dir) = interop_dir().await else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.jwt_secret = Some(SECRET.into());
    config.allow_anonymous = Some(false);
    let server = TestServer::start(config).await;
    node_test(
        &dir,
        "hocuspocus.test.mjs",
        &[
            ("CHORUS_HP_URL", format!("ws://{}/hocuspocus", server.addr)),
            ("CHORUS_WS_URL", format!("ws://{}/ws", server.addr)),
            ("CHORUS_TOKEN_WRITE", token(json!({}))),
            ("CHORUS_TOKEN_READ", token(json!({ "role": "read" }))),
            (
                "CHORUS_TOKEN_NARROW",
                token(json!({ "rooms": ["narrow-*"] })),
            ),
        ],
    )
    .await;
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_answers_are_valid_starterkit_documents_for_stock_clients() {
    let Some(dir) = interop_dir().await else {
        return;
    };
    let standin = chorus_ai_bridge::standin::StandIn::start(Default::default())
        .await
        .expect("standin");
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.ai.ai_base_url = Some(standin.base_url());
    config.ai.ai_model = Some("standin".into());
    let server = TestServer::start(config).await;
    node_test(
        &dir,
        "ai.test.mjs",
        &[
            ("CHORUS_WS_URL", format!("ws://{}/ws", server.addr)),
            ("CHORUS_HTTP_URL", format!("http://{}", server.addr)),
            (
                "CHORUS_STANDIN_URL",
                standin.base_url().trim_end_matches("/v1").to_owned(),
            ),
        ],
    )
    .await;
    server.stop().await.expect("stop");
}
