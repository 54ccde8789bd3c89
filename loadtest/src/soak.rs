//! `soak`: samples running hubs every few seconds while load runs beside it (`edit`, in
//! another process): their memory and CPU from /proc, and open rooms, connections and queue
//! depths from their /metrics. Writes every sample (CSV) and their curves (SVG), and judges
//! whether they stayed flat: a hub that leaks, or falls behind its queues, climbs.
//!
//! The sampler only reads: it sends no load, so a soak of a cluster is one `soak` with every
//! node's pid and metrics address, beside `edit` runs against the nodes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::proc;
use crate::report::Report;

/// What `soak` samples, how often and for how long.
#[derive(Debug, Clone, Serialize)]
pub struct SoakParams {
    /// The hubs' pids.
    pub pids: Vec<u32>,
    /// Their /metrics addresses (loopback, checked by the caller).
    pub metrics: Vec<String>,
    /// Time between samples.
    #[serde(serialize_with = "crate::report::seconds")]
    pub every: Duration,
    /// Sampling time.
    #[serde(serialize_with = "crate::report::seconds")]
    pub duration: Duration,
    /// Samples before this are left out of the verdict (connections opening, caches and
    /// allocator arenas filling).
    #[serde(serialize_with = "crate::report::seconds")]
    pub warmup: Duration,
    /// Where the samples go (CSV).
    pub csv: PathBuf,
    /// Where the curves go (SVG).
    pub svg: PathBuf,
}

/// One sample, summed over the hubs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the first sample.
    pub t: f64,
    /// Resident memory, bytes.
    pub rss: f64,
    /// CPU used since the previous sample, in cores (1.0: one core busy throughout).
    pub cpu: f64,
    /// Rooms loaded.
    pub rooms: f64,
    /// WebSocket connections open.
    pub connections: f64,
    /// Messages waiting in outbound queues.
    pub outbound: f64,
    /// Commands waiting in rooms' queues.
    pub commands: f64,
}

/// The series a sample holds: its CSV column and how the plot labels it.
const SERIES: [(&str, &str); 6] = [
    ("rss_bytes", "memory (RSS, MiB)"),
    ("cpu_cores", "CPU (cores)"),
    ("rooms", "rooms open"),
    ("connections", "connections"),
    ("outbound_messages", "outbound queue (messages)"),
    ("room_commands", "room queues (commands)"),
];

impl Sample {
    fn values(&self) -> [f64; 6] {
        [
            self.rss,
            self.cpu,
            self.rooms,
            self.connections,
            self.outbound,
            self.commands,
        ]
    }
}

/// The value of an unlabelled series `name` in a Prometheus text exposition.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Samples until `p.duration` has passed, then writes the CSV and the SVG and judges.
pub async fn soak(p: &SoakParams) -> Report {
    let mut report = Report::new("soak", serde_json::to_value(p).unwrap_or_default());
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        // A fresh connection per read: the hub closes an idle keep-alive connection after
        // `--header-read-timeout` (10 s), the default interval here, and a pooled connection
        // reused just as it closes fails the read (7 of 561 in the cluster soak).
        .pool_max_idle_per_host(0)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            report.problems.push(format!("no HTTP client: {e}"));
            return report;
        }
    };
    let start = Instant::now();
    let mut ticker = tokio::time::interval(p.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut last_cpu: Option<(f64, Instant)> = None;
    let mut unreadable = 0u32;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let t = now.duration_since(start).as_secs_f64();
        let mut s = Sample {
            t,
            ..Sample::default()
        };
        let mut cpu_total = 0.0;
        for pid in &p.pids {
            s.rss += proc::rss_bytes(*pid).unwrap_or(0) as f64;
            cpu_total += proc::cpu_seconds(&pid.to_string()).unwrap_or(0.0);
        }
        if let Some((before, at)) = last_cpu {
            s.cpu = (cpu_total - before) / now.duration_since(at).as_secs_f64().max(1e-3);
        }
        last_cpu = Some((cpu_total, now));
        for url in &p.metrics {
            let text = match http.get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let read = |name| gauge(&text, name);
            match (
                read("chorus_rooms_open"),
                read("chorus_connections_active"),
                read("chorus_outbound_queued_messages"),
                read("chorus_room_queued_commands"),
            ) {
                (Some(rooms), Some(conns), Some(outbound), Some(commands)) => {
                    s.rooms += rooms;
                    s.connections += conns;
                    s.outbound += outbound;
                    s.commands += commands;
                }
                _ => unreadable += 1,
            }
        }
        samples.push(s);
        if now.duration_since(start) >= p.duration {
            break;
        }
    }
    if unreadable > 0 {
        report.problems.push(format!(
            "{unreadable} reads of /metrics failed or lacked the gauges"
        ));
    }
    if let Err(e) = std::fs::write(&p.csv, csv(&samples)) {
        report
            .problems
            .push(format!("writing {}: {e}", p.csv.display()));
    }
    if let Err(e) = std::fs::write(&p.svg, svg(&samples)) {
        report
            .problems
            .push(format!("writing {}: {e}", p.svg.display()));
    }
    judge(&samples, p.warmup.as_secs_f64(), &mut report);
    report
}

/// The samples as CSV, one row each.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("t_s");
    for (col, _) in SERIES {
        out.push(',');
        out.push_str(col);
    }
    out.push('\n');
    for s in samples {
        let _ = write!(out, "{:.1}", s.t);
        for v in s.values() {
            let _ = write!(out, ",{v:.3}");
        }
        out.push('\n');
    }
    out
}

/// The curves, one panel per series, as a standalone SVG (no script, no external font).
pub fn svg(samples: &[Sample]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 150.0;
    const PAD: f64 = 40.0;
    let panels = SERIES.len() as f64;
    let height = panels * (H + PAD) + PAD;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        w = W + 2.0 * PAD
    );
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    for (i, (_, label)) in SERIES.iter().enumerate() {
        let top = PAD + i as f64 * (H + PAD);
        let scale = if i == 0 { 1.0 / (1024.0 * 1024.0) } else { 1.0 };
        let values: Vec<f64> = samples.iter().map(|s| s.values()[i] * scale).collect();
        let max = values.iter().copied().fold(0.0, f64::max);
        let y_max = if max > 0.0 { max * 1.1 } else { 1.0 };
        let _ = writeln!(
            out,
            "<text x=\"{PAD}\" y=\"{}\">{label}: last {:.2}, max {:.2}</text>",
            top - 8.0,
            values.last().copied().unwrap_or(0.0),
            max
        );
        let _ = writeln!(
            out,
            "<rect x=\"{PAD}\" y=\"{top}\" width=\"{W}\" height=\"{H}\" fill=\"none\" stroke=\"#999\"/>"
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0} s</text>",
            PAD - 4.0,
            top + 10.0,
            y_max,
            PAD - 4.0,
            top + H,
            PAD + W,
            top + H + 14.0,
            t_max
        );
        let points: Vec<String> = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| {
                format!(
                    "{:.1},{:.1}",
                    PAD + s.t / t_max * W,
                    top + H - v / y_max * H
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Judges the samples after `warmup` seconds: flat if the last third's mean memory stays
/// within 10 % of the first third's, and the queues' last third stays within twice the first
/// third's plus a little (queues hover near zero and jump with bursts). Figures go in the
/// report; a climb is a problem.
pub fn judge(samples: &[Sample], warmup: f64, report: &mut Report) {
    let kept: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    report
        .metrics
        .insert("samples".into(), samples.len() as f64);
    if kept.len() < 6 {
        report.problems.push(format!(
            "only {} samples after the warm-up: too few to judge",
            kept.len()
        ));
        return;
    }
    let third = kept.len() / 3;
    let mean = |part: &[&Sample], f: fn(&Sample) -> f64| {
        part.iter().map(|s| f(s)).sum::<f64>() / part.len() as f64
    };
    let (first, last) = (&kept[..third], &kept[kept.len() - third..]);
    let rss = (mean(first, |s| s.rss), mean(last, |s| s.rss));
    let growth = if rss.0 > 0.0 {
        (rss.1 - rss.0) / rss.0 * 100.0
    } else {
        0.0
    };
    let hours = (last[last.len() - 1].t - first[0].t).max(1.0) / 3600.0;
    let m = &mut report.metrics;
    m.insert("rss_first_third_mib".into(), rss.0 / 1048576.0);
    m.insert("rss_last_third_mib".into(), rss.1 / 1048576.0);
    m.insert("rss_growth_pct".into(), growth);
    m.insert(
        "rss_slope_mib_per_h".into(),
        (rss.1 - rss.0) / 1048576.0 / hours,
    );
    m.insert("cpu_mean_cores".into(), mean(&kept, |s| s.cpu));
    m.insert("connections_mean".into(), mean(&kept, |s| s.connections));
    m.insert("rooms_mean".into(), mean(&kept, |s| s.rooms));
    let queues = [
        (
            "outbound_messages",
            (|s: &Sample| s.outbound) as fn(&Sample) -> f64,
        ),
        ("room_commands", |s: &Sample| s.commands),
    ];
    for (name, f) in queues {
        let (a, b) = (mean(first, f), mean(last, f));
        let max = kept.iter().map(|s| f(s)).fold(0.0, f64::max);
        m.insert(format!("{name}_first_third_mean"), a);
        m.insert(format!("{name}_last_third_mean"), b);
        m.insert(format!("{name}_max"), max);
        if b > 2.0 * a + 100.0 {
            report.problems.push(format!(
                "{name} climbed: mean {a:.0} in the first third, {b:.0} in the last"
            ));
        }
    }
    if growth > 10.0 {
        report.problems.push(format!(
            "memory climbed: {:.0} MiB in the first third, {:.0} MiB in the last ({growth:+.1} %)",
            rss.0 / 1048576.0,
            rss.1 / 1048576.0
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rss: impl Fn(f64) -> f64, outbound: impl Fn(f64) -> f64) -> Report {
        let samples: Vec<Sample> = (0..60)
            .map(|i| {
                let t = f64::from(i) * 10.0;
                Sample {
                    t,
                    rss: rss(t),
                    cpu: 0.5,
                    rooms: 1000.0,
                    connections: 10_000.0,
                    outbound: outbound(t),
                    commands: 3.0,
                }
            })
            .collect();
        let mut r = Report::new("soak", serde_json::json!({}));
        judge(&samples, 60.0, &mut r);
        r
    }

    #[test]
    fn flat_curves_pass_and_climbing_ones_do_not() {
        let noisy = |t: f64| 500e6 + (t * 0.7).sin() * 5e6;
        let r = run(noisy, |t| (t % 30.0) * 3.0);
        assert!(r.passed(), "{:?}", r.problems);
        assert!(r.metrics["rss_growth_pct"].abs() < 2.0);
        // A leak of 1 MiB a second.
        let r = run(|t| 500e6 + t * 1048576.0, |_| 0.0);
        assert!(r.problems.iter().any(|p| p.contains("memory climbed")));
        // A queue the hub falls behind on.
        let r = run(noisy, |t| t * 10.0);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("outbound_messages climbed"))
        );
        // Too short to judge.
        let mut r = Report::new("soak", serde_json::json!({}));
        judge(&[Sample::default(); 3], 0.0, &mut r);
        assert!(!r.passed());
    }

    #[test]
    fn gauges_are_read_from_the_exposition_and_the_files_are_written() {
        let text = "# HELP chorus_rooms_open Rooms\n# TYPE chorus_rooms_open gauge\nchorus_rooms_open 12\nchorus_rooms_open_total 3\nchorus_connections_active 4.5\n";
        assert_eq!(gauge(text, "chorus_rooms_open"), Some(12.0));
        assert_eq!(gauge(text, "chorus_connections_active"), Some(4.5));
        assert_eq!(gauge(text, "chorus_outbound_queued_messages"), None);
        let samples = [
            Sample::default(),
            Sample {
                t: 10.0,
                rss: 2.0 * 1048576.0,
                ..Sample::default()
            },
        ];
        let csv = csv(&samples);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.starts_with("t_s,rss_bytes,cpu_cores,rooms,connections,"));
        let svg = svg(&samples);
        assert_eq!(svg.matches("<polyline").count(), SERIES.len());
        assert!(svg.contains("memory (RSS, MiB): last 2.00"));
    }
}
