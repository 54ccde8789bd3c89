//! The REST API, tenants, per-tenant keys and limits, through a real hub over real HTTP and
//! WebSockets (SQLite store; `postgres_*` tests repeat the core flows on Postgres).

mod common;

/// Every flow runs on the embedded SQLite store and on Postgres (a fresh database each).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(None).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
                        return;
                    };
                    super::$name(Some(db.url().to_string())).await;
                    drop(db);
                }
            )*
        }
    };
}

on_both_stores!(
    tenants_and_api_keys_are_managed_by_the_operator,
    tokens_open_only_their_own_tenants_rooms,
    rooms_documents_versions_and_presence,
    tenant_limits_are_enforced_with_clear_errors,
    bad_input_gets_precise_problems,
    webhooks_deliver_signed_events_from_the_outbox,
    hocuspocus_documents_use_tenant_keys_and_limits,
);

use std::time::Duration;

use chorus_protocol::client::{Client, ClientOptions};
use common::{PATIENCE, TestServer, append, test_config, wait_text};
use serde_json::{Value, json};

const OPERATOR: &str = "operator-key-for-tests-0123456789abcdef";

struct Api {
    http: reqwest::Client,
    base: String,
}

struct Reply {
    status: u16,
    content_type: String,
    body: Value,
    raw: Vec<u8>,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{}", server.addr),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = tokio::time::timeout(PATIENCE, req.send())
            .await
            .expect("answer in time")
            .expect("request");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let raw = res.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            raw,
        }
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(req).await
    }

    async fn raw(&self, method: &str, path: &str, key: &str, ct: &str, body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", ct)
            .body(body);
        self.send(req).await
    }

    /// Creates a tenant and an API key for it; returns (API key, signing key secret, kid).
    async fn tenant(&self, id: &str, settings: Value) -> (String, String, String) {
        let r = self
            .call(
                "POST",
                "/v1/tenants",
                OPERATOR,
                Some(json!({ "id": id, "name": id, "settings": settings })),
            )
            .await;
        assert_eq!(r.status, 201, "create tenant: {}", r.body);
        let secret = r.body["signing_key"]["secret"]
            .as_str()
            .expect("secret")
            .to_string();
        let kid = r.body["signing_key"]["kid"]
            .as_str()
            .expect("kid")
            .to_string();
        let r = self
            .call(
                "POST",
                &format!("/v1/tenants/{id}/api-keys"),
                OPERATOR,
                Some(json!({ "name": "ci" })),
            )
            .await;
        assert_eq!(r.status, 201, "create key: {}", r.body);
        let key = r.body["key"].as_str().expect("key").to_string();
        (key, secret, kid)
    }

    async fn token(&self, key: &str, room: &str, role: &str) -> String {
        let r = self
            .call(
                "POST",
                "/v1/tokens",
                key,
                Some(json!({ "room": room, "role": role, "sub": "alice", "ttl_seconds": 600 })),
            )
            .await;
        assert_eq!(r.status, 201, "mint: {}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }
}

fn config(dir: &std::path::Path, db: &Option<String>) -> chorus_hub::Config {
    chorus_hub::Config {
        database_url: db.clone(),
        operator_key: Some(OPERATOR.into()),
        allow_anonymous: Some(false),
        jwt_secret: Some(common::SECRET.into()),
        ..test_config(dir)
    }
}

async fn connect(server: &TestServer, room: &str, token: &str) -> Client {
    let url = format!("{}?token={token}", server.url(room));
    let c = Client::connect(&url, ClientOptions::default())
        .await
        .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    c
}

/// Status and body of a WebSocket upgrade request (a refusal is an HTTP error with JSON).
/// What a WebSocket upgrade meets: an HTTP status and body (refusals a retry can fix), or
/// the close code and reason of a socket accepted and closed at once (refusals for good,
/// 4401/4403), or 101 for a session that is served.
async fn ws_refusal(server: &TestServer, room: &str, token: &str) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let url = format!("ws://{}/ws/{room}?token={token}", server.addr);
    let connected = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("answer in time");
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            return (
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            );
        }
        Err(e) => panic!("upgrade failed: {e}"),
    };
    match tokio::time::timeout(PATIENCE, socket.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => (frame.code.into(), frame.reason.to_string()),
        Ok(Some(Ok(_))) => (101, String::new()),
        other => panic!("socket ended without a close frame: {other:?}"),
    }
}

fn assert_problem(r: &Reply, status: u16, detail_has: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(r.body["status"], status);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_has),
        "detail {detail:?} lacks {detail_has:?}"
    );
}

async fn tenants_and_api_keys_are_managed_by_the_operator(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key, _, _) = api.tenant("acme", json!({ "max_rooms": 5 })).await;

    let dup = api
        .call(
            "POST",
            "/v1/tenants",
            OPERATOR,
            Some(json!({ "id": "acme" })),
        )
        .await;
    assert_problem(&dup, 409, "already exists");
    let list = api.call("GET", "/v1/tenants", OPERATOR, None).await;
    assert_eq!(list.body["tenants"][0]["id"], "acme");
    assert_eq!(list.body["tenants"][0]["settings"]["max_rooms"], 5);

    let patched = api
        .call(
            "PATCH",
            "/v1/tenants/acme",
            OPERATOR,
            Some(json!({ "settings": { "max_rooms": 7 } })),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["settings"]["max_rooms"], 7);
    // A merge patch (RFC 7396): other settings stay, `null` removes one.
    let patch = |settings: Value| {
        let api = &api;
        async move {
            api.call(
                "PATCH",
                "/v1/tenants/acme",
                OPERATOR,
                Some(json!({ "settings": settings })),
            )
            .await
        }
    };
    let merged = patch(json!({ "messages_per_second": 100 })).await;
    assert_eq!(merged.status, 200, "{}", merged.body);
    assert_eq!(
        merged.body["settings"],
        json!({ "max_rooms": 7, "messages_per_second": 100 })
    );
    let removed = patch(json!({ "max_rooms": null })).await;
    assert_eq!(
        removed.body["settings"],
        json!({ "messages_per_second": 100 })
    );
    // Below what a stock provider's handshake needs, every session would close with 4429.
    let min = chorus_hub::tenants::MIN_MESSAGES_PER_SECOND;
    assert_problem(
        &patch(json!({ "messages_per_second": min - 1 })).await,
        422,
        &format!("at least {min}"),
    );
    assert_eq!(
        patch(json!({ "messages_per_second": min })).await.status,
        200
    );
    assert_problem(&patch(json!(7)).await, 422, "must be a JSON object");
    let bad = api
        .call(
            "PATCH",
            "/v1/tenants/acme",
            OPERATOR,
            Some(json!({ "settings": { "max_romos": 7 } })),
        )
        .await;
    assert_problem(&bad, 422, "max_romos");

    // The key works for tenant routes, not for operator routes; the operator key needs a
    // tenant header for tenant routes.
    assert_eq!(api.call("GET", "/v1/rooms", &key, None).await.status, 200);
    assert_problem(
        &api.call("GET", "/v1/tenants", &key, None).await,
        403,
        "operator key",
    );
    assert_problem(
        &api.call("GET", "/v1/rooms", OPERATOR, None).await,
        400,
        "Chorus-Tenant",
    );
    let as_tenant = api
        .send(
            api.http
                .get(format!("{}/v1/rooms", api.base))
                .bearer_auth(OPERATOR)
                .header("chorus-tenant", "acme"),
        )
        .await;
    assert_eq!(as_tenant.status, 200);

    // Wrong keys.
    let no_operator =
        TestServer::start(common::test_config(dir.path().join("alone").as_path())).await;
    let off = Api::new(&no_operator)
        .call("GET", "/v1/tenants", OPERATOR, None)
        .await;
    assert_problem(
        &off,
        403,
        "tenant management is off on this node: start it with --operator-key",
    );
    no_operator.stop().await.expect("stop");
    assert_problem(
        &api.call("GET", "/v1/tenants", "not-the-operator-key", None)
            .await,
        401,
        "invalid operator key",
    );
    let tampered = format!("{}x", key);
    assert_problem(
        &api.call("GET", "/v1/rooms", &tampered, None).await,
        401,
        "invalid or revoked",
    );
    assert_problem(
        &api.call("GET", "/v1/rooms", "chk_acme.nokey.secret", None)
            .await,
        401,
        "invalid or revoked",
    );

    // Revocation takes effect at once on this node.
    let keys = api
        .call("GET", "/v1/tenants/acme/api-keys", OPERATOR, None)
        .await;
    let key_id = keys.body["api_keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    assert!(keys.body["api_keys"][0].get("hash").is_none());
    let r = api
        .call(
            "DELETE",
            &format!("/v1/tenants/acme/api-keys/{key_id}"),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_problem(
        &api.call("GET", "/v1/rooms", &key, None).await,
        401,
        "invalid or revoked",
    );

    // A live session of the tenant is closed with 4404 when the tenant is deleted, and its
    // tokens open nothing afterwards (its keys are gone with it).
    let key2 = api
        .call(
            "POST",
            "/v1/tenants/acme/api-keys",
            OPERATOR,
            Some(json!({})),
        )
        .await
        .body["key"]
        .as_str()
        .expect("key")
        .to_string();
    let token = api.token(&key2, "live", "write").await;
    let live = connect(&server, "live", &token).await;
    let gone = api.call("DELETE", "/v1/tenants/acme", OPERATOR, None).await;
    assert_eq!(gone.status, 204);
    let (code, _) = live.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 4404);
    let (status, _) = ws_refusal(&server, "live", &token).await;
    assert_eq!(status, 4401);
    assert_problem(
        &api.call("GET", "/v1/tenants/acme", OPERATOR, None).await,
        404,
        "no tenant",
    );
}

async fn tokens_open_only_their_own_tenants_rooms(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key_a, secret_a, kid_a) = api.tenant("tenant-a", json!({})).await;
    let (key_b, _, _) = api.tenant("tenant-b", json!({})).await;

    // A minted token opens the room; A and B rooms of the same name are separate documents.
    let token_a = api.token(&key_a, "shared-name", "write").await;
    let token_b = api.token(&key_b, "shared-name", "write").await;
    let a = connect(&server, "shared-name", &token_a).await;
    let b = connect(&server, "shared-name", &token_b).await;
    append(&a, "t", "secret of A");
    let doc = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = api
                .call("GET", "/v1/rooms/shared-name/document", &key_a, None)
                .await;
            if r.body["t"] == "secret of A" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("A's edit visible to A's API");
    assert_eq!(doc.status, 200);
    let other = api
        .call("GET", "/v1/rooms/shared-name/document", &key_b, None)
        .await;
    assert_eq!(other.status, 200);
    assert_ne!(other.body["t"], "secret of A", "B must never see A's text");
    assert_eq!(common::text(&b, "t"), "");
    // B's key naming tenant A in the operator's header still acts as B.
    let sneaky = api
        .send(
            api.http
                .get(format!("{}/v1/rooms/shared-name/document", api.base))
                .bearer_auth(&key_b)
                .header("chorus-tenant", "tenant-a"),
        )
        .await;
    assert_ne!(sneaky.body["t"], "secret of A");
    let versions = api
        .call("GET", "/v1/rooms/shared-name/versions", &key_b, None)
        .await;
    assert_eq!(versions.status, 200, "{}", versions.body);

    // A token signed with A's key but claiming tenant B: B has no such kid.
    let forged = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some(kid_a.clone());
            h
        },
        &json!({ "tenant": "tenant-b", "rooms": ["*"], "role": "write", "exp": common::now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret_a.as_bytes()),
    )
    .expect("sign");
    let (status, body) = ws_refusal(&server, "shared-name", &forged).await;
    assert_eq!(status, 4401, "{body}");
    // A key id with a tenant that is not a valid id is refused before any lookup.
    let malformed = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some(kid_a.clone());
            h
        },
        &json!({ "tenant": "Not A Tenant", "rooms": ["*"], "exp": common::now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret_a.as_bytes()),
    )
    .expect("sign");
    let (status, body) = ws_refusal(&server, "shared-name", &malformed).await;
    assert_eq!(status, 4401, "{body}");
    assert!(body.contains("unknown or revoked key id"), "{body}");

    // Rotation: a second key works alongside the first; a revoked key stops working.
    let r = api
        .call(
            "POST",
            "/v1/keys",
            &key_a,
            Some(json!({ "alg": "HS256", "kid": "rotated" })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated_secret = r.body["secret"].as_str().expect("secret").to_string();
    let sign_with = |kid: &str, secret: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(
            &h,
            &json!({ "tenant": "tenant-a", "rooms": ["r2"], "role": "read", "exp": common::now() + 600 }),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let c1 = connect(&server, "r2", &sign_with(&kid_a, &secret_a)).await;
    let c2 = connect(&server, "r2", &sign_with("rotated", &rotated_secret)).await;
    let r = api
        .call("DELETE", &format!("/v1/keys/{kid_a}"), &key_a, None)
        .await;
    assert_eq!(r.status, 204);
    let (status, _) = ws_refusal(&server, "r2", &sign_with(&kid_a, &secret_a)).await;
    assert_eq!(status, 4401, "a revoked key opens nothing");
    let c3 = connect(&server, "r2", &sign_with("rotated", &rotated_secret)).await;

    // An EdDSA public key verifies tokens signed with its private key.
    let pem = std::fs::read_to_string("tests/keys/ed25519.pub.pem").expect("pem");
    let r = api
        .call(
            "POST",
            "/v1/keys",
            &key_a,
            Some(json!({ "alg": "EdDSA", "kid": "ed", "key": pem })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let private = std::fs::read("tests/keys/ed25519.pem").expect("pem");
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("ed".into());
    let ed = jsonwebtoken::encode(
        &h,
        &json!({ "tenant": "tenant-a", "rooms": ["r3"], "role": "write", "exp": common::now() + 600 }),
        &jsonwebtoken::EncodingKey::from_ed_pem(&private).expect("key"),
    )
    .expect("sign");
    let c4 = connect(&server, "r3", &ed).await;
    let bad = api
        .call(
            "POST",
            "/v1/keys",
            &key_a,
            Some(json!({ "alg": "EdDSA", "key": "not a pem" })),
        )
        .await;
    assert_problem(&bad, 422, "not a valid EdDSA key");
    for c in [a, b, c1, c2, c3, c4] {
        c.close().await;
    }
}

async fn rooms_documents_versions_and_presence(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key, _, _) = api.tenant("docs", json!({})).await;

    let r = api
        .call(
            "POST",
            "/v1/rooms",
            &key,
            Some(json!({ "name": "notes/2026", "meta": { "title": "Notes" } })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["meta"]["title"], "Notes");
    assert_problem(
        &api.call(
            "POST",
            "/v1/rooms",
            &key,
            Some(json!({ "name": "notes/2026" })),
        )
        .await,
        409,
        "already exists",
    );
    let path = "/v1/rooms/notes%2F2026";

    let token = api.token(&key, "notes/2026", "write").await;
    let client = connect(&server, "notes/2026", &token).await;
    append(&client, "t", "hello");
    // JSON operations reach the connected client.
    let r = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = api
                .call(
                    "POST",
                    &format!("{path}/document"),
                    &key,
                    Some(json!({ "ops": [
                        { "op": "insert_text", "name": "t", "index": 5, "text": " world" },
                        { "op": "set_map", "name": "m", "key": "k", "value": { "n": 1 } }
                    ] })),
                )
                .await;
            // Until the client's edit arrived, index 5 is out of bounds.
            if r.status == 200 {
                return r;
            }
            assert_eq!(r.status, 422, "{}", r.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ops apply once the client's edit is in");
    assert_eq!(r.body["durable"], true);
    wait_text(&[&client], "t", "hello world").await;

    let doc = api
        .call("GET", &format!("{path}/document"), &key, None)
        .await;
    assert_eq!(doc.body["t"], "hello world");
    assert_eq!(doc.body["m"]["k"]["n"], 1);

    // A version, more edits, a restore that the client receives as an ordinary edit.
    let v = api
        .call(
            "POST",
            &format!("{path}/versions"),
            &key,
            Some(json!({ "name": "first draft" })),
        )
        .await;
    assert_eq!(v.status, 201, "{}", v.body);
    let vid = v.body["id"].as_i64().expect("id");
    append(&client, "t", "!!!");
    wait_text(&[&client], "t", "hello world!!!").await;
    let listed = api
        .call("GET", &format!("{path}/versions"), &key, None)
        .await;
    assert_eq!(listed.body["versions"][0]["name"], "first draft");
    let got = api
        .call("GET", &format!("{path}/versions/{vid}"), &key, None)
        .await;
    assert_eq!(got.body["content"]["t"], "hello world");
    let restored = api
        .call(
            "POST",
            &format!("{path}/versions/{vid}/restore"),
            &key,
            None,
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.body);
    wait_text(&[&client], "t", "hello world").await;

    // A binary update from a backend's own yrs document.
    let backend = yrs::Doc::with_client_id(7);
    {
        use yrs::{Array, Text, Transact, XmlElementPrelim, XmlFragment, XmlTextPrelim};
        let t = backend.get_or_insert_text("other");
        let x = backend.get_or_insert_xml_fragment("prose");
        let a = backend.get_or_insert_array("list");
        let mut txn = backend.transact_mut();
        t.insert(&mut txn, 0, "from backend");
        let p = x.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.push_back(&mut txn, XmlTextPrelim::new("rich"));
        a.push_back(&mut txn, 1);
        a.push_back(&mut txn, "two");
    }
    let update = {
        use yrs::{ReadTxn, StateVector, Transact};
        backend
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let r = api
        .raw(
            "POST",
            &format!("{path}/document"),
            &key,
            "application/octet-stream",
            update,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_text(&[&client], "other", "from backend").await;
    let bin = api
        .send(
            api.http
                .get(format!("{}{path}/document?format=update", api.base))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(bin.content_type, "application/octet-stream");
    let check = yrs::Doc::new();
    {
        use yrs::updates::decoder::Decode;
        use yrs::{Transact, Update};
        check
            .transact_mut()
            .apply_update(Update::decode_v1(&bin.raw).expect("update"))
            .expect("apply");
    }
    assert_eq!(common::text_of(&check, "other"), "from backend");
    // XML and arrays read as JSON too.
    let doc = api
        .call("GET", &format!("{path}/document"), &key, None)
        .await;
    assert_eq!(doc.body["prose"], "<p>rich</p>", "{}", doc.body);
    assert_eq!(doc.body["list"], json!([1, "two"]));

    // Presence and listing.
    let p = api
        .call("GET", &format!("{path}/presence"), &key, None)
        .await;
    assert_eq!(p.body["members"][0]["user"], "alice");
    let rooms = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = api.call("GET", "/v1/rooms", &key, None).await;
            if r.body["rooms"][0]["stored_bytes"].as_i64().unwrap_or(0) > 0 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("stored bytes listed");
    assert_eq!(rooms.body["rooms"][0]["name"], "notes/2026");
    assert_eq!(rooms.body["rooms"][0]["members"], 1);
    assert!(rooms.body["rooms"][0]["last_activity"].is_i64());

    // Deleting closes the member with 4404 and removes everything.
    let r = api.call("DELETE", path, &key, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (code, _) = client.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 4404);
    assert_problem(&api.call("GET", path, &key, None).await, 404, "no room");
    let after = api
        .call("GET", &format!("{path}/versions/{vid}"), &key, None)
        .await;
    assert_eq!(after.status, 404);
}

async fn tenant_limits_are_enforced_with_clear_errors(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key, _, _) = api
        .tenant(
            "small",
            json!({ "max_connections": 2, "max_rooms": 2, "max_document_bytes": 4096, "messages_per_second": 20 }),
        )
        .await;
    let token = api.token(&key, "*", "write").await;
    let c1 = connect(&server, "one", &token).await;
    let c2 = connect(&server, "two", &token).await;
    let (status, body) = ws_refusal(&server, "one", &token).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("connection limit"), "{body}");
    c2.close().await;
    server.wait_health("connections", 1).await;
    // Two rooms exist: a third is refused, an existing one is fine.
    let (status, body) = ws_refusal(&server, "three", &token).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("room limit"), "{body}");
    let r = api
        .call("POST", "/v1/rooms", &key, Some(json!({ "name": "three" })))
        .await;
    assert_problem(&r, 429, "room limit");

    // The tenant's document limit is lower than the node's.
    append(&c1, "t", &"x".repeat(6000));
    let (code, reason) = c1.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(
        (code, reason.as_str()),
        (4413, "document size limit reached")
    );
    // A backend's update beyond the tenant's limit is refused with 413, nothing applied.
    let backend = yrs::Doc::with_client_id(9);
    {
        use yrs::{Text, Transact};
        let t = backend.get_or_insert_text("t");
        t.insert(&mut backend.transact_mut(), 0, &"y".repeat(6000));
    }
    let update = {
        use yrs::{ReadTxn, StateVector, Transact};
        backend
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let big = api
        .raw(
            "POST",
            "/v1/rooms/two/document",
            &key,
            "application/octet-stream",
            update,
        )
        .await;
    assert_problem(&big, 413, "size limit");
    let doc = api.call("GET", "/v1/rooms/two/document", &key, None).await;
    assert_ne!(doc.body["t"], json!("y".repeat(6000)));

    // Flooding past messages_per_second closes the connection with 4429.
    let c3 = connect(&server, "two", &token).await;
    for i in 0..200 {
        if c3.closed().is_some() {
            break;
        }
        let _ = c3.send_raw(chorus_protocol::sync::Message::QueryAwareness.encode());
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (code, reason) = c3.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(
        (code, reason.as_str()),
        (4429, "message rate limit exceeded")
    );
}

async fn bad_input_gets_precise_problems(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key, _, _) = api.tenant("strict", json!({})).await;

    let malformed = api
        .raw(
            "POST",
            "/v1/rooms",
            &key,
            "application/json",
            b"{\"name\":".to_vec(),
        )
        .await;
    assert_problem(&malformed, 400, "malformed JSON");
    let wrong_type = api
        .call("POST", "/v1/rooms", &key, Some(json!({ "name": 5 })))
        .await;
    assert_problem(&wrong_type, 422, "invalid type");
    let unknown = api
        .call(
            "POST",
            "/v1/rooms",
            &key,
            Some(json!({ "name": "x", "colour": 1 })),
        )
        .await;
    assert_problem(&unknown, 422, "unknown field");
    let not_json = api
        .raw("POST", "/v1/rooms", &key, "text/plain", b"name=x".to_vec())
        .await;
    assert_problem(&not_json, 415, "application/json");
    let huge = api
        .raw(
            "POST",
            "/v1/rooms",
            &key,
            "application/json",
            vec![b' '; 2 * 1024 * 1024],
        )
        .await;
    assert_problem(&huge, 413, "larger than");
    assert_problem(
        &api.call("GET", "/v1/rooms/nope/document", &key, None).await,
        404,
        "no room",
    );
    assert_problem(
        &api.call("GET", "/v1/rooms/nope/versions/abc", &key, None)
            .await,
        400,
        "integer",
    );
    assert_problem(
        &api.call("GET", "/v1/rooms?limit=0", &key, None).await,
        422,
        "limit",
    );
    let bad_update = api
        .raw(
            "POST",
            "/v1/rooms/x/document",
            &key,
            "application/octet-stream",
            vec![0xff, 0xff, 0xff],
        )
        .await;
    assert_problem(&bad_update, 422, "not a Yjs v1 update");
    // Nesting (issue 13): a value nested past --max-nesting-depth is refused before any decoder
    // sees it, as a Yjs update and as JSON; at the limit it is applied.
    let created = api
        .call("POST", "/v1/rooms", &key, Some(json!({ "name": "deep" })))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let deep_update = |d: usize| chorus_protocol::nesting::nested_value_update(7, "v", d);
    for d in [64, 6_500] {
        let r = api
            .raw(
                "POST",
                "/v1/rooms/deep/document",
                &key,
                "application/octet-stream",
                deep_update(d),
            )
            .await;
        assert_problem(&r, 422, "deeper than 64");
        assert_eq!(r.body["code"], "too_deep", "{}", r.body);
    }
    let at_limit = api
        .raw(
            "POST",
            "/v1/rooms/deep/document",
            &key,
            "application/octet-stream",
            deep_update(63),
        )
        .await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.body);
    let nested = |d: usize| {
        let mut v = json!(1);
        for _ in 0..d {
            v = json!([v]);
        }
        v
    };
    let set = |d: usize| json!({ "ops": [{ "op": "set_map", "name": "m", "key": "k", "value": nested(d) }] });
    let r = api
        .call("POST", "/v1/rooms/deep/document", &key, Some(set(64)))
        .await;
    assert_problem(&r, 422, "deeper than 64");
    let r = api
        .call("POST", "/v1/rooms/deep/document", &key, Some(set(63)))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A path op counts its path: an element's attribute is one level deeper than a root
    // map's key.
    let post = |ops: serde_json::Value| {
        let api = &api;
        let key = &key;
        async move {
            api.call(
                "POST",
                "/v1/rooms/deep/document",
                key,
                Some(json!({ "ops": ops })),
            )
            .await
        }
    };
    let r = post(json!([{ "op": "set", "path": ["m", "k"], "value": nested(63) }])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(json!([{ "op": "splice", "path": ["x"], "index": 0, "xml": true, "insert": [{ "type": "p" }] }])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        post(json!([{ "op": "set", "path": ["x", 0, "attrs", "a"], "value": nested(63) }])).await;
    assert_problem(&r, 422, "deeper than 64");
    let r =
        post(json!([{ "op": "set", "path": ["x", 0, "attrs", "a"], "value": nested(62) }])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tree = api
        .call("GET", "/v1/rooms/deep/document?view=tree", &key, None)
        .await;
    assert_eq!(tree.body["x"][0]["type"], "p", "{}", tree.body);
    assert_eq!(tree.body["x"][0]["attrs"]["a"], nested(62));
    let r = api
        .call("GET", "/v1/rooms/deep/document?view=bogus", &key, None)
        .await;
    assert_problem(&r, 422, "view must be");
    let bad_op = api
        .call(
            "POST",
            "/v1/rooms/x/document",
            &key,
            Some(json!({ "ops": [{ "op": "explode", "name": "t" }] })),
        )
        .await;
    assert_problem(&bad_op, 422, "explode");
    let no_ops = api
        .call(
            "POST",
            "/v1/rooms/x/document",
            &key,
            Some(json!({ "ops": [] })),
        )
        .await;
    assert_problem(&no_ops, 422, "ops must not be empty");
    let bad_tenant = api
        .call(
            "POST",
            "/v1/tenants",
            OPERATOR,
            Some(json!({ "id": "Bad Tenant" })),
        )
        .await;
    assert_problem(&bad_tenant, 422, "tenant id");
    let nul_meta = api
        .call(
            "POST",
            "/v1/rooms",
            &key,
            Some(json!({ "name": "m", "meta": { "k": "a\u{0}b" } })),
        )
        .await;
    assert_problem(&nul_meta, 422, "NUL");
    let bad_name = api
        .call("POST", "/v1/rooms", &key, Some(json!({ "name": "" })))
        .await;
    assert_problem(&bad_name, 422, "name");
    let unknown_tenant_keys = api
        .send(
            api.http
                .get(format!("{}/v1/keys", api.base))
                .bearer_auth(OPERATOR)
                .header("chorus-tenant", "nobody"),
        )
        .await;
    assert_problem(&unknown_tenant_keys, 404, "no tenant");
    let reserved = api
        .call(
            "POST",
            "/v1/tenants",
            OPERATOR,
            Some(json!({ "id": "default" })),
        )
        .await;
    assert_problem(&reserved, 422, "reserved");
    let bad_hook = api
        .call(
            "PUT",
            "/v1/webhook",
            &key,
            Some(json!({ "url": "ftp://example.com" })),
        )
        .await;
    assert_problem(&bad_hook, 422, "http");
    // Internal addresses are refused unless the operator allows them.
    for internal in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://[::1]/",
    ] {
        let r = api
            .call("PUT", "/v1/webhook", &key, Some(json!({ "url": internal })))
            .await;
        assert_problem(&r, 422, "internal address");
    }
    let bad_event = api
        .call(
            "PUT",
            "/v1/webhook",
            &key,
            Some(json!({ "url": "http://example.com/", "events": ["everything"] })),
        )
        .await;
    assert_problem(&bad_event, 422, "unknown event");
    let no_auth = api
        .send(api.http.get(format!("{}/v1/rooms", api.base)))
        .await;
    assert_problem(&no_auth, 401, "missing Authorization");

    // Every documented operation exists (answers something other than the fallback 404).
    let doc = api.call("GET", "/v1/openapi.json", "", None).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().expect("paths");
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            let concrete = path
                .replace("{tenant}", "strict")
                .replace("{room}", "x")
                .replace("{id}", "1")
                .replace("{key_id}", "k")
                .replace("{kid}", "k");
            let r = api
                .call(&method.to_uppercase(), &concrete, "bogus", None)
                .await;
            assert!(
                r.body["detail"] != "no such endpoint" && r.status != 405,
                "{method} {path} is documented but not routed: {} {}",
                r.status,
                r.body
            );
        }
    }
}

async fn webhooks_deliver_signed_events_from_the_outbox(db: Option<String>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<(
        axum::http::HeaderMap,
        Vec<u8>,
    )>::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().await.push((headers, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let standin = chorus_ai_bridge::standin::StandIn::start(Default::default())
        .await
        .expect("standin");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        webhook_debounce: Duration::from_millis(200),
        webhook_allow_private: true,
        ..config(dir.path(), &db)
    };
    config.ai.ai_base_url = Some(standin.base_url());
    config.ai.ai_model = Some("standin".into());
    let server = TestServer::start(config).await;
    let api = Api::new(&server);
    let (key, _, _) = api.tenant("hooked", json!({})).await;
    let r = api
        .call(
            "PUT",
            "/v1/webhook",
            &key,
            Some(json!({ "url": format!("http://{hook_addr}/hook") })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = r.body["secret"].as_str().expect("secret").to_string();

    let token = api.token(&key, "room-w", "write").await;
    let c = connect(&server, "room-w", &token).await;
    append(&c, "t", "change");
    c.close().await;

    let wait_for = |want: &'static [&'static str]| {
        let received = received.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let got: Vec<String> = received
                    .lock()
                    .await
                    .iter()
                    .filter_map(|(h, _)| {
                        h.get("chorus-event")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    })
                    .collect();
                if want.iter().all(|w| got.iter().any(|g| g == w)) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "events received: {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(&[
        "room.created",
        "user.joined",
        "document.changed",
        "user.left",
    ])
    .await;
    // A run that ends fires ai.run.finished.
    let asked = api
        .call(
            "POST",
            "/v1/rooms/room-w/ai/runs",
            &key,
            Some(json!({ "prompt": "say hello", "target": "chat" })),
        )
        .await;
    assert_eq!(asked.status, 201, "{}", asked.body);
    let run = asked.body["id"].as_str().expect("run id").to_owned();
    wait_for(&["ai.run.finished"]).await;
    let finished: Value = received
        .lock()
        .await
        .iter()
        .find_map(|(h, body)| {
            (h.get("chorus-event")?.to_str().ok()? == "ai.run.finished")
                .then(|| serde_json::from_slice(body).expect("json body"))
        })
        .expect("ai.run.finished");
    assert_eq!(finished["data"]["run"], run.as_str(), "{finished}");
    assert_eq!(finished["data"]["room"], "room-w", "{finished}");
    assert_eq!(finished["data"]["status"], "done", "{finished}");
    assert!(
        finished["data"]["completion_tokens"].as_u64() > Some(0),
        "{finished}"
    );
    let deleted = api.call("DELETE", "/v1/rooms/room-w", &key, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    wait_for(&["room.deleted"]).await;
    for (headers, body) in received.lock().await.iter() {
        let ts: i64 = headers["chorus-timestamp"]
            .to_str()
            .expect("ts")
            .parse()
            .expect("ts");
        let sig = headers["chorus-signature"].to_str().expect("sig");
        assert!(
            chorus_hub::webhooks::verify(
                secret.as_bytes(),
                ts,
                body,
                sig,
                common::now() as i64,
                Duration::from_secs(300)
            ),
            "signature must verify"
        );
        let v: Value = serde_json::from_slice(body).expect("json body");
        assert_eq!(v["tenant"], "hooked");
        if v["event"] == "document.changed" {
            assert_eq!(v["data"]["room"], "room-w");
            assert!(v["data"]["state_vector"].is_string());
        }
    }
    let hook = api.call("GET", "/v1/webhook", &key, None).await;
    assert_eq!(hook.body["last_status"], 200, "{}", hook.body);
    assert!(hook.body.get("secret").is_none());
    let events = api.call("GET", "/v1/webhook/events", &key, None).await;
    assert!(
        events.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["delivered"].is_i64())
    );
}

/// The Hocuspocus dialect verifies each document's token like the y-websocket endpoint: tenant
/// keys by `kid`, the tenant's connection limit per open document, and its message rate.
async fn hocuspocus_documents_use_tenant_keys_and_limits(db: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(config(dir.path(), &db)).await;
    let api = Api::new(&server);
    let (key, _, _) = api
        .tenant(
            "hp",
            json!({ "max_connections": 1, "messages_per_second": 20 }),
        )
        .await;
    let (other_key, _, _) = api.tenant("hp-other", json!({})).await;
    let url = format!("ws://{}/hocuspocus", server.addr);
    let open = |doc: &str, token: String| {
        let url = url.clone();
        let doc = doc.to_string();
        async move {
            Client::connect(
                &url,
                ClientOptions {
                    hocuspocus: Some(doc),
                    token: Some(token),
                    ..ClientOptions::default()
                },
            )
            .await
            .expect("connect")
        }
    };
    let token = api.token(&key, "*", "write").await;
    let first = open("doc-1", token.clone()).await;
    first.synced(PATIENCE).await.expect("synced");
    assert_eq!(first.state().authenticated.as_deref(), Some("read-write"));
    // The tenant's one connection is in use: the next document is refused, the socket stays.
    let second = open("doc-2", token.clone()).await;
    second
        .wait_for("denied", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("denied");
    assert!(second.state().denied[0].contains("connection limit"));
    assert!(second.closed().is_none());
    // Another tenant's token is verified with that tenant's keys and is not limited.
    let other = open("doc-1", api.token(&other_key, "doc-1", "write").await).await;
    other.synced(PATIENCE).await.expect("synced");
    append(&first, "t", "hp tenant");
    wait_text(&[&first], "t", "hp tenant").await;
    assert_eq!(
        common::text(&other, "t"),
        "",
        "same name, other tenant, other room"
    );
    // Flooding past the tenant's message rate closes the socket with 4429.
    for i in 0..200 {
        if first.closed().is_some() {
            break;
        }
        append(&first, "t", ".");
        if i % 20 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (code, reason) = first.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(
        (code, reason.as_str()),
        (4429, "message rate limit exceeded")
    );
}
