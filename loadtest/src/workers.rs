//! Runs one scenario in several worker processes and merges their reports: one process can
//! hold only ~19,000 sockets here (20,000 open files), so larger runs are split.
//!
//! The parent re-runs its own executable with the same arguments plus `--worker-index` and
//! `--worker-count`; each worker serves whole rooms (`room % count == index`). Workers print
//! [`READY`] once connected and wait for a line on stdin, so every worker's timed phase starts
//! together and the parent reads the server's memory and CPU at the right moments; they print
//! [`DONE`] when their timed phase ends. Each writes its report (with HDR histograms) as JSON;
//! the parent sums the counters, merges the histograms and computes the server figures itself.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;

use crate::proc;
use crate::progress::Progress;
use crate::report::{Latency, Report};

/// What a worker prints once connected.
pub const READY: &str = "chorus-loadtest-worker-ready";
/// What a worker prints when its timed phase is over.
pub const DONE: &str = "chorus-loadtest-worker-done";

/// Flags the parent handles itself and does not pass on.
const PARENT_ONLY: [&str; 2] = ["--workers", "--json"];

/// The parent's arguments minus `PARENT_ONLY` (in `--flag value` or `--flag=value` form).
pub fn worker_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if PARENT_ONLY.contains(&a.as_str()) {
            skip_value = true;
            continue;
        }
        if PARENT_ONLY.iter().any(|f| a.starts_with(&format!("{f}="))) {
            continue;
        }
        out.push(a);
    }
    out
}

enum Event {
    Line(usize, String),
    Closed(usize),
}

/// Runs `count` workers of `scenario` and returns the merged report. `timed`: the length of
/// the scenario's timed phase (`--hold`, `--duration`), for the progress bar (`progress`:
/// whether to draw bars; the workers never do).
pub fn run(
    count: usize,
    server_pid: Option<u32>,
    scenario: &str,
    timed: Duration,
    progress: bool,
) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("own executable")?;
    let dir = tempfile_dir()?;
    let args = worker_args(std::env::args().skip(1));
    let cpu = |pid: Option<u32>| pid.and_then(|p| proc::cpu_seconds(&p.to_string()));
    let rss = |pid: Option<u32>| pid.and_then(proc::rss_bytes);
    let (rss_before, cpu_before) = (rss(server_pid), cpu(server_pid));

    let (tx, rx) = mpsc::channel();
    let mut children: Vec<Child> = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for index in 0..count {
        let json = dir.join(format!("worker-{index}.json"));
        let mut child = Command::new(&exe)
            .args(&args)
            .args(["--worker-index", &index.to_string()])
            .args(["--worker-count", &count.to_string()])
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(Event::Line(index, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed(index));
        });
        children.push(child);
        reports.push(json);
    }
    drop(tx);
    // Workers bound their own connecting and running; this bounds a worker that hangs.
    let patience = Duration::from_secs(3600);
    // Workers that printed the marker waited for, for the bar.
    let reached = Arc::new(AtomicU64::new(0));
    let wait_all = |marker: &str| -> anyhow::Result<()> {
        let mut seen = vec![false; count];
        reached.store(0, Ordering::Relaxed);
        while seen.iter().any(|s| !s) {
            match rx.recv_timeout(patience) {
                Ok(Event::Line(i, l)) if l == marker => {
                    seen[i] = true;
                    reached.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Line(..)) => {}
                Ok(Event::Closed(i)) if !seen[i] => {
                    anyhow::bail!("worker {i} exited before printing {marker}")
                }
                Ok(Event::Closed(_)) => {}
                Err(_) => anyhow::bail!("workers did not report {marker} in time"),
            }
        }
        Ok(())
    };
    let result = (|| {
        let bar = {
            let reached = reached.clone();
            Progress::spinner(progress, "connect", move || {
                format!(
                    "{} / {count} workers connected",
                    reached.load(Ordering::Relaxed)
                )
            })
        };
        wait_all(READY)?;
        drop(bar);
        let (rss_ready, cpu_ready) = (rss(server_pid), cpu(server_pid));
        let label = if scenario == "connect" {
            "hold"
        } else {
            scenario
        };
        let bar = Progress::timed(progress, label, timed, move || {
            format!("{count} worker processes")
        });
        for c in &mut children {
            if let Some(stdin) = c.stdin.as_mut() {
                stdin.write_all(b"go\n").context("release worker")?;
                stdin.flush().context("release worker")?;
            }
        }
        // `edit` workers say when their timed phase ends (then drain); `connect` workers hold
        // their sessions until they exit, so the bar lasts until then.
        let (timed_end, bar) = if scenario == "edit" {
            wait_all(DONE)?;
            drop(bar);
            let finishing = Progress::spinner(progress, "drain", || {
                "waiting for the workers' last deliveries and reports".to_string()
            });
            (cpu(server_pid), finishing)
        } else {
            (None, bar)
        };
        Ok::<_, anyhow::Error>((rss_ready, cpu_ready, timed_end, bar))
    })();
    let mut failed = Vec::new();
    for (i, mut c) in children.into_iter().enumerate() {
        if result.is_err() {
            let _ = c.kill();
        }
        let status = c.wait().context("wait for worker")?;
        // Exit code 1 means the worker's checks failed; its report says why.
        if !status.success() && status.code() != Some(1) {
            failed.push(format!("worker {i} failed: {status}"));
        }
    }
    let (rss_ready, cpu_ready, cpu_end, bar) = result?;
    drop(bar);
    let mut parts = Vec::with_capacity(count);
    for (i, path) in reports.iter().enumerate() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("worker {i} wrote no report"))?;
        parts.push(serde_json::from_str::<Report>(&text).context("worker report")?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut merged = merge(parts, count);
    merged.problems.extend(failed);
    // Server figures from the parent's own readings, over the whole fleet.
    let m = &mut merged.metrics;
    m.retain(|k, _| !k.starts_with("server_"));
    match scenario {
        "connect" => {
            let ok = m.get("sessions_ok").copied().unwrap_or(0.0);
            if let (Some(b), Some(a)) = (rss_before, rss_ready) {
                m.insert("server_rss_mib".into(), a as f64 / 1048576.0);
                if ok > 0.0 {
                    m.insert(
                        "server_bytes_per_connection".into(),
                        a.saturating_sub(b) as f64 / ok,
                    );
                }
            }
            if let (Some(b), Some(a)) = (cpu_before, cpu_ready)
                && ok > 0.0
            {
                m.insert("server_cpu_us_per_connection".into(), (a - b) * 1e6 / ok);
            }
        }
        "edit" => {
            let got = m.get("deliveries_received").copied().unwrap_or(0.0);
            if let (Some(b), Some(a)) = (cpu_ready, cpu_end) {
                m.insert("server_cpu_s".into(), a - b);
                if got > 0.0 {
                    m.insert("server_cpu_us_per_delivery".into(), (a - b) * 1e6 / got);
                }
                let edits = m.get("edits_sent").copied().unwrap_or(0.0);
                if edits > 0.0 {
                    m.insert("server_cpu_us_per_edit".into(), (a - b) * 1e6 / edits);
                }
            }
        }
        _ => {}
    }
    Ok(merged)
}

/// Sums counters, merges histograms, collects problems.
pub fn merge(parts: Vec<Report>, count: usize) -> Report {
    let mut it = parts.into_iter();
    let Some(mut out) = it.next() else {
        return Report::new("empty", serde_json::json!({}));
    };
    out.problems = out
        .problems
        .into_iter()
        .map(|p| format!("worker 0: {p}"))
        .collect();
    for (i, r) in it.enumerate() {
        for (k, v) in r.metrics {
            *out.metrics.entry(k).or_insert(0.0) += v;
        }
        for (k, h) in r.histograms.map {
            match out.histograms.map.get_mut(&k) {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    out.histograms.map.insert(k, h);
                }
            }
        }
        out.problems.extend(
            r.problems
                .into_iter()
                .map(|p| format!("worker {}: {p}", i + 1)),
        );
        if out.refused.is_none() {
            out.refused = r.refused;
        }
    }
    for (k, h) in &out.histograms.map {
        out.latency.insert(k.clone(), Latency::from_micros(h));
    }
    out.histograms.serialize = false;
    if let Some(t) = out.params.get_mut("target") {
        t["worker"] = serde_json::Value::Null;
        t["workers"] = serde_json::json!(count);
    }
    out
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("chorus-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("temp dir")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    #[test]
    fn parent_only_flags_are_stripped() {
        let args = [
            "edit",
            "--workers",
            "3",
            "--json=x.json",
            "--users",
            "9",
            "--json",
            "y",
        ]
        .map(String::from);
        assert_eq!(worker_args(args), ["edit", "--users", "9"]);
    }

    #[test]
    fn merge_sums_counters_and_histograms() {
        let part = |v: u64, lost: bool| {
            let mut r = Report::new("edit", serde_json::json!({ "target": {} }));
            r.metrics.insert("deliveries_received".into(), 10.0);
            r.metrics.insert("server_cpu_s".into(), 1.0);
            let mut h = histogram();
            h.record(v).expect("in range");
            r.histograms.insert("delivery".into(), h);
            if lost {
                r.problems.push("lost 1".into());
            }
            r
        };
        let mut refused = part(300, true);
        refused.refused = Some("pass --token".into());
        let m = merge(vec![part(100, false), refused], 2);
        assert_eq!(m.refused.as_deref(), Some("pass --token"));
        assert_eq!(m.metrics["deliveries_received"], 20.0);
        assert_eq!(m.latency["delivery"].count, 2);
        assert_eq!(m.latency["delivery"].max_ms, 0.3);
        assert_eq!(m.problems, ["worker 1: lost 1"]);
        assert_eq!(m.params["target"]["workers"], 2);
    }
}
