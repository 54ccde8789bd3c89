//! Prometheus metrics. One recorder per process (the `metrics` facade is global), shared by
//! every server a process runs (tests run several). The metrics themselves (names, kinds,
//! descriptions, label values) are in one table, `chorus_persistence::metric_names`, which
//! the store's own recordings use too.

use std::sync::OnceLock;

pub(crate) use chorus_persistence::metric_names as names;
use chorus_persistence::metric_names::Kind;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for every histogram: 50 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The process's metrics handle, installing the recorder on first use.
pub(crate) fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            publish_zeros();
            handle
        })
        .clone()
}

/// Describes every metric (name, unit, HELP text) from the one table.
fn describe() {
    for m in names::ALL {
        let (name, help) = (m.name, m.help);
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// Publishes every series at zero: dashboards and alerts see it before its first event.
fn publish_zeros() {
    for m in names::ALL {
        match m.kind {
            Kind::Counter if m.values.is_empty() => metrics::counter!(m.name).increment(0),
            Kind::Counter => {
                for value in m.values {
                    metrics::counter!(m.name, m.label => *value).increment(0);
                }
            }
            // Registers the series without touching a value another server of this process set.
            Kind::Gauge => metrics::gauge!(m.name).increment(0.0),
            // Registering is enough for the exporter to render empty buckets.
            Kind::Histogram => {
                let _ = metrics::histogram!(m.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every recording names its metric by a constant of the table (never a string), every
    /// constant is in the table once, and every metric is described.
    #[test]
    fn every_metric_is_a_described_constant_of_the_table() {
        let mut seen = std::collections::HashSet::new();
        for m in names::ALL {
            assert!(seen.insert(m.name), "{} is in the table twice", m.name);
            assert!(m.name.starts_with("chorus_"), "{}", m.name);
            assert!(m.help.len() > 10, "{} has no real description", m.name);
            assert_eq!(m.label.is_empty(), m.values.is_empty(), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let table = std::fs::read_to_string(root.join("../persistence/src/metric_names.rs"))
            .expect("read the table");
        let constants = table.matches("pub const ").count() - 1; // ALL itself
        assert_eq!(
            constants,
            names::ALL.len(),
            "a constant is missing from ALL"
        );
        let mut files = vec![root.join("src"), root.join("../persistence/src")];
        let mut found = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).expect("read dir") {
                    files.push(entry.expect("entry").path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // This test names the macros itself.
            let text = text.split("mod tests {").next().unwrap_or_default();
            for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    if text[..at].ends_with("describe_") || rest.starts_with("m.name") {
                        continue;
                    }
                    found += 1;
                    assert!(
                        !rest.starts_with('"'),
                        "{}: a metric named by a string; use a constant of metric_names",
                        path.display()
                    );
                }
            }
        }
        assert!(found > 40, "the scan found only {found} recordings");
    }

    /// The operators' dashboard shows every metric.
    #[test]
    fn the_grafana_dashboard_shows_every_metric() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dashboard =
            std::fs::read_to_string(root.join("../deploy/grafana/dashboards/chorus.json"))
                .expect("read the dashboard");
        for m in names::ALL {
            assert!(
                dashboard.contains(m.name),
                "{} is not on deploy/grafana/dashboards/chorus.json",
                m.name
            );
        }
    }
}
