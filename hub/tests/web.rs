//! The web client the hub serves: the page at `/` (a WebSocket upgrade there stays the
//! Hocuspocus endpoint), its assets under `/assets/`, exactly the files `web-client/dist`
//! holds (which CI rebuilds from the sources and compares).

mod common;

use std::io::Read;
use std::path::PathBuf;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-client/dist")
}

/// A GET with `extra` header lines; returns the status, the lowercased header block and the
/// raw body.
async fn get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    get_as(addr, "127.0.0.1", path, extra).await
}

/// [`get`] with `host` in the `Host` header.
async fn get_as(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    extra: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "bodies here have a length"
    );
    (status, head, buf[split + 4..].to_vec())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_as_built_and_the_root_still_upgrades() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let index = std::fs::read(dist().join("index.html")).expect("web-client/dist/index.html");

    let (status, head, body) = get(server.addr, "/", "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, index, "the page is the built one");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    // Any query (the room) gets the same page.
    let (status, _, body) = get(server.addr, "/?room=team%20notes", "").await;
    assert_eq!((status, body == index), (200, true));

    // Every asset the page names, byte for byte, plain and gzipped.
    let page = String::from_utf8(index).expect("utf-8");
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{page}"
    );
    for asset in assets {
        let file = std::fs::read(dist().join(asset.trim_start_matches('/'))).expect("asset");
        let (status, head, body) = get(server.addr, asset, "").await;
        assert_eq!(status, 200, "{asset}: {head}");
        assert_eq!(body, file, "{asset}");
        assert!(head.contains("immutable"), "{head}");
        let (status, head, body) = get(server.addr, asset, "Accept-Encoding: gzip, br\r\n").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-encoding: gzip"), "{asset}: {head}");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, file, "{asset} gzipped");
    }

    // Nothing else is looked up.
    for bad in [
        "/assets/missing.js",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/../index.html",
        "/assets/.hidden",
        "/index.html.map",
    ] {
        let (status, head, _) = get(server.addr, bad, "").await;
        assert_eq!(status, 404, "{bad}: {head}");
    }

    // The root still speaks Hocuspocus to a WebSocket.
    let (ws, res) = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
        .await
        .expect("upgrade at /");
    assert_eq!(res.status(), 101);
    drop(ws);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_local_page_gets_a_development_token_for_its_room_and_nobody_else_does() {
    use chorus_protocol::client::{Client, ClientOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let addr = server.addr;
    let ask = |room: &str, extra: &str| {
        let (room, extra) = (room.to_owned(), extra.to_owned());
        async move {
            let (status, _, body) = get(addr, &format!("/v1/dev-token?room={room}"), &extra).await;
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            (status, v)
        }
    };
    // The page of a local hub.
    let (status, v) = ask("notes", "Origin: http://127.0.0.1:8080\r\n").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["room"].as_str(), v["role"].as_str()),
        (Some("notes"), Some("write"))
    );
    let token = v["token"].as_str().expect("token").to_owned();
    // It opens its room, with the write role...
    let c = Client::connect(
        &format!("ws://{addr}/ws/notes?token={token}"),
        ClientOptions::default(),
    )
    .await
    .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    append(&c, "t", "hello");
    let d = server.client("notes").await;
    wait_text(&[&d], "t", "hello").await;
    // ...and no other room.
    let other = Client::connect(
        &format!("ws://{addr}/ws/elsewhere?token={token}"),
        ClientOptions::default(),
    )
    .await
    .expect("connect");
    let (code, _) = other.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 4403);
    // Not for a page elsewhere, nor for a name rebound to loopback (its own Host).
    let (status, v) = ask("notes", "Origin: https://evil.example\r\n").await;
    assert_eq!(status, 403, "{v}");
    let (status, _, _) = get_as(addr, "evil.example", "/v1/dev-token?room=notes", "").await;
    assert_eq!(status, 403);
    // Room names are checked, and a pattern is no room.
    for room in ["a*", "*", ""] {
        let (status, v) = ask(room, "").await;
        assert_eq!(status, 400, "{room:?}: {v}");
    }
    server.stop().await.expect("stop");

    // A node without anonymous access hands out none.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(dir.path())
    })
    .await;
    let (status, _, body) = get(server.addr, "/v1/dev-token?room=notes", "").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    server.stop().await.expect("stop");
}
