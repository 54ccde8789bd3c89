//! Results: latency summaries from HDR histograms, a human table, one JSON document.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Percentiles and extremes, in milliseconds.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// A histogram of microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure would be a programming error.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|e| unreachable!("{e}"))
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            count: h.len(),
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// The outcome of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The parameters it ran with.
    pub params: serde_json::Value,
    /// Counters and rates, by name.
    pub metrics: BTreeMap<String, f64>,
    /// Latency distributions, by name.
    pub latency: BTreeMap<String, Latency>,
    /// Correctness problems (lost deliveries, divergence, failures). Empty = passed.
    pub problems: Vec<String>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str, params: serde_json::Value) -> Report {
        Report {
            scenario: scenario.to_string(),
            params,
            metrics: BTreeMap::new(),
            latency: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// An empty report recording the target and the scenario's parameters.
    pub fn of(scenario: &str, target: &impl Serialize, params: &impl Serialize) -> Report {
        Report::new(
            scenario,
            serde_json::json!({ "target": target, "scenario": params }),
        )
    }

    /// Whether every correctness check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A plain-text table for people.
    pub fn table(&self) -> String {
        let mut out = format!("scenario: {}\nparams:   {}\n\n", self.scenario, self.params);
        for (k, v) in &self.metrics {
            out.push_str(&format!("  {k:<32} {v:>14.3}\n"));
        }
        if !self.latency.is_empty() {
            out.push_str(&format!(
                "\n  {:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
            ));
            for (k, l) in &self.latency {
                out.push_str(&format!(
                    "  {k:<20} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                    l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                ));
            }
        }
        out.push_str(&if self.passed() {
            "\nresult: PASSED\n".to_string()
        } else {
            format!("\nresult: FAILED\n  - {}\n", self.problems.join("\n  - "))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_and_table() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).expect("in range");
        }
        let l = Latency::from_micros(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 5.0).abs() < 0.05, "{l:?}");
        let mut r = Report::new("x", serde_json::json!({"n": 1}));
        r.latency.insert("delivery".into(), l);
        r.metrics.insert("sent".into(), 3.0);
        assert!(r.table().contains("PASSED"));
        r.problems.push("lost 1".into());
        assert!(r.table().contains("FAILED"));
    }
}
