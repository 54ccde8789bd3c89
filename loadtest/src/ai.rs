//! `ai`: N concurrent assistant runs into N rooms of M members, beside people editing in the
//! same rooms. Reports how long a token takes from leaving the provider to reaching every
//! member, and people's edit latency without and with the runs, side by side in one run.
//!
//! The provider is the stand-in model server (not a model), started here on
//! `--standin-listen`; the hub must be started with `--ai-base-url http://<that>/v1
//! --ai-model standin`. Its tokens are `t<send time in µs> `, so each member reads when a
//! token left the provider from the text that reaches it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_ai_bridge::standin::{Behavior, StandIn};
use chorus_protocol::client::Client;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::types::map::MapEvent;
use yrs::types::{Delta, EntryChange, Event};
use yrs::{Any, DeepObservable, Observable, Out};

use crate::proc;
use crate::report::{Latency, Report, histogram};
use crate::scenario::{Target, edit_until, problems_from_failures};

/// `ai` parameters.
#[derive(Debug, Clone, Serialize)]
pub struct AiParams {
    /// Rooms, each with one run.
    pub runs: usize,
    /// Members per room (all observe; all edit).
    pub members: usize,
    /// Tokens per second of each run.
    pub tokens_per_second: f64,
    /// Tokens of each answer.
    pub tokens: usize,
    /// People's edits per second per member.
    pub edit_rate: f64,
    /// Length of each phase (edits alone, then edits with the runs).
    #[serde(rename = "phase_s", serialize_with = "crate::report::seconds")]
    pub phase: Duration,
    /// Where the stand-in listens.
    pub standin_listen: String,
    /// Who writes the answers.
    pub writer: Writer,
}

/// Who writes the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Writer {
    /// The hub's assistant, asked over REST (its stand-in provider runs here).
    Hub,
    /// One more client per room, writing what the assistant would.
    Clients,
}

/// How often the assistant commits (the hub's default `--ai-commit-interval`).
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// How often the assistant's cursor moves in awareness (the hub's `CURSOR_EVERY`).
const CURSOR_EVERY: Duration = Duration::from_millis(250);

/// Writes what a run would into room `c`'s chat: a message whose text grows by `tokens`
/// stamped tokens at `tps` (stamped when due, as the stand-in stamps them when it sends),
/// committed every [`COMMIT_EVERY`], with an awareness update every [`CURSOR_EVERY`].
async fn simulate_run(mut c: Client, tokens: usize, tps: f64) {
    use std::fmt::Write;
    use yrs::{Array, Map, MapPrelim, Text, TextPrelim, Transact};
    let doc = c.doc().clone();
    let chat = doc.get_or_insert_array("chat");
    let text = {
        let mut txn = doc.transact_mut();
        let message = chat.push_back(&mut txn, MapPrelim::default());
        message.insert(&mut txn, "role", "assistant");
        message.insert(&mut txn, "text", TextPrelim::new(""))
    };
    let start = Instant::now();
    let start_us = proc::now_micros();
    let mut written = 0usize;
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    let mut last_cursor = Instant::now();
    while written < tokens {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * tps) as usize).min(tokens);
        if due > written {
            let mut piece = String::new();
            for k in written..due {
                let stamp = start_us + (k as f64 / tps * 1e6) as u64;
                let _ = write!(piece, "t{stamp} ");
            }
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, &piece);
            written = due;
        }
        if last_cursor.elapsed() >= CURSOR_EVERY {
            last_cursor = Instant::now();
            let state = format!(r#"{{"ai":{{"status":"writing","written":{written}}}}}"#);
            let _ = c.set_awareness(&state);
        }
    }
    // Until the phase's members have it all; then the writer leaves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.close().await;
}

#[derive(Default)]
struct Shared {
    tokens: Mutex<Option<Histogram<u64>>>,
    edits: Mutex<Option<Histogram<u64>>>,
    tokens_received: AtomicU64,
    edits_received: AtomicU64,
}

fn record(h: &Mutex<Option<Histogram<u64>>>, micros: u64) {
    let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = h.as_mut() {
        let _ = h.record(micros.max(1));
    }
}

/// POSTs an ask for room `room` to the hub's REST API (anonymous, loopback).
async fn ask(http: &str, room: &str) -> anyhow::Result<()> {
    let body = r#"{"prompt":"load test","target":"chat"}"#;
    let req = format!(
        "POST /v1/rooms/{room}/ai/runs HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(http).await?;
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 201"),
        "the hub refused the ask: {}",
        text.lines().next().unwrap_or_default()
    );
    Ok(())
}

/// The `host:port` of the first WebSocket URL.
fn http_host(url: &str) -> String {
    let first = url.split(',').next().unwrap_or_default();
    let rest = first
        .trim_start_matches("ws://")
        .trim_start_matches("wss://");
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// Runs the `ai` scenario.
pub async fn ai(target: &Target, p: &AiParams) -> Report {
    let mut report = Report::of("ai", target, p);
    let standin = match tokio::net::TcpListener::bind(&p.standin_listen).await {
        Ok(l) => StandIn::serve(
            l,
            Behavior {
                stamped: Some(p.tokens),
                tokens_per_second: p.tokens_per_second,
                ..Behavior::default()
            },
        ),
        Err(e) => Err(e),
    };
    let standin = match standin {
        Ok(s) => s,
        Err(e) => {
            report
                .problems
                .push(format!("cannot listen on {}: {e}", p.standin_listen));
            return report;
        }
    };
    let members = p.members.max(1);
    let total = p.runs * members;
    let (clients, hist, failures) = target.connect_many("connect", total, |i| i / members).await;
    report
        .latency
        .insert("handshake_to_synced".into(), Latency::from_micros(&hist));
    problems_from_failures(target, &mut report, &failures);
    if target.refused().is_some() || clients.len() < total {
        standin.stop();
        return report;
    }
    // With `--writer clients`: one writer per room, connected now like the members.
    let mut writers = Vec::new();
    if p.writer == Writer::Clients {
        let (w, _, failures) = target.connect_many("writers", p.runs, |i| i).await;
        problems_from_failures(target, &mut report, &failures);
        if w.len() < p.runs {
            standin.stop();
            return report;
        }
        writers = w.into_iter().map(|(_, c)| c).collect();
    }
    let shared = Arc::new(Shared::default());
    for (i, c) in &clients {
        // People's edits: each member writes its key; the others' keys are deliveries.
        let own = i.to_string();
        let s = shared.clone();
        let map = c.doc().get_or_insert_map("loadtest");
        map.observe("loadtest", move |txn, e: &MapEvent| {
            let now = proc::now_micros();
            for (key, change) in e.keys(txn) {
                if **key == *own {
                    continue;
                }
                if let EntryChange::Inserted(Out::Any(Any::String(v)))
                | EntryChange::Updated(_, Out::Any(Any::String(v))) = change
                    && let Some(sent) = v.split(':').nth(1).and_then(|t| t.parse::<u64>().ok())
                {
                    s.edits_received.fetch_add(1, Ordering::Relaxed);
                    record(&s.edits, now.saturating_sub(sent));
                }
            }
        });
        // The assistant's tokens: every insert into a chat message's text.
        let s = shared.clone();
        let chat = c.doc().get_or_insert_array("chat");
        chat.observe_deep("loadtest", move |txn, events| {
            let now = proc::now_micros();
            for e in events.iter() {
                let Event::Text(t) = e else { continue };
                for d in t.delta(txn) {
                    let Delta::Inserted(Out::Any(Any::String(text)), _) = d else {
                        continue;
                    };
                    for token in text.split_whitespace() {
                        if let Some(sent) =
                            token.strip_prefix('t').and_then(|n| n.parse::<u64>().ok())
                        {
                            s.tokens_received.fetch_add(1, Ordering::Relaxed);
                            record(&s.tokens, now.saturating_sub(sent));
                        }
                    }
                }
            }
        });
    }
    let clients: Vec<(usize, Arc<Client>)> =
        clients.into_iter().map(|(i, c)| (i, Arc::new(c))).collect();
    let http = http_host(&target.url);
    let server_cpu = target.server_cpu_seconds();
    let mut edit_latency = HashMap::new();
    let mut edits_sent_total = 0u64;
    for phase in ["edit_without_ai", "edit_with_ai"] {
        let (gen_before, server_before) = (proc::cpu_seconds("self"), target.server_cpu_seconds());
        *shared.edits.lock().unwrap_or_else(|p| p.into_inner()) = Some(histogram());
        let (p_tokens, tps) = (p.tokens, p.tokens_per_second);
        if phase == "edit_with_ai" {
            *shared.tokens.lock().unwrap_or_else(|p| p.into_inner()) = Some(histogram());
            // Started one after another, as the hub's runs are (asked one by one), so that
            // their commits do not fall on the same ticks.
            let n = writers.len().max(1);
            for (k, c) in writers.drain(..).enumerate() {
                let delay = COMMIT_EVERY.mul_f64(k as f64 / n as f64);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    simulate_run(c, p_tokens, tps).await;
                });
            }
            for room in (0..p.runs).filter(|_| p.writer == Writer::Hub) {
                if let Err(e) = ask(&http, &target.room_name(room)).await {
                    report.problems.push(format!("room {room}: {e}"));
                    standin.stop();
                    return report;
                }
            }
        }
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = tokio::time::Instant::now() + p.phase;
        let period = Duration::from_secs_f64(1.0 / p.edit_rate.max(0.001));
        let mut tasks = Vec::new();
        for (n, (i, c)) in clients.iter().enumerate() {
            let (i, c, sent) = (*i, c.clone(), sent.clone());
            let offset = period.mul_f64((n % 1000) as f64 / 1000.0);
            tasks.push(tokio::spawn(edit_until(
                c,
                i,
                offset,
                period,
                deadline,
                move || {
                    sent.fetch_add(1, Ordering::Relaxed);
                },
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
        // The last edits' deliveries.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let h = shared
            .edits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(histogram);
        edit_latency.insert(phase, Latency::from_micros(&h));
        // Both processes' CPU per phase: on a 2-core machine the generator (members and the
        // stand-in) shares a core, and its load shows in the latencies it measures.
        let secs = p.phase.as_secs_f64() + 0.5;
        if let (Some(b), Some(a)) = (gen_before, proc::cpu_seconds("self")) {
            report
                .metrics
                .insert(format!("generator_cpu_share_{phase}"), (a - b) / secs);
        }
        if let (Some(b), Some(a)) = (server_before, target.server_cpu_seconds()) {
            report
                .metrics
                .insert(format!("server_cpu_share_{phase}"), (a - b) / secs);
        }
        report.histograms.insert(phase.into(), h);
        edits_sent_total += sent.load(Ordering::Relaxed);
    }
    // Every token to every member, or the timeout.
    let want = (p.runs * members * p.tokens) as u64;
    let end = Instant::now() + target.timeout;
    while shared.tokens_received.load(Ordering::Relaxed) < want && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = shared.tokens_received.load(Ordering::Relaxed);
    if got < want {
        report
            .problems
            .push(format!("{} of {want} token deliveries missing", want - got));
    }
    if let Some(h) = shared
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        report
            .latency
            .insert("token_to_member".into(), Latency::from_micros(&h));
        report.histograms.insert("token_to_member".into(), h);
    }
    for (name, l) in edit_latency {
        report.latency.insert(name.into(), l);
    }
    report
        .metrics
        .insert("token_deliveries_expected".into(), want as f64);
    report.metrics.insert("token_deliveries".into(), got as f64);
    report
        .metrics
        .insert("edits_sent".into(), edits_sent_total as f64);
    report.metrics.insert(
        "edit_deliveries".into(),
        shared.edits_received.load(Ordering::Relaxed) as f64,
    );
    if let (Some(b), Some(a)) = (server_cpu, target.server_cpu_seconds()) {
        report.metrics.insert("server_cpu_s".into(), a - b);
    }
    standin.stop();
    report
}
