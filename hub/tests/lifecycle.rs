//! Slow consumers, graceful shutdown and the operator endpoints.

mod common;

use chorus_protocol::client::ClientOptions;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_others_are_unaffected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.send_queue_messages = 16;
    config.send_queue_bytes = 256 * 1024;
    let server = TestServer::start(config).await;
    let writer = server.client("slow").await;
    let reader = server.client("slow").await;

    // A raw socket that completes the handshake and then never reads. Its receive buffer is
    // pinned small: loopback autotuning would otherwise absorb tens of megabytes first.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let stream = sock.connect(server.addr).await.expect("connect");
    let (mut slow, _) = tokio_tungstenite::client_async(server.url("slow"), stream)
        .await
        .expect("handshake");
    assert_eq!(server.health_count("connections").await, 3);

    // Far more than the kernel's socket buffers plus the queue can hold.
    // Each burst (10 messages, 40 KiB) fits the queue, and the healthy reader catches up
    // before the next one, so only the reader that stopped reading can overflow.
    let chunk = "z".repeat(4 * 1024);
    let len_of = |doc: &yrs::Doc| {
        use yrs::{Text, Transact};
        doc.get_or_insert_text("t").len(&doc.transact())
    };
    let mut rounds = 0;
    while server.health_count("connections").await == 3 {
        for _ in 0..10 {
            append(&writer, "t", &chunk);
        }
        let target = len_of(writer.doc());
        reader
            .wait_for("reader caught up", PATIENCE, |_, doc| len_of(doc) == target)
            .await
            .expect("healthy reader keeps up");
        rounds += 1;
        assert!(rounds < 1000, "the slow consumer was never closed");
    }
    // The healthy reader got every update and stays connected.
    let expected = text(&writer, "t");
    wait_text(&[&reader], "t", &expected).await;
    assert!(reader.closed().is_none() && writer.closed().is_none());

    // The slow socket ends; if the close frame got through it says 1013.
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(msg) = slow.next().await {
            match msg {
                Ok(WsMessage::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("slow socket ends");
    if let Some(code) = ended {
        assert_eq!(code, 1013);
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("chorus_slow_consumer_closes_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_with_1012_and_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let mut clients = Vec::new();
    for room in ["s1", "s2", "s2"] {
        clients.push(server.client(room).await);
    }
    append(&clients[1], "t", "last words");
    wait_text(&[&clients[2]], "t", "last words").await;
    let addr = server.addr;
    server.stop().await.expect("run returns Ok");
    for c in &clients {
        assert_eq!(c.wait_closed(PATIENCE).await.expect("closed").0, 1012);
    }
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let server = TestServer::start(test_config(dir.path())).await;
    let c = server.client("s2").await;
    assert_eq!(text(&c, "t"), "last words");
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let c = server
        .client_with(
            "ops",
            ClientOptions {
                ext: true,
                ..Default::default()
            },
        )
        .await;
    append(&c, "t", "x");
    let (s, body) = server.get("/healthz").await;
    assert_eq!(s, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (s, body) = server.get("/readyz").await;
    assert_eq!(s, 200, "{body}");
    let c2 = server.client("ops").await;
    wait_text(&[&c2], "t", "x").await;
    let (s, body) = server.get("/metrics").await;
    assert_eq!(s, 200);
    for name in [
        "chorus_connections_active",
        "chorus_rooms_open",
        "chorus_messages_in_total",
        "chorus_messages_out_total",
        "chorus_fanout_seconds_bucket",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
    assert!(!body.contains("room=\""), "no per-room labels");
}

#[tokio::test]
async fn silent_peers_are_dropped_and_live_idle_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.ping_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await;
    // A live client that simply has nothing to say: it answers pings while reading.
    let idle = server.client("keepalive").await;
    // A dead peer: handshake done, then never reads (so never answers a ping).
    let (dead, _) = tokio_tungstenite::connect_async(server.url("keepalive"))
        .await
        .expect("connect");
    server.wait_health("connections", 1).await;
    drop(dead);
    // The idle but live client survived many ping intervals.
    assert!(idle.closed().is_none());
    let other = server.client("keepalive").await;
    append(&other, "t", "still here");
    wait_text(&[&idle], "t", "still here").await;
}

#[tokio::test]
async fn large_messages_arrive_in_fragments_no_larger_than_64_kib() {
    use bytes::Bytes;
    use chorus_protocol::sync::{Message, decode_frame};
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let writer = server.client("big").await;
    let text = "x".repeat(300_000);
    append(&writer, "t", &text);
    let probe = server.client("big").await;
    wait_text(&[&probe], "t", &text).await;
    // A client that refuses any frame over 70 KB: a 300 KB SyncStep2 sent as one frame
    // would fail it with a capacity error; sent in fragments it arrives whole.
    let config = WebSocketConfig::default()
        .max_frame_size(Some(70 << 10))
        .max_message_size(Some(16 << 20));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(server.url("big"), Some(config), true)
            .await
            .expect("connect");
    ws.send(WsMessage::Binary(
        Message::SyncStep1(Bytes::from_static(&[0])).encode(),
    ))
    .await
    .expect("send");
    let got = tokio::time::timeout(PATIENCE, async {
        while let Some(msg) = ws.next().await {
            let WsMessage::Binary(frame) = msg.expect("a frame within the limit") else {
                continue;
            };
            for m in decode_frame(frame) {
                if let Ok(Message::SyncStep2(update)) = m {
                    return update.len();
                }
            }
        }
        0
    })
    .await
    .expect("SyncStep2 in time");
    assert!(got > 300_000, "full state of {got} bytes");
    server.stop().await.expect("stop");
}

/// A fresh node publishes every series at zero before its first connection: dashboards and
/// alerts see a series, not a gap.
#[tokio::test]
async fn metrics_are_published_before_the_first_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "chorus_connections_total",
        "chorus_connections_active",
        "chorus_rooms_open",
        "chorus_connections_refused_total{reason=\"unauthenticated\"}",
        "chorus_limit_rejections_total{limit=\"nesting_depth\"}",
        "chorus_webhook_deliveries_total{result=\"failed\"}",
        "chorus_persisted_updates_total",
        "chorus_fanout_seconds",
        "chorus_redis_published_total",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    server.stop().await.expect("stop");
}
