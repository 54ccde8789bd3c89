//! `trace`: replays a real editing trace (`*.json` or `*.json.gz` in the format of
//! josephg/editing-traces) through the hub, and at the end every replica's text must equal the
//! trace's `endContent` exactly.
//!
//! - Sequential traces: one writer per room applies every transaction to a Y.Text; observers in
//!   the same room receive it.
//! - Concurrent traces: one client per agent. Each transaction's positions refer to the text
//!   of exactly its parents' history, so the updates are made first, offline, each on its
//!   agent's own replica brought to that history ([`ConcurrentTrace::updates`]); then every
//!   agent's client applies its own transactions' updates in trace order and the hub merges
//!   them for everyone, observers included.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use yrs::{GetString, Text, Transact};

use crate::human::thousands;
use crate::progress::Progress;
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
        Trace::from_json(&read_maybe_gz(path)?)
    }

    fn from_json(json: &[u8]) -> anyhow::Result<Trace> {
        let trace: Trace = serde_json::from_slice(json)?;
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

/// One transaction of a concurrent trace.
#[derive(Debug, Clone, Deserialize)]
pub struct ConcurrentTxn {
    /// Indexes of earlier transactions whose merged result this one edits.
    pub parents: Vec<usize>,
    /// Who made it (0-based).
    pub agent: usize,
    /// The edits, positions relative to the parents' merged text.
    pub patches: Vec<(usize, usize, String)>,
}

/// A concurrent editing trace: several agents, merges at the parents.
#[derive(Debug, Clone, Deserialize)]
pub struct ConcurrentTrace {
    /// What every replica must hold once everything is merged.
    #[serde(rename = "endContent")]
    pub end: String,
    /// Agents (one client each).
    #[serde(rename = "numAgents")]
    pub agents: usize,
    /// Transactions in a causal order (parents come first).
    pub txns: Vec<ConcurrentTxn>,
}

/// Most agents a concurrent trace may have (one connection each).
const MAX_AGENTS: usize = 1000;

/// Yjs client id of an agent's offline replica. Concurrent inserts at one position are ordered
/// by client id, so ids follow agent numbers.
fn agent_client(agent: usize) -> u64 {
    agent as u64 + 1
}

impl ConcurrentTrace {
    /// One Yjs update per transaction, each made on its agent's own replica holding exactly
    /// the history of the transaction's parents. Also returns, per transaction, the clock its
    /// agent reached (so a replay can wait for "everything up to here").
    pub fn updates(&self) -> anyhow::Result<Vec<(Vec<u8>, u32)>> {
        use yrs::updates::decoder::Decode;
        use yrs::{ReadTxn, Update};
        anyhow::ensure!(
            (1..=MAX_AGENTS).contains(&self.agents),
            "numAgents must be 1..={MAX_AGENTS}"
        );
        let n = self.txns.len();
        let docs: Vec<yrs::Doc> = (0..self.agents)
            .map(|a| yrs::Doc::with_client_id(agent_client(a)))
            .collect();
        let texts: Vec<yrs::TextRef> = docs.iter().map(|d| d.get_or_insert_text("text")).collect();
        // has[agent][txn]: the agent's replica holds that transaction.
        let mut has = vec![vec![false; n]; self.agents];
        let mut out: Vec<(Vec<u8>, u32)> = Vec::with_capacity(n);
        for (i, t) in self.txns.iter().enumerate() {
            let a = t.agent;
            anyhow::ensure!(a < self.agents, "txn {i}: agent {a} out of range");
            anyhow::ensure!(
                t.parents.iter().all(|p| *p < i),
                "txn {i}: a parent does not come before it"
            );
            // The parents' history this replica lacks (a closed set: once a transaction is
            // held, so are its ancestors), applied in trace (causal) order.
            let mut missing = Vec::new();
            let mut stack = t.parents.clone();
            while let Some(p) = stack.pop() {
                if has[a][p] {
                    continue;
                }
                has[a][p] = true;
                missing.push(p);
                stack.extend(&self.txns[p].parents);
            }
            missing.sort_unstable();
            let doc = &docs[a];
            for m in missing {
                let u =
                    Update::decode_v1(&out[m].0).map_err(|e| anyhow::anyhow!("txn {m}: {e}"))?;
                doc.transact_mut()
                    .apply_update(u)
                    .map_err(|e| anyhow::anyhow!("txn {m}: {e}"))?;
            }
            let before = doc.transact().state_vector();
            {
                let mut txn = doc.transact_mut();
                for (pos, del, ins) in &t.patches {
                    let len = texts[a].len(&txn) as usize;
                    anyhow::ensure!(
                        pos + del <= len,
                        "txn {i}: patch at {pos}+{del} beyond the text's {len} bytes"
                    );
                    if *del > 0 {
                        texts[a].remove_range(&mut txn, *pos as u32, *del as u32);
                    }
                    if !ins.is_empty() {
                        texts[a].insert(&mut txn, *pos as u32, ins);
                    }
                }
            }
            let txn = doc.transact();
            let update = txn.encode_state_as_update_v1(&before);
            let clock = txn
                .state_vector()
                .get(&yrs::block::ClientID::new(agent_client(a)));
            has[a][i] = true;
            out.push((update, clock));
        }
        Ok(out)
    }

    /// Merges every transaction's update into a fresh document: the reference text.
    pub fn merge_locally(updates: &[(Vec<u8>, u32)]) -> anyhow::Result<String> {
        use yrs::updates::decoder::Decode;
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        for (u, _) in updates {
            let u = yrs::Update::decode_v1(u).map_err(|e| anyhow::anyhow!("{e}"))?;
            txn.apply_update(u).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(text.get_string(&txn))
    }
}

/// A trace file of either kind.
#[derive(Debug, Clone)]
pub enum AnyTrace {
    /// One writer.
    Sequential(Trace),
    /// Several agents.
    Concurrent(ConcurrentTrace),
}

impl AnyTrace {
    /// Reads a trace, telling the kinds apart by the `kind` field concurrent traces carry.
    pub fn load(path: &Path) -> anyhow::Result<AnyTrace> {
        let json = read_maybe_gz(path)?;
        let v: serde_json::Value = serde_json::from_slice(&json)?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("concurrent") {
            let t: ConcurrentTrace = serde_json::from_value(v)?;
            anyhow::ensure!(
                t.end.is_ascii(),
                "only the ASCII variants of the traces are supported (positions are byte offsets)"
            );
            Ok(AnyTrace::Concurrent(t))
        } else {
            Ok(AnyTrace::Sequential(Trace::from_json(&json)?))
        }
    }
}

fn read_maybe_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut s)?;
        Ok(s)
    } else {
        Ok(raw)
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
    let trace = match AnyTrace::load(&p.file) {
        Ok(AnyTrace::Sequential(t)) => std::sync::Arc::new(t),
        Ok(AnyTrace::Concurrent(t)) => return concurrent(target, p, &t, report).await,
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let bar = trace_bar(target, p, trace.txns.len(), &sent);
    let mut tasks = Vec::new();
    for room in 0..p.rooms.max(1) {
        let (target, trace, p, sent) = (target.clone(), trace.clone(), p.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            replay_room(&target, &trace, &p, room, &sent).await
        }));
    }
    gather(&mut report, tasks, started, trace.end.len()).await;
    drop(bar);
    report
}

/// A bar over every room's transactions: `sent` counts those whose batch the observers caught
/// up with.
fn trace_bar(target: &Target, p: &TraceParams, txns: usize, sent: &Arc<AtomicU64>) -> Progress {
    let sent = sent.clone();
    let rooms = p.rooms.max(1);
    let total = (txns * rooms) as u64;
    Progress::steps(target.progress, "trace", total, move || {
        let msg = if rooms > 1 {
            format!("transactions over {} rooms", thousands(rooms as u64))
        } else {
            "transactions".to_string()
        };
        (sent.load(Ordering::Relaxed), msg)
    })
}

/// The outcome of one room's replay: transactions sent and the observers' catch-up waits.
type RoomResult = anyhow::Result<(usize, hdrhistogram::Histogram<u64>)>;

/// Waits for every room's replay and records the totals and rates.
async fn gather(
    report: &mut Report,
    tasks: Vec<tokio::task::JoinHandle<RoomResult>>,
    started: Instant,
    end_bytes: usize,
) {
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
    let m = &mut report.metrics;
    m.insert("transactions".into(), txns as f64);
    m.insert("elapsed_s".into(), secs);
    m.insert("transactions_per_s".into(), txns as f64 / secs.max(1e-9));
    m.insert("end_content_bytes".into(), end_bytes as f64);
    report
        .latency
        .insert("batch_catch_up".into(), Latency::from_micros(&catch_up));
}

async fn replay_room(
    target: &Target,
    trace: &Trace,
    p: &TraceParams,
    room: usize,
    sent: &AtomicU64,
) -> RoomResult {
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
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
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

/// Replays a concurrent trace: its updates are made offline, then each room gets one client
/// per agent (applying its own transactions' updates in trace order) plus observers.
async fn concurrent(
    target: &Target,
    p: &TraceParams,
    trace: &ConcurrentTrace,
    mut report: Report,
) -> Report {
    let made = Instant::now();
    let offline = {
        let txns = trace.txns.len() as u64;
        Progress::spinner(target.progress, "offline", move || {
            format!("making the updates of {} transactions", thousands(txns))
        })
    };
    let updates = match trace.updates() {
        Ok(u) => std::sync::Arc::new(u),
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    drop(offline);
    report
        .metrics
        .insert("offline_s".into(), made.elapsed().as_secs_f64());
    // The trace itself must merge to its end text; otherwise the replay cannot be judged.
    match ConcurrentTrace::merge_locally(&updates) {
        Ok(text) if text == trace.end => {}
        Ok(text) => {
            report.problems.push(format!(
                "merged offline, the trace gives {} bytes, not its endContent's {}",
                text.len(),
                trace.end.len()
            ));
            return report;
        }
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    }
    let trace = std::sync::Arc::new(trace.clone());
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let bar = trace_bar(target, p, trace.txns.len(), &sent);
    let mut tasks = Vec::new();
    for room in 0..p.rooms.max(1) {
        let (target, trace, p, updates, sent) = (
            target.clone(),
            trace.clone(),
            p.clone(),
            updates.clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            replay_concurrent_room(&target, &trace, &updates, &p, room, &sent).await
        }));
    }
    report.metrics.insert("agents".into(), trace.agents as f64);
    gather(&mut report, tasks, started, trace.end.len()).await;
    drop(bar);
    report
}

async fn replay_concurrent_room(
    target: &Target,
    trace: &ConcurrentTrace,
    updates: &[(Vec<u8>, u32)],
    p: &TraceParams,
    room: usize,
    sent: &AtomicU64,
) -> RoomResult {
    let mut agents = Vec::with_capacity(trace.agents);
    for _ in 0..trace.agents {
        agents.push(target.connect_room(room).await?);
    }
    let mut observers = Vec::new();
    for _ in 0..p.observers {
        observers.push(target.connect_room(room).await?);
    }
    // Clock each agent reached so far: what observers must hold after each batch.
    let mut reached = vec![0u32; trace.agents];
    let mut waits = histogram();
    let indexed: Vec<usize> = (0..trace.txns.len()).collect();
    for chunk in indexed.chunks(p.batch.max(1)) {
        for &i in chunk {
            let a = trace.txns[i].agent;
            let (update, clock) = &updates[i];
            // Sent whole even if the other agents' transactions it builds on have not reached
            // this client yet: the hub orders it.
            agents[a]
                .send_update(update)
                .map_err(|e| anyhow::anyhow!("txn {i}: {e}"))?;
            reached[a] = reached[a].max(*clock);
        }
        let since = Instant::now();
        let want = reached.clone();
        for o in &observers {
            o.wait_for("observer catch-up", target.timeout, |_, doc| {
                let sv = yrs::ReadTxn::state_vector(&doc.transact());
                want.iter()
                    .enumerate()
                    .all(|(a, c)| sv.get(&yrs::block::ClientID::new(agent_client(a))) >= *c)
            })
            .await
            .map_err(|e| anyhow::anyhow!("room {room}: {e}"))?;
        }
        let _ = waits.record(since.elapsed().as_micros().max(1) as u64);
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let done =
        |doc: &yrs::Doc| doc.get_or_insert_text("text").get_string(&doc.transact()) == trace.end;
    let everyone = agents
        .iter()
        .map(|c| ("agent", c))
        .chain(observers.iter().map(|c| ("observer", c)));
    for (i, (who, c)) in everyone.enumerate() {
        let _ = c
            .wait_for("final text", target.timeout, |_, doc| done(doc))
            .await;
        let got = c
            .doc()
            .get_or_insert_text("text")
            .get_string(&c.doc().transact());
        anyhow::ensure!(
            got == trace.end,
            "room {room}: {who} {i} ended with {} bytes, the trace ends with {} bytes",
            got.len(),
            trace.end.len()
        );
    }
    Ok((trace.txns.len(), waits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(agent: usize, parents: &[usize], patches: &[(usize, usize, &str)]) -> ConcurrentTxn {
        ConcurrentTxn {
            parents: parents.to_vec(),
            agent,
            patches: patches
                .iter()
                .map(|(p, d, s)| (*p, *d, s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn concurrent_positions_refer_to_the_parents_history() {
        // 0: A writes "ab". 1 and 2 are concurrent on top of 0: A appends "X" at 2, B inserts
        // "Y" at 0 (B's replica holds only "ab", not A's "X"). 3: B, having merged both,
        // deletes the "a" at position 1 of "YabX".
        let t = ConcurrentTrace {
            end: "YbX".into(),
            agents: 2,
            txns: vec![
                txn(0, &[], &[(0, 0, "ab")]),
                txn(0, &[0], &[(2, 0, "X")]),
                txn(1, &[0], &[(0, 0, "Y")]),
                txn(1, &[1, 2], &[(1, 1, "")]),
            ],
        };
        let updates = t.updates().expect("updates");
        assert_eq!(
            ConcurrentTrace::merge_locally(&updates).expect("merge"),
            "YbX"
        );
    }

    #[test]
    fn bad_concurrent_traces_are_errors_not_panics() {
        let beyond = ConcurrentTrace {
            end: String::new(),
            agents: 1,
            txns: vec![txn(0, &[], &[(5, 1, "x")])],
        };
        assert!(beyond.updates().is_err());
        let future_parent = ConcurrentTrace {
            end: String::new(),
            agents: 1,
            txns: vec![txn(0, &[1], &[(0, 0, "x")])],
        };
        assert!(future_parent.updates().is_err());
        let bad_agent = ConcurrentTrace {
            end: String::new(),
            agents: 1,
            txns: vec![txn(3, &[], &[(0, 0, "x")])],
        };
        assert!(bad_agent.updates().is_err());
    }
}
