//! Prometheus metrics. One recorder per process (the `metrics` facade is global), shared by
//! every server a process runs (tests run several). No metric carries a per-room label: room
//! names are unbounded and would blow up the series count.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for every histogram: 50 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The process's metrics handle, installing the recorder on first use.
pub fn handle() -> PrometheusHandle {
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
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!("chorus_connections_total", "WebSocket connections accepted");
    describe_gauge!(
        "chorus_connections_active",
        "WebSocket connections open now"
    );
    describe_counter!(
        "chorus_connections_refused_total",
        Unit::Count,
        "upgrades refused before the WebSocket opened, by reason"
    );
    describe_gauge!("chorus_rooms_open", "rooms loaded in memory");
    describe_gauge!(
        "chorus_cluster_nodes",
        "live nodes in the ring as of the last heartbeat (cluster mode)"
    );
    describe_counter!(
        "chorus_messages_in_total",
        "binary frames received from clients"
    );
    describe_counter!("chorus_messages_out_total", "messages queued to clients");
    describe_histogram!(
        "chorus_fanout_seconds",
        Unit::Seconds,
        "time to queue one update to every member of its room"
    );
    describe_counter!(
        "chorus_slow_consumer_closes_total",
        "connections closed with 1013 because their send queue overflowed"
    );
    describe_counter!(
        "chorus_bad_frames_total",
        "frames refused as malformed or too large (connection closed)"
    );
    describe_counter!(
        "chorus_limit_rejections_total",
        "inputs refused by a configured limit, by limit"
    );
    describe_histogram!(
        "chorus_persist_batch_seconds",
        Unit::Seconds,
        "time to commit one group of update batches"
    );
    describe_counter!(
        "chorus_persisted_updates_total",
        "updates committed to the store"
    );
    describe_counter!(
        "chorus_persist_errors_total",
        "failed group commits (retried)"
    );
    describe_counter!("chorus_compactions_total", "log compactions completed");
    describe_counter!(
        "chorus_compactions_skipped_total",
        "compactions skipped: another node held the room's compaction lock"
    );
    describe_counter!(
        "chorus_redis_published_total",
        "bus messages published to other nodes"
    );
    describe_counter!(
        "chorus_redis_publish_errors_total",
        "bus messages that failed to publish or were dropped before it"
    );
    describe_histogram!(
        "chorus_redis_publish_seconds",
        Unit::Seconds,
        "one PUBLISH to Redis"
    );
    describe_counter!(
        "chorus_redis_received_total",
        "bus messages received from Redis"
    );
    describe_counter!(
        "chorus_redis_dropped_total",
        "bus messages dropped because their room's queue was full"
    );
    describe_counter!(
        "chorus_redis_reconnects_total",
        "bus reconnections or lags after which every room resyncs"
    );
    describe_counter!("chorus_resyncs_total", "sync requests rooms published");
    describe_counter!(
        "chorus_drained_sessions_total",
        "sessions open when the node began draining (closed with 1012)"
    );
    describe_counter!(
        "chorus_catch_ups_total",
        "rooms reloaded from the store after a node left the ring"
    );
    describe_counter!(
        "chorus_compaction_failures_total",
        "log compactions that failed"
    );
    describe_counter!(
        "chorus_room_load_failures_total",
        "rooms that failed to load from the store"
    );
    describe_counter!(
        "chorus_room_panics_total",
        "rooms restarted after yrs panicked on an update"
    );
}
