//! Traces over OTLP: two `chorus` processes of a cluster (shared Postgres and Redis) export
//! their spans to a small OTLP/HTTP receiver here, and one update's spans are followed by
//! their parent links from the socket on node A, through its apply, to the store and to the
//! apply on node B. Without Postgres or Redis this skips loudly, unless `CI` is set.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chorus_protocol::ext::ServerMessage;
use common::services::*;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    /// The exporting node (`service.instance.id`).
    node: String,
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text_of(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text_of(&kv.value)))
        .collect()
}

/// `POST /v1/traces` as an OpenTelemetry collector answers it: protobuf in, 200 out.
async fn receive(State(spans): State<Spans>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut got = spans.lock().expect("spans");
    for rs in request.resource_spans {
        let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    node: resource
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default(),
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    name: s.name,
                    trace: s.trace_id,
                    id: s.span_id,
                    parent: s.parent_span_id,
                    attrs: attrs(&s.attributes),
                });
            }
        }
    }
    StatusCode::OK
}

async fn receiver() -> (String, Spans) {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

async fn wait_ring(addr: std::net::SocketAddr, nodes: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = http_get(addr, "/v1/route?room=any").await;
        let r: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if r["nodes"] == nodes {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ring never reached {nodes}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, and the clean exit that flushes the exporter.
async fn stop(mut child: tokio::process::Child) {
    sigterm(&child);
    let exit = tokio::time::timeout(PATIENCE * 2, child.wait())
        .await
        .expect("exits in grace")
        .expect("wait");
    assert!(exit.success(), "clean exit: {exit:?}");
}

/// A client types "x" into text `t` of `room` on the node at `addr`, and another client of the
/// node sees it (so the node has applied it); both leave.
async fn type_x(addr: std::net::SocketAddr, room: &str) {
    let url = format!("ws://{addr}/ws/{room}");
    let c = chorus_protocol::client::Client::connect(&url, Default::default())
        .await
        .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    append(&c, "t", "x");
    let d = chorus_protocol::client::Client::connect(&url, Default::default())
        .await
        .expect("connect");
    wait_text(&[&d], "t", "x").await;
}

/// The one span of `node` named `name` whose parent is `parent`.
fn child_of<'a>(spans: &'a [Got], node: &str, name: &str, parent: &Got) -> Option<&'a Got> {
    spans.iter().find(|s| {
        s.node == node && s.name == name && s.parent == parent.id && s.trace == parent.trace
    })
}

#[tokio::test]
async fn one_updates_spans_link_from_the_socket_to_the_store_and_the_other_node() {
    let Some(_redis) = redis().await else { return };
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let (otlp, spans) = receiver().await;
    let prefix = unique_prefix("otlp");
    let traced = ["--otlp-endpoint", &otlp, "--otlp-sample-ratio", "1"];
    let (a, addr_a) = spawn_node(db.url(), &prefix, "node-a", &traced).await;
    let (b, addr_b) = spawn_node(db.url(), &prefix, "node-b", &traced).await;
    wait_ring(addr_a, 2).await;
    wait_ring(addr_b, 2).await;

    let opts = chorus_protocol::client::ClientOptions {
        ext: true,
        ..Default::default()
    };
    let writer =
        chorus_protocol::client::Client::connect(&format!("ws://{addr_a}/ws/traced"), opts)
            .await
            .expect("connect a");
    writer.synced(PATIENCE).await.expect("synced a");
    let reader = chorus_protocol::client::Client::connect(
        &format!("ws://{addr_b}/ws/traced"),
        Default::default(),
    )
    .await
    .expect("connect b");
    reader.synced(PATIENCE).await.expect("synced b");
    append(&writer, "t", "followed");
    wait_text(&[&reader], "t", "followed").await;
    // Stored: `saved` covers the SyncStep2 and the edit.
    writer
        .wait_for("saved", PATIENCE, |s, _| {
            s.events
                .iter()
                .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= 2))
        })
        .await
        .expect("saved");
    drop((writer, reader));
    stop(a).await;
    stop(b).await;

    // Each node flushed its spans at exit; wait for the path's last link to arrive.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let spans = loop {
        let got = spans.lock().expect("spans").clone();
        if got
            .iter()
            .any(|s| s.node == "node-b" && s.name == "remote_apply")
            && got
                .iter()
                .any(|s| s.node == "node-a" && s.name == "persist")
        {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the path never arrived whole: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names = |node: &str| -> Vec<&str> {
        spans
            .iter()
            .filter(|s| s.node == node)
            .map(|s| s.name.as_str())
            .collect()
    };
    assert!(spans.iter().all(|s| s.service == "chorus"), "{spans:#?}");

    // The writer's connection on A: a root, with what it is.
    let conn = spans
        .iter()
        .find(|s| {
            s.node == "node-a"
                && s.name == "connection"
                && s.attrs.get("tenant").map(String::as_str) == Some("default")
                && s.attrs.get("room").map(String::as_str) == Some("traced")
        })
        .unwrap_or_else(|| panic!("no connection span on A: {:?}", names("node-a")));
    assert!(conn.parent.is_empty(), "a connection is a root: {conn:?}");
    assert_eq!(
        conn.attrs.get("dialect").map(String::as_str),
        Some("y-websocket")
    );
    assert!(conn.attrs.contains_key("conn"), "{conn:?}");
    child_of(&spans, "node-a", "upgrade", conn).expect("upgrade inside the connection");
    child_of(&spans, "node-a", "join", conn).expect("join inside the connection");

    // Among its frames, the update whose apply was published and persisted.
    let (apply, publish, persist) = spans
        .iter()
        .filter(|s| s.node == "node-a" && s.name == "update" && s.parent == conn.id)
        .filter_map(|update| child_of(&spans, "node-a", "apply", update))
        .find_map(|apply| {
            Some((
                apply,
                child_of(&spans, "node-a", "publish", apply)?,
                child_of(&spans, "node-a", "persist", apply)?,
            ))
        })
        .unwrap_or_else(|| panic!("no update applied, published and persisted on A: {spans:#?}"));
    assert_eq!(persist.attrs.get("updates").map(String::as_str), Some("1"));
    assert_eq!(apply.trace, conn.trace, "one trace from the socket on");

    // Node B continues the trace: its apply is a child of A's publish.
    let remote = child_of(&spans, "node-b", "remote_apply", publish).unwrap_or_else(|| {
        panic!(
            "no remote_apply under A's publish on B: {:?}",
            names("node-b")
        )
    });
    assert_eq!(
        remote.attrs.get("origin").map(String::as_str),
        Some("node-a")
    );
    assert_eq!(remote.trace, conn.trace);

    // Each node's room is a root of its own.
    for n in ["node-a", "node-b"] {
        let room = spans
            .iter()
            .find(|s| s.node == n && s.name == "room")
            .unwrap_or_else(|| panic!("no room span on {n}: {:?}", names(n)));
        assert!(room.parent.is_empty());
        assert_eq!(room.attrs.get("room").map(String::as_str), Some("traced"));
    }
}

/// A connection the sampler refuses costs no per-update spans: beside a node that traces
/// everything (so the receiver is known to work), a node at ratio 0 exports nothing.
#[tokio::test]
async fn what_the_sampler_refuses_is_not_traced_at_all() {
    let (otlp, spans) = receiver().await;
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let mut nodes = Vec::new();
    for (dir, (id, ratio)) in dirs.iter().zip([("all", "1"), ("none", "0")]) {
        let data = dir.path().to_str().expect("path").to_string();
        let (child, addr) = spawn_chorus(&[
            "--data-dir",
            &data,
            "--allow-anonymous",
            "--node-id",
            id,
            "--otlp-endpoint",
            &otlp,
            "--otlp-sample-ratio",
            ratio,
        ])
        .await;
        type_x(addr, "sampled").await;
        nodes.push(child);
    }
    for child in nodes {
        stop(child).await;
    }
    let got = spans.lock().expect("spans").clone();
    let of = |node: &str| -> Vec<&str> {
        got.iter()
            .filter(|s| s.node == node)
            .map(|s| s.name.as_str())
            .collect()
    };
    for name in [
        "connection",
        "upgrade",
        "join",
        "update",
        "apply",
        "persist",
        "room",
    ] {
        assert!(
            of("all").contains(&name),
            "{name} missing at ratio 1: {:?}",
            of("all")
        );
    }
    assert!(of("none").is_empty(), "ratio 0 exported {:?}", of("none"));
}

/// A collector that cannot be reached is counted (`chorus_otlp_exports_total{result="failed"}`)
/// and the node serves on: spans are dropped, nothing waits for them.
#[tokio::test]
async fn failed_exports_are_counted_and_the_node_serves_on() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("path").to_string();
    let (child, addr) = spawn_chorus(&[
        "--data-dir",
        &data,
        "--allow-anonymous",
        "--otlp-endpoint",
        &format!("http://{dead}"),
        "--otlp-sample-ratio",
        "1",
    ])
    .await;
    type_x(addr, "unheard").await;
    // The batch processor exports every 5 s.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let failed = body
            .lines()
            .find_map(|l| l.strip_prefix("chorus_otlp_exports_total{result=\"failed\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if failed >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed export counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = chorus_protocol::client::Client::connect(
        &format!("ws://{addr}/ws/unheard"),
        Default::default(),
    )
    .await
    .expect("the node still serves");
    c.synced(PATIENCE).await.expect("synced");
    assert_eq!(text(&c, "t"), "x");
    stop(child).await;
}
