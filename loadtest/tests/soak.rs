//! The soak sampler against a real hub under a little load (its own process: the metrics
//! recorder is global, one hub per process reads its own gauges).

mod common;

use std::time::Duration;

use chorus_loadtest::scenario::{self, EditParams, Target};
use chorus_loadtest::soak::{SoakParams, soak};
use common::hub_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_samples_a_hub_under_load_and_writes_its_curves() {
    let hub = hub_with(|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut target = Target::new(&hub.url);
    target.room_prefix = "soak-".into();
    target.timeout = Duration::from_secs(20);
    let load = tokio::spawn(async move {
        scenario::edit(
            &target,
            &EditParams {
                users: 12,
                room_size: 4,
                rate: 10.0,
                duration: Duration::from_secs(3),
                doc_bytes: 0,
            },
        )
        .await
    });
    let metrics = hub
        .url
        .replace("ws://", "http://")
        .replace("/ws", "/metrics");
    let p = SoakParams {
        pids: vec![std::process::id()],
        metrics: vec![metrics],
        every: Duration::from_millis(200),
        duration: Duration::from_millis(2_500),
        warmup: Duration::ZERO,
        csv: dir.path().join("soak.csv"),
        svg: dir.path().join("soak.svg"),
    };
    let report = soak(&p).await;
    assert!(load.await.expect("load").passed());
    // Flat or not over two seconds says little; what is checked is that it read the hub.
    assert!(
        !report
            .problems
            .iter()
            .any(|p| p.contains("metrics") || p.contains("writing")),
        "{:?}",
        report.problems
    );
    assert!(report.metrics["samples"] >= 10.0, "{}", report.table());
    assert!(
        report.metrics["connections_mean"] > 0.0,
        "{}",
        report.table()
    );
    assert!(report.metrics["rooms_mean"] > 0.0, "{}", report.table());
    assert!(report.metrics["rss_first_third_mib"] > 1.0);
    let csv = std::fs::read_to_string(&p.csv).expect("csv");
    assert!(csv.lines().count() >= 11);
    let svg = std::fs::read_to_string(&p.svg).expect("svg");
    assert_eq!(svg.matches("<polyline").count(), 6);
}
