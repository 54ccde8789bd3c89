//! `chorus-search-bench`: search over a generated corpus (docs/BENCHMARKS.md, "Search").
//!
//! Writes `--rooms` rooms of distinct generated text through real WebSocket members (a Y.Text
//! root of 4-10 paragraphs each), waits until the hub has indexed them all (its
//! `/metrics`: the queue empty and every room indexed), then sends queries of each mode at
//! `--rate` per second for `--seconds` (open loop: a slow answer does not slow the sending) and
//! reports p50/p99, the vector index's size and the server's memory. Loopback only; bounded.
//!
//!   chorus-search-bench --hub http://127.0.0.1:18400 --token JWT --rooms 10000 --server-pid PID

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::ext::ServerMessage;
use clap::Parser;
use hdrhistogram::Histogram;
use yrs::{Text, Transact};

#[derive(Debug, Parser)]
#[command(name = "chorus-search-bench", about)]
struct Args {
    /// The hub's HTTP base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// A JWT granting every room (write), or none for a hub that allows anonymous access.
    #[arg(long, env = "CHORUS_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Rooms in the corpus.
    #[arg(long, default_value_t = 10_000)]
    rooms: usize,
    /// Members writing at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Queries per second in each mode.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds of queries per mode.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The hub's pid, for its memory (/proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Room name prefix.
    #[arg(long, default_value = "corpus/")]
    prefix: String,
    /// Edits timed from written to searchable.
    #[arg(long, default_value_t = 40)]
    probes: usize,
    /// Longest wait for the indexing to finish.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    patience: Duration,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "do", "fu", "ga", "hi", "jo", "ku", "la", "ma",
    "no", "pe", "qui", "ro", "si", "tu", "va", "we", "xo", "ya", "ze", "bra", "cle", "dri", "fro",
    "glu",
];
const COMMON: [&str; 24] = [
    "the", "team", "plan", "decided", "meeting", "next", "week", "review", "budget", "release",
    "customer", "notes", "design", "draft", "update", "risk", "owner", "date", "launch", "price",
    "report", "goal", "issue", "follow",
];

/// The corpus vocabulary: 32^3 syllable words (32,768), one word per index.
fn word(i: usize) -> String {
    let s = |k: usize| SYLLABLES[k % 32];
    format!("{}{}{}", s(i), s(i / 32), s(i / 1024))
}

/// Room `n`'s text: 4-10 paragraphs mixing its own three topic words, the vocabulary (skewed
/// towards frequent words) and common English words. Distinct per room.
fn room_text(n: usize) -> (String, [String; 3]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64).wrapping_mul(0x1000_0000_01b3) | 1);
    let topic = [
        word(rng.below(32_768)),
        word(rng.below(32_768)),
        word(rng.below(32_768)),
    ];
    let mut out = String::new();
    for p in 0..4 + rng.below(7) {
        if p > 0 {
            out.push('\n');
        }
        for s in 0..2 + rng.below(4) {
            if s > 0 {
                out.push(' ');
            }
            let len = 8 + rng.below(9);
            for w in 0..len {
                if w > 0 {
                    out.push(' ');
                }
                let pick = rng.below(10);
                let word = match pick {
                    0..=1 => topic[rng.below(3)].clone(),
                    2..=4 => COMMON[rng.below(COMMON.len())].to_owned(),
                    // Skewed: small indexes (frequent words) far more often.
                    _ => {
                        let r = rng.below(32_768);
                        word(r * r / 32_768)
                    }
                };
                out.push_str(&word);
            }
            out.push('.');
        }
    }
    (out, topic)
}

fn check_loopback(url: &str) -> anyhow::Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split([':', '/']).next())
        .unwrap_or("");
    if !(host.starts_with("127.") || host == "localhost" || host == "[::1]") {
        bail!("--hub must be a loopback address");
    }
    Ok(())
}

async fn metric(http: &reqwest::Client, hub: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{hub}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn write_room(ws: &str, token: Option<&str>, room: &str, text: &str) -> anyhow::Result<()> {
    let url = format!("{ws}/ws/{}", room.replace('/', "%2F"));
    let c = Client::connect(
        &url,
        ClientOptions {
            ext: true,
            token: token.map(str::to_owned),
            ..ClientOptions::default()
        },
    )
    .await
    .with_context(|| format!("connect {room}"))?;
    c.synced(Duration::from_secs(30)).await?;
    {
        let body = c.doc().get_or_insert_text("body");
        let mut txn = c.doc().transact_mut();
        body.insert(&mut txn, 0, text);
    }
    c.wait_for("saved", Duration::from_secs(60), |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= 1))
    })
    .await?;
    c.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check_loopback(&args.hub)?;
    let http = reqwest::Client::new();
    let ws = args.hub.replacen("http", "ws", 1);
    let token = args.token.clone();
    let base_indexed = metric(&http, &args.hub, "chorus_search_indexed_total").await?;
    let rss_before = rss_kib(args.server_pid);

    // 1. The corpus, written by real members.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, ws, token, prefix, rooms) = (
            next.clone(),
            ws.clone(),
            token.clone(),
            args.prefix.clone(),
            args.rooms,
        );
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= rooms {
                    return Ok::<(), anyhow::Error>(());
                }
                let (text, _) = room_text(n);
                write_room(&ws, token.as_deref(), &format!("{prefix}{n}"), &text).await?;
            }
        }));
    }
    for w in writers {
        w.await??;
    }
    let written = started.elapsed();
    eprintln!(
        "wrote {} rooms in {:.1} s",
        args.rooms,
        written.as_secs_f64()
    );

    // 2. Until every room is indexed.
    loop {
        let indexed = metric(&http, &args.hub, "chorus_search_indexed_total").await? - base_indexed;
        let queued = metric(&http, &args.hub, "chorus_search_queue_rooms").await?;
        if indexed >= args.rooms as f64 && queued == 0.0 {
            break;
        }
        if started.elapsed() > args.patience {
            bail!("indexing did not finish: {indexed} indexed, {queued} queued");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let indexed_after = started.elapsed();
    // The gauges are sampled every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let vectors = metric(&http, &args.hub, "chorus_search_vectors").await?;
    let vector_bytes = metric(&http, &args.hub, "chorus_search_vector_bytes").await?;
    let rss_after = rss_kib(args.server_pid);
    println!(
        "corpus: {} rooms, {vectors} chunks; written in {:.1} s, all indexed {:.1} s after the first write",
        args.rooms,
        written.as_secs_f64(),
        indexed_after.as_secs_f64()
    );
    if vectors > 0.0 {
        println!(
            "vector index: {:.0} MiB estimated, {:.0} MiB per 100,000 chunks",
            vector_bytes / 1_048_576.0,
            vector_bytes / vectors * 100_000.0 / 1_048_576.0
        );
    }
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!(
            "hub RSS: {} MiB before, {} MiB after ({:.0} MiB per 100,000 chunks, store caches included)",
            a / 1024,
            b / 1024,
            (b.saturating_sub(a)) as f64 / 1024.0 / vectors.max(1.0) * 100_000.0
        );
    }

    // 3. Edit to searchable: a new word written into a room of the corpus, then full-text
    //    queries every 50 ms until it is found; one probe at a time.
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut rng = Rng(0x5eed);
    for i in 0..args.probes {
        let n = rng.below(args.rooms);
        let marker = format!("probe{i}x{}", rng.next() % 1_000_000);
        let room = format!("{}{n}", args.prefix);
        let url = format!("{ws}/ws/{}", room.replace('/', "%2F"));
        let c = Client::connect(
            &url,
            ClientOptions {
                ext: true,
                token: token.clone(),
                ..ClientOptions::default()
            },
        )
        .await?;
        c.synced(Duration::from_secs(30)).await?;
        {
            let body = c.doc().get_or_insert_text("body");
            let mut txn = c.doc().transact_mut();
            body.push(&mut txn, &format!("\n{marker}"));
        }
        let written = Instant::now();
        loop {
            let mut req = http
                .get(format!("{}/v1/search", args.hub))
                .query(&[("q", marker.as_str()), ("mode", "text")]);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let body = req.send().await?.text().await?;
            if body.contains(&format!("\"room\":\"{room}\"")) {
                break;
            }
            if written.elapsed() > Duration::from_secs(60) {
                bail!("{marker} not searchable after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = lag.record(written.elapsed().as_millis() as u64);
        c.close().await;
    }
    println!(
        "edit to searchable ({} probes, one at a time, 50 ms polls): p50 {} ms, p95 {} ms, max {} ms",
        lag.len(),
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.95),
        lag.max()
    );

    // 4. Queries at a steady rate, each mode in turn.
    for mode in ["text", "semantic", "hybrid"] {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
        let total = u64::from(args.rate) * args.seconds;
        let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        let t0 = tokio::time::Instant::now();
        let mut rng = Rng(0xfeed_beef);
        for i in 0..total {
            tokio::time::sleep_until(t0 + gap * i as u32).await;
            let (_, topic) = room_text(rng.below(args.rooms));
            let q = format!("{} {}", topic[0], topic[1]);
            let url = format!("{}/v1/search", args.hub);
            let (http, tx, token) = (http.clone(), tx.clone(), token.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let mut req =
                    http.get(url)
                        .query(&[("q", q.as_str()), ("mode", mode), ("limit", "10")]);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let r = match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        Ok(sent.elapsed().as_micros() as u64)
                    }
                    Ok(res) => Err(format!("HTTP {}", res.status())),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(r);
            });
        }
        drop(tx);
        let mut errors = 0;
        while let Some(r) = rx.recv().await {
            match r {
                Ok(us) => {
                    let _ = hist.record(us.max(1));
                }
                Err(e) => {
                    if errors == 0 {
                        eprintln!("{mode}: {e}");
                    }
                    errors += 1;
                }
            }
        }
        println!(
            "{mode:8} {} queries at {}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {errors} errors",
            hist.len(),
            args.rate,
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_distinct_and_deterministic() {
        let texts: std::collections::HashSet<String> = (0..500).map(|n| room_text(n).0).collect();
        assert_eq!(texts.len(), 500);
        assert_eq!(room_text(7), room_text(7));
        let (text, topic) = room_text(42);
        assert!(topic.iter().any(|t| text.contains(t.as_str())));
    }
}
