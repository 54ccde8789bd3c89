//! Results: latency summaries from HDR histograms, a human table (human units, see
//! [`crate::human`]), one JSON document (exact numbers, the unit in each key's name).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::human::{self, Unit};

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
            mean_ms: clean(h.mean() / 1000.0),
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
    /// Counters and rates, by name; the unit is in the name (see [`Unit::of`]): `*_s`
    /// seconds, `*_per_s` per second, `*_us_per_*` microseconds each, `*_mib` MiB, `*bytes*`
    /// bytes, anything else a count (an integer in JSON).
    #[serde(serialize_with = "serialize_metrics")]
    pub metrics: BTreeMap<String, f64>,
    /// Latency distributions, by name.
    pub latency: BTreeMap<String, Latency>,
    /// Correctness problems (lost deliveries, divergence, failures). Empty = passed.
    pub problems: Vec<String>,
    /// Set when the server refused the load tester's credentials (HTTP 401/403, close
    /// 4401/4403, Hocuspocus permission-denied): what to do about it. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refused: Option<String>,
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
            refused: None,
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

    /// A plain-text table for people: human units (`3.0 s`, `250 ms`, `1,234`, `72 KiB`); the
    /// JSON report keeps the exact numbers.
    pub fn table(&self) -> String {
        let mut out = format!("scenario: {}\n", self.scenario);
        match (self.params.get("scenario"), self.params.get("target")) {
            (Some(scenario), Some(target)) => {
                out.push_str(&format!("params:   {}\n", human_params(scenario)));
                out.push_str(&format!("target:   {}\n", human_params(target)));
            }
            _ => out.push_str(&format!("params:   {}\n", human_params(&self.params))),
        }
        out.push('\n');
        let width = self
            .metrics
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(20);
        for (k, v) in &self.metrics {
            let value = Unit::of(k).format(k, *v);
            out.push_str(&format!("  {k:<width$} {value:>14}\n"));
        }
        if !self.latency.is_empty() {
            let width = self
                .latency
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(0)
                .max(20);
            out.push_str(&format!(
                "\n  {:<width$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "latency", "count", "p50", "p90", "p99", "p99.9", "max"
            ));
            for (k, l) in &self.latency {
                let ms = |v: f64| {
                    if l.count == 0 {
                        "-".to_string()
                    } else {
                        human::duration(v / 1000.0)
                    }
                };
                out.push_str(&format!(
                    "  {k:<width$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                    human::thousands(l.count),
                    ms(l.p50_ms),
                    ms(l.p90_ms),
                    ms(l.p99_ms),
                    ms(l.p999_ms),
                    ms(l.max_ms)
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

/// Serializes a `Duration` as a number of seconds (fields named `*_s`).
pub fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Metrics as JSON: counts (and byte counts) that are whole numbers as integers, everything
/// else as the exact floating-point number; the unit is in the key ([`Unit::of`]).
fn serialize_metrics<S: serde::Serializer>(
    metrics: &BTreeMap<String, f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(metrics.len()))?;
    for (k, v) in metrics {
        let whole = v.fract() == 0.0 && v.abs() < 9e15;
        match Unit::of(k) {
            Unit::Count | Unit::Bytes if whole && *v >= 0.0 => {
                map.serialize_entry(k, &(*v as u64))?
            }
            Unit::Count | Unit::Bytes if whole => map.serialize_entry(k, &(*v as i64))?,
            _ => map.serialize_entry(k, &clean(*v))?,
        }
    }
    map.end()
}

/// `v` to 12 significant digits: drops the noise of float arithmetic (`0.04999999999999999`
/// for 5 clock ticks) while keeping far more precision than any measurement here has.
pub fn clean(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.11e}").parse().unwrap_or(v)
}

/// Parameters for people: `users 100, rate 5, duration 10 s, url ws://...`. Keys ending in
/// `_s` are seconds and lose the suffix; empty values are left out.
pub fn human_params(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| {
                !matches!(v, Value::Null) && v.as_array().is_none_or(|a| !a.is_empty())
            })
            .map(|(k, v)| match (k.strip_suffix("_s"), v.as_f64()) {
                (Some(name), Some(secs)) => format!("{name} {}", human::duration(secs)),
                // An id, not a quantity: no thousands separators.
                _ if k.ends_with("pid") => format!("{k} {v}"),
                _ if v.is_object() => format!("{k} ({})", human_params(v)),
                _ => format!("{k} {}", human_params(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(human_params).collect::<Vec<_>>().join(" "),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => human::thousands(n),
            (None, Some(f)) => format!("{f}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
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

    /// One line of `table` that starts with `name`, its words.
    fn row(table: &str, name: &str) -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_table_speaks_human_units() {
        #[derive(Serialize)]
        struct P {
            users: usize,
            #[serde(rename = "duration_s", serialize_with = "seconds")]
            duration: std::time::Duration,
        }
        let p = P {
            users: 12_000,
            duration: std::time::Duration::from_millis(2500),
        };
        let mut r = Report::of(
            "edit",
            &serde_json::json!({"timeout_s": 30.0, "server_pid": 12345, "worker": null}),
            &p,
        );
        r.metrics.insert("edits_sent".into(), 12_000.0);
        r.metrics.insert("elapsed_s".into(), 3.0);
        r.metrics.insert("generator_cpu_s".into(), 0.0);
        r.metrics.insert("server_cpu_s".into(), 0.00123);
        r.metrics.insert("deliveries_per_s".into(), 1234.56);
        r.metrics.insert("server_cpu_us_per_delivery".into(), 12.0);
        r.metrics
            .insert("server_bytes_per_connection".into(), 73_728.0);
        let mut h = histogram();
        for v in [12u64, 250_000, 3_000_000] {
            h.record(v).expect("in range");
        }
        r.latency
            .insert("delivery".into(), Latency::from_micros(&h));
        r.latency
            .insert("empty".into(), Latency::from_micros(&histogram()));
        let t = r.table();
        assert!(
            t.contains("params:   duration 2.5 s, users 12,000\n"),
            "{t}"
        );
        assert!(
            t.contains("target:   server_pid 12345, timeout 30 s\n"),
            "{t}"
        );
        assert_eq!(row(&t, "edits_sent"), ["edits_sent", "12,000"]);
        assert_eq!(row(&t, "elapsed_s"), ["elapsed_s", "3.0", "s"]);
        assert_eq!(
            row(&t, "generator_cpu_s"),
            ["generator_cpu_s", "<", "10", "ms"]
        );
        assert_eq!(row(&t, "server_cpu_s"), ["server_cpu_s", "1.23", "ms"]);
        assert_eq!(
            row(&t, "deliveries_per_s"),
            ["deliveries_per_s", "1,235", "/s"]
        );
        assert_eq!(
            row(&t, "server_cpu_us_per_delivery"),
            ["server_cpu_us_per_delivery", "12", "µs"]
        );
        assert_eq!(
            row(&t, "server_bytes_per_connection"),
            ["server_bytes_per_connection", "72", "KiB"]
        );
        // Latency cells: count, then p50 p90 p99 p99.9 max, each with its unit.
        let d = row(&t, "delivery");
        assert_eq!(d[1], "3");
        assert_eq!(&d[2..4], ["250", "ms"], "{t}");
        assert_eq!(&d[d.len() - 2..], ["3.0", "s"], "{t}");
        assert_eq!(row(&t, "empty")[1..], ["0", "-", "-", "-", "-", "-"]);
        assert!(!t.contains("nanos") && !t.contains(".000"), "{t}");
    }

    #[test]
    fn json_has_integer_counts_and_units_in_the_keys() {
        let mut r = Report::new("x", serde_json::json!({}));
        r.metrics.insert("sessions_ok".into(), 12.0);
        r.metrics.insert("doc_bytes".into(), 1_000_000.0);
        r.metrics.insert("server_cpu_s".into(), 0.07 - 0.02);
        r.metrics
            .insert("server_bytes_per_connection".into(), 1234.5);
        r.metrics.insert("deliveries_per_s".into(), 200.0);
        let json = serde_json::to_value(&r).expect("json");
        let m = &json["metrics"];
        assert!(m["sessions_ok"].is_u64(), "{m}");
        assert_eq!(m["sessions_ok"], 12);
        assert_eq!(m["doc_bytes"], 1_000_000);
        // Float noise (0.049999999999999996) is dropped; rates stay floats.
        assert_eq!(m["server_cpu_s"].as_f64(), Some(0.05));
        assert_eq!(m["server_bytes_per_connection"].as_f64(), Some(1234.5));
        assert!(m["deliveries_per_s"].is_f64(), "{m}");
        // Workers read reports back: integers parse into the f64 map.
        let back: Report = serde_json::from_value(json).expect("parse");
        assert_eq!(back.metrics["sessions_ok"], 12.0);
        assert!(back.refused.is_none());
    }

    #[test]
    fn params_durations_are_seconds_with_the_unit_in_the_key() {
        let p = crate::scenario::ConnectParams {
            sessions: 3,
            rooms: 1,
            hold: std::time::Duration::from_millis(1500),
        };
        let t = crate::scenario::Target::new("ws://127.0.0.1:1/ws");
        let r = Report::of("connect", &t, &p);
        assert_eq!(r.params["scenario"]["hold_s"], 1.5);
        assert_eq!(r.params["target"]["timeout_s"], 30.0);
        assert!(r.params["scenario"].get("hold").is_none());
    }
}
