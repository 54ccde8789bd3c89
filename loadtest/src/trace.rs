//! `trace`: replays a real editing trace (`../shared/traces/sequential/*.json.gz`, from
//! josephg/editing-traces) through the hub: one writer per room applies every transaction to a
//! Y.Text, observers in the same room receive it, and at the end every replica's text must
//! equal the trace's `endContent` exactly.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use yrs::{GetString, Text, Transact};

use crate::report::{Latency, Report, histogram};
use crate::scenario::Target;

/// One recorded transaction: patches `(position, deleted, inserted)` applied in order.
#[derive(Debug, Clone, Deserialize)]
pub struct Txn {
    /// The edits of this transaction.
    pub patches: Vec<(usize, usize, String)>,
}

/// A sequential editing trace.
#[derive(Debug, Clone, Deserialize)]
pub struct Trace {
    /// Text before the first transaction (often empty).
    #[serde(rename = "startContent", default)]
    pub start: String,
    /// Text after the last one: what every replica must hold at the end.
    #[serde(rename = "endContent")]
    pub end: String,
    /// The transactions, in order.
    pub txns: Vec<Txn>,
}

impl Trace {
    /// Reads a gzipped (`.gz`) or plain JSON trace.
    pub fn load(path: &Path) -> anyhow::Result<Trace> {
        let raw = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let json = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut s)?;
            s
        } else {
            raw
        };
        let trace: Trace = serde_json::from_slice(&json)?;
        anyhow::ensure!(
            trace.start.is_ascii() && trace.end.is_ascii(),
            "only the ASCII variants of the traces are supported (positions are byte offsets)"
        );
        Ok(trace)
    }

    /// Applies the whole trace to a plain string: the reference the replay is checked against.
    pub fn replay_locally(&self) -> String {
        let mut s = self.start.clone();
        for t in &self.txns {
            for (pos, del, ins) in &t.patches {
                let end = (*pos + *del).min(s.len());
                s.replace_range((*pos).min(s.len())..end, ins);
            }
        }
        s
    }
}

/// Parameters of the `trace` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TraceParams {
    /// The trace file.
    pub file: PathBuf,
    /// Rooms replaying it at once (one writer each).
    pub rooms: usize,
    /// Observers per room besides the writer.
    pub observers: usize,
    /// Transactions sent between waits for the observers to catch up (flow control).
    pub batch: usize,
}

/// Runs the `trace` scenario.
pub async fn trace(target: &Target, p: &TraceParams) -> Report {
    let mut report = Report::of("trace", target, p);
    let trace = match Trace::load(&p.file) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for room in 0..p.rooms.max(1) {
        let (target, trace, p) = (target.clone(), trace.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            replay_room(&target, &trace, &p, room).await
        }));
    }
    let mut catch_up = histogram();
    let mut txns = 0usize;
    for t in tasks {
        match t.await {
            Ok(Ok((n, waits))) => {
                txns += n;
                let _ = catch_up.add(&waits);
            }
            Ok(Err(e)) => report.problems.push(format!("{e:#}")),
            Err(e) => report.problems.push(format!("task: {e}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    report.metrics.insert("transactions".into(), txns as f64);
    report.metrics.insert("seconds".into(), secs);
    report
        .metrics
        .insert("transactions_per_s".into(), txns as f64 / secs.max(1e-9));
    report
        .metrics
        .insert("end_content_bytes".into(), trace.end.len() as f64);
    report
        .latency
        .insert("batch_catch_up".into(), Latency::from_micros(&catch_up));
    report
}

async fn replay_room(
    target: &Target,
    trace: &Trace,
    p: &TraceParams,
    room: usize,
) -> anyhow::Result<(usize, hdrhistogram::Histogram<u64>)> {
    let writer = target.connect_room(room).await?;
    let mut observers = Vec::new();
    for _ in 0..p.observers {
        observers.push(target.connect_room(room).await?);
    }
    let text = writer.doc().get_or_insert_text("text");
    if !trace.start.is_empty() {
        text.insert(&mut writer.doc().transact_mut(), 0, &trace.start);
    }
    let mut waits = histogram();
    for chunk in trace.txns.chunks(p.batch.max(1)) {
        for t in chunk {
            let mut txn = writer.doc().transact_mut();
            for (pos, del, ins) in &t.patches {
                if *del > 0 {
                    text.remove_range(&mut txn, *pos as u32, *del as u32);
                }
                if !ins.is_empty() {
                    text.insert(&mut txn, *pos as u32, ins);
                }
            }
        }
        let want = text.len(&writer.doc().transact());
        let since = Instant::now();
        for o in &observers {
            o.wait_for("observer catch-up", target.timeout, |_, doc| {
                doc.get_or_insert_text("text").len(&doc.transact()) == want
            })
            .await
            .map_err(|e| anyhow::anyhow!("room {room}: {e}"))?;
        }
        let _ = waits.record(since.elapsed().as_micros().max(1) as u64);
    }
    // Every replica must hold exactly the trace's final text.
    let expect = |who: &str, doc: &yrs::Doc| -> anyhow::Result<()> {
        let got = doc.get_or_insert_text("text").get_string(&doc.transact());
        anyhow::ensure!(
            got == trace.end,
            "room {room}: {who} ended with {} bytes, the trace ends with {} bytes",
            got.len(),
            trace.end.len()
        );
        Ok(())
    };
    // Observers only stop changing once they hold everything: wait for the full text.
    for o in &observers {
        let _ = o
            .wait_for("final text", target.timeout, |_, doc| {
                doc.get_or_insert_text("text").get_string(&doc.transact()) == trace.end
            })
            .await;
    }
    expect("writer", writer.doc())?;
    for (i, o) in observers.iter().enumerate() {
        expect(&format!("observer {i}"), o.doc())?;
    }
    Ok((trace.txns.len(), waits))
}
