//! Authentication and authorisation before and after the upgrade.

mod common;

use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::ext::ServerMessage;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

fn secured(dir: &std::path::Path) -> chorus_hub::Config {
    let mut c = test_config(dir);
    c.jwt_secret = Some(SECRET.into());
    c
}

/// Connects and expects a refusal a retry cannot fix: the upgrade is accepted and the socket
/// closed at once (4401 or 4403, so stock providers stop retrying). Returns code and reason.
async fn refused(url: &str, opts: ClientOptions) -> (u16, String) {
    match Client::connect(url, opts).await {
        Ok(c) => c.wait_closed(PATIENCE).await.expect("closed at once"),
        Err(e) => panic!("expected an accepted socket closed with a reason, got {e}"),
    }
}

fn with_token(t: String) -> ClientOptions {
    ClientOptions {
        token: Some(t),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_bad_token_is_refused_with_a_close_code_that_stops_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(secured(dir.path())).await;
    let url = server.url("doc-1");

    assert_eq!(
        refused(&url, ClientOptions::default()).await,
        (4401, "missing token".into())
    );
    assert_eq!(
        refused(&url, with_token("not.a.jwt".into())).await,
        (4401, "malformed token".into())
    );
    let expired = token(json!({ "exp": now() - 3600 }));
    assert_eq!(
        refused(&url, with_token(expired)).await,
        (4401, "token expired".into())
    );

    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"wrong"),
        json!({}),
    );
    assert_eq!(
        refused(&url, with_token(forged)).await,
        (4401, "invalid token signature".into())
    );

    let no_exp = token(json!({ "exp": null }));
    assert_eq!(refused(&url, with_token(no_exp)).await.0, 4401);

    // An algorithm the server has no key for (EdDSA without --jwt-public-key).
    let ed = EncodingKey::from_ed_pem(include_bytes!("keys/ed25519.pem")).expect("key");
    let (code, _) = refused(&url, with_token(sign(Algorithm::EdDSA, &ed, json!({})))).await;
    assert_eq!(code, 4401);

    let other_room = token(json!({ "rooms": ["doc-2", "other/*"] }));
    assert_eq!(
        refused(&url, with_token(other_room)).await,
        (4403, "token does not grant this room".into())
    );

    let no_rooms = token(json!({ "rooms": null }));
    assert_eq!(refused(&url, with_token(no_rooms)).await.0, 4403);

    // A plain request (not an upgrade) gets the HTTP error and its JSON body.
    let raw = "GET /ws/doc-1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (s, body) = http_request(server.addr, raw).await;
    assert_eq!(s, 401);
    let body: Value = serde_json::from_str(&body).expect("json error body");
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["message"].as_str()
        ),
        (Some("unauthenticated"), Some("missing token"))
    );

    // A bearer header that is not a bearer token.
    let raw = "GET /ws/doc-1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic abc\r\n\r\n";
    let (s, body) = http_request(server.addr, raw).await;
    assert_eq!(s, 401);
    assert!(body.contains("bearer"), "{body}");
}

#[tokio::test]
async fn valid_tokens_open_matching_rooms_by_query_or_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(secured(dir.path())).await;
    let t = token(json!({ "rooms": ["team/*"] }));
    let a = server
        .client_with("team/notes", with_token(t.clone()))
        .await;
    let b = server
        .client_with(
            "team/notes",
            ClientOptions {
                bearer: Some(t),
                ..Default::default()
            },
        )
        .await;
    append(&a, "t", "hello");
    wait_text(&[&b], "t", "hello").await;
}

#[tokio::test]
async fn tenants_with_the_same_room_name_are_separate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(secured(dir.path())).await;
    let a = server
        .client_with("plan", with_token(token(json!({ "tenant": "acme" }))))
        .await;
    append(&a, "t", "acme secret");
    let b = server
        .client_with("plan", with_token(token(json!({ "tenant": "globex" }))))
        .await;
    let a2 = server
        .client_with("plan", with_token(token(json!({ "tenant": "acme" }))))
        .await;
    wait_text(&[&a2], "t", "acme secret").await;
    assert_eq!(
        text(&b, "t"),
        "",
        "tenant globex must not see tenant acme's room"
    );
}

#[tokio::test]
async fn read_role_receives_but_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(secured(dir.path())).await;
    let writer = server.client_with("ro", with_token(token(json!({})))).await;
    append(&writer, "t", "from writer");
    let reader = server
        .client_with(
            "ro",
            ClientOptions {
                token: Some(token(json!({ "role": "read" }))),
                ext: true,
                ..Default::default()
            },
        )
        .await;
    wait_text(&[&reader], "t", "from writer").await;

    append(&reader, "t", " + reader edit");
    reader
        .wait_for("permission denied", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("reader told with permission-denied");
    reader
        .wait_for("ext error", PATIENCE, |s, _| {
            s.events.iter().any(|e| {
                matches!(
                    e,
                    ServerMessage::Error {
                        code: chorus_protocol::ext::ErrorCode::Forbidden,
                        ..
                    }
                )
            })
        })
        .await
        .expect("extension error sent");
    // Not applied, not relayed: the writer and a fresh joiner still see only the writer's text.
    append(&writer, "t", "!");
    wait_text(&[&writer], "t", "from writer!").await;
    let fresh = server.client_with("ro", with_token(token(json!({})))).await;
    assert_eq!(text(&fresh, "t"), "from writer!");
    // The reader stays connected and still receives the writer's edits (its own refused edit
    // stays local to it, as in any Yjs client that edits a read-only document).
    reader
        .wait_for("writer edit", PATIENCE, |_, doc| {
            use yrs::{GetString, Transact};
            doc.get_or_insert_text("t")
                .get_string(&doc.transact())
                .contains('!')
        })
        .await
        .expect("reader receives later edits");
    assert!(reader.closed().is_none());
}

#[tokio::test]
async fn role_defaults_to_read_when_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(secured(dir.path())).await;
    let c = server
        .client_with("dflt", with_token(token(json!({ "role": null }))))
        .await;
    append(&c, "t", "x");
    c.wait_for("denied", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("denied");
}

#[tokio::test]
async fn eddsa_and_rs256_public_keys_verify() {
    for (private, public, alg, ed) in [
        (
            &include_bytes!("keys/ed25519.pem")[..],
            "keys/ed25519.pub.pem",
            Algorithm::EdDSA,
            true,
        ),
        (
            &include_bytes!("keys/rsa.pem")[..],
            "keys/rsa.pub.pem",
            Algorithm::RS256,
            false,
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.jwt_public_key = Some(format!("{}/tests/{public}", env!("CARGO_MANIFEST_DIR")));
        let server = TestServer::start(config).await;
        let key = if ed {
            EncodingKey::from_ed_pem(private).expect("ed key")
        } else {
            EncodingKey::from_rsa_pem(private).expect("rsa key")
        };
        let c = server
            .client_with("pk", with_token(sign(alg, &key, json!({}))))
            .await;
        append(&c, "t", "signed");
        // HS256 tokens are not accepted when only a public key is configured.
        let (code, _) = refused(&server.url("pk"), with_token(token(json!({})))).await;
        assert_eq!(code, 4401);
        c.close().await;
        server.stop().await.expect("stop");
    }
}

#[tokio::test]
async fn anonymous_access_follows_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.allow_anonymous = Some(false);
    let server = TestServer::start(config).await;
    assert_eq!(
        refused(&server.url("anon"), ClientOptions::default())
            .await
            .0,
        4401
    );
    server.stop().await.expect("stop");

    // Default on loopback without keys: allowed, in tenant "default".
    let server = TestServer::start(test_config(dir.path())).await;
    let c = server
        .client_with(
            "anon",
            ClientOptions {
                ext: true,
                ..Default::default()
            },
        )
        .await;
    c.wait_for("welcome", PATIENCE, |s, _| {
        s.events.iter().any(|e| matches!(e, ServerMessage::Welcome { tenant, role, .. } if tenant == "default" && role == "write"))
    })
    .await
    .expect("welcome names tenant default");
}

#[tokio::test]
async fn bad_room_names_and_plain_http_are_refused_with_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let (s, body) = server.get("/ws/plain-http").await;
    assert_eq!(s, 400);
    assert!(body.contains("expected a websocket upgrade"), "{body}");
    let (s, body) = server.get("/ws/bad%00name").await;
    assert_eq!(s, 400);
    assert!(body.contains("control characters"), "{body}");
    let long = "x".repeat(600);
    assert_eq!(server.get(&format!("/ws/{long}")).await.0, 400);
    assert_eq!(server.get("/nope").await.0, 404);
}
