//! Results: latency summaries from HDR histograms, a human table, one JSON document.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Percentiles and extremes, in milliseconds.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    #[serde(default)]
    pub p95_ms: f64,
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
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// The outcome of one scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The histograms behind `latency` (microseconds), kept so worker processes' reports
    /// merge exactly; serialized (HDR V2, base64) only by workers.
    #[serde(skip_serializing_if = "Histograms::is_empty", default)]
    pub histograms: Histograms,
}

/// Named histograms that serialize as base64 HDR V2 blobs when `serialize` is on.
#[derive(Debug, Clone, Default)]
pub struct Histograms {
    /// The histograms.
    pub map: BTreeMap<String, Histogram<u64>>,
    /// Whether to include them in JSON (workers do; people do not need them).
    pub serialize: bool,
}

impl Histograms {
    fn is_empty(&self) -> bool {
        !self.serialize || self.map.is_empty()
    }

    /// Adds or replaces one.
    pub fn insert(&mut self, name: String, h: Histogram<u64>) {
        self.map.insert(name, h);
    }
}

impl Serialize for Histograms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        use hdrhistogram::serialization::{Serializer as _, V2Serializer};
        let mut out = BTreeMap::new();
        for (k, h) in &self.map {
            let mut buf = Vec::new();
            V2Serializer::new()
                .serialize(h, &mut buf)
                .map_err(serde::ser::Error::custom)?;
            out.insert(
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(buf),
            );
        }
        out.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histograms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        use hdrhistogram::serialization::Deserializer as HdrDeserializer;
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for (k, v) in raw {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(serde::de::Error::custom)?;
            let h: Histogram<u64> = HdrDeserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(serde::de::Error::custom)?;
            map.insert(k, h);
        }
        Ok(Histograms {
            map,
            serialize: true,
        })
    }
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
            histograms: Histograms::default(),
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
    fn histograms_survive_json_for_merging() {
        let mut r = Report::new("x", serde_json::json!({}));
        let mut h = histogram();
        for v in [5u64, 50, 500, 5000] {
            h.record(v).expect("in range");
        }
        r.histograms.insert("delivery".into(), h.clone());
        // Not serialized unless asked (workers ask).
        let plain = serde_json::to_value(&r).expect("json");
        assert!(plain.get("histograms").is_none());
        r.histograms.serialize = true;
        let json = serde_json::to_string(&r).expect("json");
        let back: Report = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.histograms.map.get("delivery"), Some(&h));
    }

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
