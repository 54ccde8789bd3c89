//! `attack`: the attacks of the hardening review (issue 13) against one node, one phase each,
//! while a probe (a writer and an observer in a room of their own) keeps editing. Each phase is
//! bounded in time and in attackers and stops by itself. The report gives, per phase, the
//! probe's round-trip latency, how many probe edits did not arrive within 2 s (the node must
//! keep serving other rooms: any such edit is a failure), what the attack sent, and with
//! `--server-pid` the node's peak resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_protocol::awareness::Entry;
use chorus_protocol::lib0::write_var_uint;
use chorus_protocol::sync::Message;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{GetString, Map, MapPrelim, ReadTxn, Text, Transact};

use crate::human::thousands;
use crate::proc;
use crate::progress::Progress;
use crate::report::{Latency, Report, histogram};
use crate::scenario::Target;

/// `attack` parameters.
#[derive(Debug, Clone, Serialize)]
pub struct AttackParams {
    /// How long each phase lasts.
    #[serde(rename = "phase_s", serialize_with = "crate::report::seconds")]
    pub phase: Duration,
    /// Attacking connections per phase (slowloris opens ten times as many sockets).
    pub attackers: usize,
    /// Size of the document the floods ask for, in bytes.
    pub doc_bytes: usize,
}

/// The phases, in order: a quiet baseline first.
pub const PHASES: [&str; 6] = [
    "baseline",
    "deep_value",
    "deep_maps",
    "state_flood",
    "awareness_flood",
    "slowloris",
];

/// Runs every phase against `target` (y-websocket dialect).
pub async fn attack(target: &Target, p: &AttackParams) -> Report {
    let mut report = Report::of("attack", target, p);
    let (writer, observer) = match (target.connect_room(0).await, target.connect_room(0).await) {
        (Ok(w), Ok(o)) => (w, o),
        (Err(e), _) | (_, Err(e)) => {
            report
                .problems
                .push(format!("probe failed to connect: {e:#}"));
            return report;
        }
    };
    // The document the floods ask for (room 1).
    match target.connect_room(1).await {
        Ok(seed) => {
            let chunk = "lorem ipsum dolor sit amet ".repeat(400);
            let t = seed.doc().get_or_insert_text("t");
            let mut written = 0;
            while written < p.doc_bytes {
                let mut txn = seed.doc().transact_mut();
                let len = t.len(&txn);
                t.insert(&mut txn, len, &chunk);
                written += chunk.len();
            }
            // Let it arrive before the floods ask for it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            seed.close().await;
        }
        Err(e) => {
            report
                .problems
                .push(format!("seed failed to connect: {e:#}"));
            return report;
        }
    }
    let victim = target.room_url_for(1);
    for (n, phase) in PHASES.into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let bar = {
            let sent = sent.clone();
            Progress::timed(target.progress, phase, p.phase, move || {
                format!(
                    "phase {}/{}: {} attack messages",
                    n + 1,
                    PHASES.len(),
                    thousands(sent.load(Ordering::Relaxed))
                )
            })
        };
        let attackers: Vec<_> = (0..p.attackers)
            .map(|i| {
                let (url, stop, sent) = (victim.clone(), stop.clone(), sent.clone());
                let phase = phase.to_string();
                tokio::spawn(async move { run_attacker(&phase, i, &url, &stop, &sent).await })
            })
            .collect();
        let rss_peak = Arc::new(AtomicU64::new(0));
        let sampler = target.server_pid.map(|pid| {
            let (stop, peak) = (stop.clone(), rss_peak.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc::rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        let (latency, missed) = probe(&writer, &observer, p.phase).await;
        drop(bar);
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
        }
        if let Some(s) = sampler {
            let _ = s.await;
        }
        report
            .latency
            .insert(format!("probe_{phase}"), Latency::from_micros(&latency));
        report
            .metrics
            .insert(format!("{phase}_probe_missed"), missed as f64);
        report.metrics.insert(
            format!("{phase}_attack_messages"),
            sent.load(Ordering::Relaxed) as f64,
        );
        if target.server_pid.is_some() {
            report.metrics.insert(
                format!("{phase}_server_rss_peak_mib"),
                rss_peak.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
            );
        }
        if missed > 0 {
            report.problems.push(format!(
                "{phase}: {missed} probe edits did not arrive within 2 s"
            ));
        }
        if writer.closed().is_some() || observer.closed().is_some() {
            report
                .problems
                .push(format!("{phase}: the probe was disconnected"));
            break;
        }
    }
    report
}

/// Edits every 20 ms for `duration`; returns round trips (µs) and edits not seen in 2 s.
async fn probe(
    writer: &chorus_protocol::client::Client,
    observer: &chorus_protocol::client::Client,
    duration: Duration,
) -> (hdrhistogram::Histogram<u64>, u64) {
    let mut h = histogram();
    let mut missed = 0;
    let end = Instant::now() + duration;
    let text = writer.doc().get_or_insert_text("probe");
    let seen = observer.doc().get_or_insert_text("probe");
    while Instant::now() < end {
        let started = Instant::now();
        let want = {
            let mut txn = writer.doc().transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, "x");
            len + 1
        };
        let arrived = observer
            .wait_for("probe edit", Duration::from_secs(2), |_, doc| {
                seen.get_string(&doc.transact()).len() as u32 >= want
            })
            .await
            .is_ok();
        if arrived {
            let _ = h.record(started.elapsed().as_micros().max(1) as u64);
        } else {
            missed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (h, missed)
}

/// One attacker of `phase` until `stop`.
async fn run_attacker(phase: &str, i: usize, url: &str, stop: &AtomicBool, sent: &AtomicU64) {
    match phase {
        "deep_value" => {
            // The update that aborted the process: a value nested 6,500 arrays deep.
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                    break;
                };
                let frame = Message::Update(deep_value(6_500)).encode();
                if ws.send(WsMessage::Binary(frame)).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                // Read until the node closes it (4422).
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(m)) = ws.next().await {
                        if matches!(m, WsMessage::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        "deep_maps" => {
            // Y.Maps nested one level per update, past any sane depth.
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                    break;
                };
                let doc = yrs::Doc::with_client_id(1_000 + i as u64);
                let mut tip = doc.get_or_insert_map(format!("chain-{i}"));
                for _ in 0..200 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let before = doc.transact().state_vector();
                    tip = {
                        let mut txn = doc.transact_mut();
                        tip.insert(&mut txn, "k", MapPrelim::default())
                    };
                    let u = doc.transact().encode_state_as_update_v1(&before);
                    let frame = Message::Update(Bytes::from(u)).encode();
                    if ws.send(WsMessage::Binary(frame)).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ws.close(None).await;
            }
        }
        "state_flood" => {
            // Asks for the whole document (and all presence) 64 times a frame, never reads.
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            let mut sv = BytesMut::new();
            write_var_uint(&mut sv, 1);
            write_var_uint(&mut sv, 424_242 + i as u64);
            write_var_uint(&mut sv, 1);
            let sv = sv.freeze();
            let mut frame = BytesMut::new();
            for _ in 0..32 {
                Message::SyncStep1(sv.clone()).encode_into(&mut frame);
                Message::QueryAwareness.encode_into(&mut frame);
            }
            let frame = frame.freeze();
            while !stop.load(Ordering::Relaxed) {
                let res = tokio::time::timeout(
                    Duration::from_millis(500),
                    ws.send(WsMessage::Binary(frame.clone())),
                )
                .await;
                match res {
                    Ok(Ok(())) => {
                        sent.fetch_add(64, Ordering::Relaxed);
                    }
                    // Closed by the node (slow consumer, rate limit): come back.
                    Ok(Err(_)) => match tokio_tungstenite::connect_async(url).await {
                        Ok((w, _)) => ws = w,
                        Err(_) => break,
                    },
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        "awareness_flood" => {
            // Eight 60 KB states every 10 ms.
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            let state = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(60_000)));
            let mut clock = 0;
            while !stop.load(Ordering::Relaxed) {
                clock += 1;
                let entries: Vec<Entry> = (0..8)
                    .map(|k| Entry {
                        client_id: 5_000 + (i * 8 + k) as u64,
                        clock,
                        state: state.clone(),
                    })
                    .collect();
                let frame = Message::Awareness(chorus_protocol::awareness::encode_update(&entries))
                    .encode();
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    ws.send(WsMessage::Binary(frame)),
                )
                .await
                {
                    Ok(Ok(())) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => match tokio_tungstenite::connect_async(url).await {
                        Ok((w, _)) => ws = w,
                        Err(_) => break,
                    },
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        "slowloris" => {
            // Ten sockets each that send half a request line and wait.
            let Some(addr) = host_port(url) else { return };
            let mut held = Vec::new();
            for _ in 0..10 {
                if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await
                    && s.write_all(b"GET /healthz HT").await.is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                    held.push(s);
                }
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The review's crashing update: one value in root array `v` nested `d` arrays deep.
fn deep_value(d: usize) -> Bytes {
    Bytes::from(chorus_protocol::nesting::nested_value_update(7, "v", d))
}

/// `host:port` of a ws:// URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(rest.split('/').next()?.to_string())
}
