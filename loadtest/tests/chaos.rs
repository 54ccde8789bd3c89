//! The chaos scenario, small: 2 rooms of 3 editing clients across three `chorus` processes on
//! their own PostgreSQL (from `initdb`) and `redis-server`, through a SIGKILL of a node, a Redis
//! restart, a PostgreSQL crash-restart and a fourth node joining. It never touches the
//! machine's shared services. Without `initdb` or `redis-server` it skips loudly, unless `CI`
//! is set: then it fails.

use std::path::PathBuf;
use std::time::Duration;

use chorus_loadtest::chaos::{ChaosParams, Fault, chaos, tools_missing};

/// The `chorus` binary `cargo test --workspace` built beside this test's directory
/// (`target/<profile>/chorus`; tests run from `target/<profile>/deps`).
fn chorus_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("chorus");
    bin.exists().then_some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_turn_lose_no_acknowledged_edit_and_duplicate_none() {
    if let Some(missing) = tools_missing() {
        chorus_persistence::testing::skip(&missing);
        return;
    }
    let Some(chorus_bin) = chorus_bin() else {
        chorus_persistence::testing::skip(
            "the chorus binary is not built beside the tests (cargo test --workspace builds it)",
        );
        return;
    };
    let report = chaos(&ChaosParams {
        chorus_bin,
        rooms: 2,
        clients_per_room: 3,
        rate: 5.0,
        settle: Duration::from_secs(3),
        faults: vec![Fault::Kill, Fault::Redis, Fault::Postgres, Fault::Join],
        patience: Duration::from_secs(30),
    })
    .await;
    assert!(report.passed(), "{}", report.table());
    let m = &report.metrics;
    // 6 clients at 5 edits/s for about 15 s: most of them acknowledged.
    assert!(m["edits_acked"] >= 100.0, "{}", report.table());
    assert_eq!(m["lost"], 0.0);
    assert_eq!(m["duplicated"], 0.0);
    // The kill moved some clients to other nodes.
    assert!(m["reconnects"] >= 1.0, "{}", report.table());
    // Every fault's stalls are reported, beside the baseline without one.
    assert!(m.contains_key("baseline_delivery_stall_s"));
    for fault in ["1_kill", "2_redis", "3_postgres", "4_join"] {
        for stall in ["delivery_stall_s", "save_stall_s", "reconnect_s"] {
            assert!(
                m.contains_key(&format!("fault_{fault}_{stall}")),
                "{}",
                report.table()
            );
        }
    }
    // PostgreSQL was down for a second: acknowledgements waited for it.
    assert!(
        m["fault_3_postgres_save_stall_s"] >= 0.5,
        "{}",
        report.table()
    );
}
