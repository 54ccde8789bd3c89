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

fn describe() {
    describe_counter!(
        "chorus_search_indexed_total",
        "Rooms indexed for search (each a whole room, after a debounced burst of edits)"
    );
    describe_counter!(
        "chorus_search_index_errors_total",
        "Indexings that failed (the room stays queued and is tried again)"
    );
    describe_counter!(
        "chorus_search_embedded_chunks_total",
        "Chunks embedded (changed text, or a new embedding model)"
    );
    describe_counter!(
        "chorus_search_embed_errors_total",
        "Embedding requests that failed or timed out"
    );
    describe_counter!(
        "chorus_search_embed_skipped_total",
        "Chunks left without an embedding because the tenant's daily AI tokens were used up"
    );
    describe_counter!(
        "chorus_search_queries_total",
        "Search queries answered, by mode"
    );
    describe_counter!(
        "chorus_search_refused_total",
        "Searches refused because too many were in progress (node or tenant)"
    );
    describe_counter!(
        "chorus_ai_tool_calls_total",
        "Functions the assistant's model called (search_documents)"
    );
    describe_gauge!(
        "chorus_search_queue_rooms",
        "Rooms in the search indexing queue (all nodes)"
    );
    describe_gauge!(
        "chorus_search_queue_due_rooms",
        "Queued rooms due for indexing now"
    );
    describe_gauge!(
        "chorus_search_vectors",
        "Chunk vectors in this node's vector index"
    );
    describe_gauge!(
        "chorus_search_vector_bytes",
        Unit::Bytes,
        "Estimated memory of this node's vector index"
    );
    describe_histogram!(
        "chorus_search_index_seconds",
        Unit::Seconds,
        "Time to index one room"
    );
    describe_histogram!(
        "chorus_search_embed_seconds",
        Unit::Seconds,
        "Time of one embeddings request"
    );
    describe_histogram!(
        "chorus_search_query_seconds",
        Unit::Seconds,
        "Time to answer a search"
    );
    describe_counter!("chorus_connections_total", "WebSocket connections accepted");
    describe_counter!(
        "chorus_ai_runs_total",
        "AI runs ended, by outcome (done, cancelled, failed, interrupted)"
    );
    describe_counter!(
        "chorus_ai_tokens_total",
        "AI tokens (kind=prompt|completion), reported by the provider or estimated"
    );
    describe_histogram!(
        "chorus_ai_first_token_seconds",
        Unit::Seconds,
        "time from asking the provider to the first token, retries included"
    );
    describe_gauge!(
        "chorus_ai_active_runs",
        "AI runs queued or executing on this node"
    );
    describe_counter!(
        "chorus_ai_handoffs_total",
        "cluster run hand-offs: runs handed to their room's home (run), a departed node's runs claimed by this node (claimed), queue entries dropped as foreign (dropped)"
    );
    describe_counter!(
        "chorus_ai_provider_errors_total",
        "provider failures (status, connection, stream, timeout) that ended a run"
    );
    describe_gauge!(
        "chorus_connections_active",
        "WebSocket connections open now"
    );
    describe_counter!(
        "chorus_connections_refused_total",
        Unit::Count,
        "connections refused, by reason: before the upgrade, or (no or bad token, room not granted, page not allowed) closed at once with 4401/4403"
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
        "chorus_edit_retries_total",
        "server edits retried after their room died before answering (applied once)"
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

/// Counters and the values of their label, if they have one: every series is published at
/// zero from the start, so a dashboard or an alert on a fresh node sees a series and not a
/// gap (`rate()` of a series that appears only at its first event misses that event).
const COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        "chorus_ai_handoffs_total",
        "kind",
        &["run", "claimed", "dropped"],
    ),
    ("chorus_ai_provider_errors_total", "", &[]),
    ("chorus_ai_tool_calls_total", "", &[]),
    (
        "chorus_ai_runs_total",
        "outcome",
        &["done", "cancelled", "failed", "interrupted"],
    ),
    ("chorus_ai_tokens_total", "kind", &["prompt", "completion"]),
    ("chorus_api_key_failures_cached_total", "", &[]),
    ("chorus_awareness_dropped_total", "", &[]),
    ("chorus_awareness_foreign_ids_total", "", &[]),
    ("chorus_bad_frames_total", "", &[]),
    ("chorus_bus_unsigned_dropped_total", "", &[]),
    ("chorus_catch_ups_total", "", &[]),
    ("chorus_compaction_failures_total", "", &[]),
    ("chorus_compactions_skipped_total", "", &[]),
    ("chorus_compactions_total", "", &[]),
    ("chorus_edit_retries_total", "", &[]),
    (
        "chorus_connections_refused_total",
        "reason",
        &[
            "bad_request",
            "connections",
            "deleted",
            "draining",
            "forbidden",
            "hocuspocus_auth",
            "origin",
            "preauth",
            "rooms",
            "store",
            "tenant_connections",
            "tenant_rooms",
            "unauthenticated",
        ],
    ),
    ("chorus_connections_total", "", &[]),
    ("chorus_drained_sessions_total", "", &[]),
    ("chorus_encodes_off_worker_total", "", &[]),
    ("chorus_hocuspocus_dropped_total", "", &[]),
    (
        "chorus_limit_rejections_total",
        "limit",
        &[
            "api_key_verifications",
            "auth_timeout",
            "document_bytes",
            "frame_bytes",
            "hocuspocus_opens",
            "messages_per_frame",
            "messages_per_second",
            "nesting_depth",
            "pending_connections",
            "tenant_room_share",
        ],
    ),
    ("chorus_messages_in_total", "", &[]),
    ("chorus_messages_out_total", "", &[]),
    (
        "chorus_nesting_refusals_total",
        "source",
        &["client", "remote", "store"],
    ),
    ("chorus_persist_errors_total", "", &[]),
    ("chorus_persisted_updates_total", "", &[]),
    ("chorus_redis_dropped_total", "", &[]),
    ("chorus_redis_publish_errors_total", "", &[]),
    ("chorus_redis_published_total", "", &[]),
    ("chorus_redis_received_total", "", &[]),
    ("chorus_redis_reconnects_total", "", &[]),
    (
        "chorus_replies_coalesced_total",
        "kind",
        &["state", "step1", "awareness"],
    ),
    ("chorus_replies_skipped_total", "", &[]),
    ("chorus_resyncs_total", "", &[]),
    ("chorus_room_load_failures_total", "", &[]),
    ("chorus_room_panics_total", "", &[]),
    ("chorus_search_embed_errors_total", "", &[]),
    ("chorus_search_embed_skipped_total", "", &[]),
    ("chorus_search_embedded_chunks_total", "", &[]),
    ("chorus_search_index_errors_total", "", &[]),
    ("chorus_search_indexed_total", "", &[]),
    ("chorus_search_refused_total", "", &[]),
    (
        "chorus_search_queries_total",
        "mode",
        &["text", "semantic", "hybrid"],
    ),
    ("chorus_sessions_expired_total", "", &[]),
    ("chorus_slow_consumer_closes_total", "", &[]),
    (
        "chorus_webhook_deliveries_total",
        "result",
        &["delivered", "retry", "failed", "filtered"],
    ),
];

/// Gauges (none has a label).
const GAUGES: &[&str] = &[
    "chorus_ai_active_runs",
    "chorus_cluster_nodes",
    "chorus_connections_active",
    "chorus_rooms_open",
    "chorus_search_queue_due_rooms",
    "chorus_search_queue_rooms",
    "chorus_search_vector_bytes",
    "chorus_search_vectors",
];

/// Histograms (none has a label).
const HISTOGRAMS: &[&str] = &[
    "chorus_ai_first_token_seconds",
    "chorus_fanout_seconds",
    "chorus_persist_batch_seconds",
    "chorus_redis_publish_seconds",
    "chorus_webhook_delivery_seconds",
    "chorus_search_embed_seconds",
    "chorus_search_index_seconds",
    "chorus_search_query_seconds",
];

fn publish_zeros() {
    for (name, label, values) in COUNTERS {
        if values.is_empty() {
            metrics::counter!(*name).increment(0);
        }
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for name in GAUGES {
        // Registers the series without touching a value another server of this process set.
        metrics::gauge!(*name).increment(0.0);
    }
    for name in HISTOGRAMS {
        // Registering is enough for the exporter to render empty buckets.
        let _ = metrics::histogram!(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the code records is in the lists above, so a new one cannot be forgotten:
    /// the sources are scanned for the recording macros and the names they are given.
    #[test]
    fn every_recorded_metric_is_published_at_zero() {
        let known: Vec<&str> = COUNTERS
            .iter()
            .map(|(n, _, _)| *n)
            .chain(GAUGES.iter().copied())
            .chain(HISTOGRAMS.iter().copied())
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
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
            // Unit tests (this one included) record nothing the server publishes.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(macro_name) {
                    // `describe_counter!(` is a description, not a recording.
                    if text[..at].ends_with("describe_") {
                        continue;
                    }
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                    else {
                        continue;
                    };
                    found += 1;
                    assert!(
                        known.contains(&name),
                        "{name} ({}) is not published at zero: add it to metrics.rs",
                        path.display()
                    );
                }
            }
        }
        assert!(found > 40, "the scan found only {found} recordings");
    }
}
