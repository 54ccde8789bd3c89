//! Scenarios about one busy room: `presence` (many viewers moving their cursors) and
//! `join-storm` (many clients joining a large document at once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use yrs::{Text, Transact};

use crate::human::thousands;
use crate::proc;
use crate::progress::Progress;
use crate::report::{Latency, Report, histogram};
use crate::scenario::Target;

/// `presence`: V viewers in one room, each updating its awareness state at a rate.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceParams {
    /// Viewers in the room.
    pub viewers: usize,
    /// Awareness updates per second per viewer.
    pub rate: f64,
    /// How long viewers keep updating.
    #[serde(rename = "duration_s", serialize_with = "crate::report::seconds")]
    pub duration: Duration,
}

/// Runs the `presence` scenario: every state carries its send time; every other viewer records
/// the delay until it arrives. Every update must reach every other viewer.
pub async fn presence(target: &Target, p: &PresenceParams) -> Report {
    let mut report = Report::of("presence", target, p);
    let latency = Arc::new(Mutex::new(histogram()));
    let received = Arc::new(AtomicU64::new(0));
    let mut viewers = Vec::new();
    let connected = Arc::new(AtomicU64::new(0));
    let bar = {
        let connected = connected.clone();
        Progress::steps(target.progress, "connect", p.viewers as u64, move || {
            (
                connected.load(Ordering::Relaxed),
                "viewers connected".into(),
            )
        })
    };
    for _ in 0..p.viewers {
        match target.connect_room(0).await {
            Ok(c) => {
                viewers.push(c);
                connected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("viewer failed to connect: {e:#}"));
                return report;
            }
        }
    }
    drop(bar);
    for c in &viewers {
        let own = c.doc().client_id().get();
        let (latency, received) = (latency.clone(), received.clone());
        c.set_awareness_hook(Box::new(move |e| {
            if e.client_id == own || e.is_removal() {
                return;
            }
            // States look like {"cursor":N,"sent":MICROS}.
            let sent = serde_json::from_slice::<serde_json::Value>(&e.state)
                .ok()
                .and_then(|v| v["sent"].as_u64());
            if let Some(sent) = sent {
                received.fetch_add(1, Ordering::Relaxed);
                let _ = latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(proc::now_micros().saturating_sub(sent).max(1));
            }
        }));
    }
    let cpu_before = proc::cpu_seconds("self");
    let period = Duration::from_secs_f64(1.0 / p.rate.max(0.001));
    let deadline = tokio::time::Instant::now() + p.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let bar = {
        let (sent, received) = (sent.clone(), received.clone());
        Progress::timed(target.progress, "presence", p.duration, move || {
            format!(
                "{} updates sent, {} delivered",
                thousands(sent.load(Ordering::Relaxed)),
                thousands(received.load(Ordering::Relaxed))
            )
        })
    };
    let mut tasks = Vec::new();
    for (n, mut c) in viewers.into_iter().enumerate() {
        let sent = sent.clone();
        let offset = period.mul_f64((n % 997) as f64 / 997.0);
        tasks.push(tokio::spawn(async move {
            let mut tick = crate::scenario::ticker(offset, period);
            let mut cursor = 0u64;
            loop {
                tick.tick().await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                cursor += 1;
                let state = format!(r#"{{"cursor":{cursor},"sent":{}}}"#, proc::now_micros());
                if c.set_awareness(&state).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            c
        }));
    }
    let mut viewers = Vec::new();
    for t in tasks {
        if let Ok(c) = t.await {
            viewers.push(c);
        }
    }
    drop(bar);
    let n = viewers.len() as u64;
    let want = sent.load(Ordering::Relaxed) * n.saturating_sub(1);
    let drain = Instant::now() + target.timeout;
    let bar = crate::scenario::drain_bar(target, &received, want);
    while received.load(Ordering::Relaxed) < want && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(bar);
    let got = received.load(Ordering::Relaxed);
    if let (Some(b), Some(a)) = (cpu_before, proc::cpu_seconds("self")) {
        report.metrics.insert("generator_cpu_s".into(), a - b);
    }
    report
        .metrics
        .insert("updates_sent".into(), sent.load(Ordering::Relaxed) as f64);
    report
        .metrics
        .insert("deliveries_expected".into(), want as f64);
    report
        .metrics
        .insert("deliveries_received".into(), got as f64);
    let h = latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report
        .latency
        .insert("awareness".into(), Latency::from_micros(&h));
    if got != want {
        report.problems.push(format!(
            "awareness deliveries: expected {want}, received {got}"
        ));
    }
    drop(viewers);
    report
}

/// `join-storm`: grow one document to a size, then have many clients join it at once.
#[derive(Debug, Clone, Serialize)]
pub struct JoinStormParams {
    /// Document size to build first, in bytes of text.
    pub doc_bytes: usize,
    /// Clients joining at once.
    pub joiners: usize,
}

/// Runs the `join-storm` scenario: time from connect to holding the full document.
pub async fn join_storm(target: &Target, p: &JoinStormParams) -> Report {
    let mut report = Report::of("join-storm", target, p);
    let writer = match target.connect_room(0).await {
        Ok(c) => c,
        Err(e) => {
            report
                .problems
                .push(format!("writer failed to connect: {e:#}"));
            return report;
        }
    };
    // Build the document in 4 KiB edits, like a long editing session, then confirm the hub has
    // all of it (a fresh client sees the full length) before the storm.
    let doc_bytes = p.doc_bytes;
    let bar = Progress::spinner(target.progress, "build", move || {
        format!("a document of {} bytes", thousands(doc_bytes as u64))
    });
    let text = writer.doc().get_or_insert_text("text");
    let chunk = "lorem ipsum dolor sit amet, ".repeat(4096 / 28 + 1);
    let mut len = 0usize;
    while len < p.doc_bytes {
        let piece = &chunk[..chunk.len().min(p.doc_bytes - len)];
        text.insert(&mut writer.doc().transact_mut(), len as u32, piece);
        len += piece.len();
    }
    let want = len as u32;
    // A probe that decodes everything proves the hub holds the whole document and tells how
    // large its full state is.
    let full_state_bytes = match target.connect_room(0).await {
        Ok(probe) => {
            if probe
                .wait_for("document built", target.timeout, |_, doc| {
                    doc.get_or_insert_text("text").len(&doc.transact()) == want
                })
                .await
                .is_err()
            {
                report
                    .problems
                    .push("the hub never held the whole document".into());
                return report;
            }
            // Its SyncStep2 may predate the last edits; a fresh step 1 gets the full state.
            let fresh = match target.connect_room(0).await {
                Ok(c) => c,
                Err(e) => {
                    report.problems.push(format!("probe failed: {e:#}"));
                    return report;
                }
            };
            fresh.state().step2_bytes
        }
        Err(e) => {
            report.problems.push(format!("probe failed: {e:#}"));
            return report;
        }
    };
    // The full state holds the text itself, so it cannot be smaller.
    if full_state_bytes < len {
        report.problems.push(format!(
            "the hub's full state is {full_state_bytes} bytes, less than the {len} bytes of text"
        ));
        return report;
    }
    drop(bar);
    // Storing and compacting the new document is the build's work, not the storm's.
    crate::scenario::settle(target).await;
    let mut storm = target.clone();
    storm.concurrency = p.joiners.max(1);
    // Joiners only count what arrives: decoding 5 MB in each of hundreds of clients would
    // make the generator, not the hub, the limit.
    storm.skip_apply = true;
    let cpu_before = proc::cpu_seconds("self");
    let server_cpu = || target.server_cpu_seconds();
    let server_before = server_cpu();
    let (clients, hist, failures) = storm.connect_many("join", p.joiners, |_| 0).await;
    // Joiners still read every byte: with many joiners the generator, not the hub, may be the
    // limit, and these two numbers tell which.
    if let (Some(b), Some(a)) = (cpu_before, proc::cpu_seconds("self")) {
        report.metrics.insert("generator_cpu_s".into(), a - b);
    }
    if let (Some(b), Some(a)) = (server_before, target.server_cpu_seconds()) {
        report.metrics.insert("server_cpu_s".into(), a - b);
    }
    let short = clients
        .iter()
        .filter(|(_, c)| c.state().step2_bytes != full_state_bytes)
        .count();
    report.metrics.insert("doc_bytes".into(), len as f64);
    report
        .metrics
        .insert("full_state_bytes".into(), full_state_bytes as f64);
    report.metrics.insert("joined".into(), clients.len() as f64);
    report
        .latency
        .insert("join_to_full_state".into(), Latency::from_micros(&hist));
    if !failures.is_empty() {
        report.problems.push(format!(
            "{} joiners failed, e.g. {}",
            failures.len(),
            failures[0]
        ));
    }
    if short > 0 {
        report.problems.push(format!(
            "{short} joiners were synced without the full document"
        ));
    }
    report
}
