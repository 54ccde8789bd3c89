//! Every metric a Chorus node publishes, in one place: its name as a constant (recordings use
//! the constants, never a string), its kind, unit, description and label values. The hub
//! describes each one from [`ALL`] and publishes every series at zero on start, so dashboards
//! and alerts see a series before its first event. No metric carries a per-room label: room
//! names are unbounded and would blow up the series count.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (latency buckets for `_seconds`).
    Histogram,
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name (one of the constants of this module).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit, where it has one beyond a count.
    pub unit: Option<Unit>,
    /// What it counts or measures (the Prometheus HELP text).
    pub help: &'static str,
    /// Its one label, or `""`.
    pub label: &'static str,
    /// The label's values (each published at zero).
    pub values: &'static [&'static str],
}

/// Cluster run hand-offs: runs handed to their room's home (run), a departed node's runs claimed by this node (claimed), queue entries dropped as foreign (dropped).
pub const AI_HANDOFFS_TOTAL: &str = "chorus_ai_handoffs_total";

/// Provider failures (status, connection, stream, timeout) that ended a run.
pub const AI_PROVIDER_ERRORS_TOTAL: &str = "chorus_ai_provider_errors_total";

/// Functions the assistant's model called (search_documents).
pub const AI_TOOL_CALLS_TOTAL: &str = "chorus_ai_tool_calls_total";

/// AI runs ended, by outcome (done, cancelled, failed, interrupted).
pub const AI_RUNS_TOTAL: &str = "chorus_ai_runs_total";

/// AI tokens (kind=prompt|completion), reported by the provider or estimated.
pub const AI_TOKENS_TOTAL: &str = "chorus_ai_tokens_total";

/// REST requests refused from the cache of recently failed API keys, without hashing the key again.
pub const API_KEY_FAILURES_CACHED_TOTAL: &str = "chorus_api_key_failures_cached_total";

/// Awareness updates dropped because their sender spent its awareness byte budget.
pub const AWARENESS_DROPPED_TOTAL: &str = "chorus_awareness_dropped_total";

/// Awareness updates from which entries of another user's client ids were removed.
pub const AWARENESS_FOREIGN_IDS_TOTAL: &str = "chorus_awareness_foreign_ids_total";

/// Frames refused as malformed or too large (connection closed).
pub const BAD_FRAMES_TOTAL: &str = "chorus_bad_frames_total";

/// Cluster bus messages dropped because their signature was missing or wrong.
pub const BUS_UNSIGNED_DROPPED_TOTAL: &str = "chorus_bus_unsigned_dropped_total";

/// Rooms reloaded from the store after a node left the ring.
pub const CATCH_UPS_TOTAL: &str = "chorus_catch_ups_total";

/// Log compactions that failed.
pub const COMPACTION_FAILURES_TOTAL: &str = "chorus_compaction_failures_total";

/// Compactions skipped: another node held the room's compaction lock.
pub const COMPACTIONS_SKIPPED_TOTAL: &str = "chorus_compactions_skipped_total";

/// Log compactions completed.
pub const COMPACTIONS_TOTAL: &str = "chorus_compactions_total";

/// Server edits retried after their room died before answering (applied once).
pub const EDIT_RETRIES_TOTAL: &str = "chorus_edit_retries_total";

/// Connections refused, by reason: before the upgrade, or (no or bad token, room not granted, page not allowed) closed at once with 4401/4403.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "chorus_connections_refused_total";

/// WebSocket connections accepted.
pub const CONNECTIONS_TOTAL: &str = "chorus_connections_total";

/// Sessions open when the node began draining (closed with 1012).
pub const DRAINED_SESSIONS_TOTAL: &str = "chorus_drained_sessions_total";

/// Whole-document encodes run on the blocking pool (large documents).
pub const ENCODES_OFF_WORKER_TOTAL: &str = "chorus_encodes_off_worker_total";

/// Hocuspocus messages dropped because they named a document the connection had not opened.
pub const HOCUSPOCUS_DROPPED_TOTAL: &str = "chorus_hocuspocus_dropped_total";

/// Inputs refused by a configured limit, by limit.
pub const LIMIT_REJECTIONS_TOTAL: &str = "chorus_limit_rejections_total";

/// Binary frames received from clients.
pub const MESSAGES_IN_TOTAL: &str = "chorus_messages_in_total";

/// Messages queued to clients.
pub const MESSAGES_OUT_TOTAL: &str = "chorus_messages_out_total";

/// Updates refused for nesting past the limit, by source (client, remote node, store).
pub const NESTING_REFUSALS_TOTAL: &str = "chorus_nesting_refusals_total";

/// Failed group commits (retried).
pub const PERSIST_ERRORS_TOTAL: &str = "chorus_persist_errors_total";

/// Updates committed to the store.
pub const PERSISTED_UPDATES_TOTAL: &str = "chorus_persisted_updates_total";

/// Bus messages dropped because their room's queue was full.
pub const REDIS_DROPPED_TOTAL: &str = "chorus_redis_dropped_total";

/// Bus messages that failed to publish or were dropped before it.
pub const REDIS_PUBLISH_ERRORS_TOTAL: &str = "chorus_redis_publish_errors_total";

/// Bus messages published to other nodes.
pub const REDIS_PUBLISHED_TOTAL: &str = "chorus_redis_published_total";

/// Bus messages received from Redis.
pub const REDIS_RECEIVED_TOTAL: &str = "chorus_redis_received_total";

/// Bus reconnections or lags after which every room resyncs.
pub const REDIS_RECONNECTS_TOTAL: &str = "chorus_redis_reconnects_total";

/// Replies replaced by a newer one still waiting in a member's queue, by kind.
pub const REPLIES_COALESCED_TOTAL: &str = "chorus_replies_coalesced_total";

/// Replies not sent because their member had left or was being closed.
pub const REPLIES_SKIPPED_TOTAL: &str = "chorus_replies_skipped_total";

/// Sync requests rooms published.
pub const RESYNCS_TOTAL: &str = "chorus_resyncs_total";

/// Rooms that failed to load from the store.
pub const ROOM_LOAD_FAILURES_TOTAL: &str = "chorus_room_load_failures_total";

/// Rooms restarted after yrs panicked on an update.
pub const ROOM_PANICS_TOTAL: &str = "chorus_room_panics_total";

/// Embedding requests that failed or timed out.
pub const SEARCH_EMBED_ERRORS_TOTAL: &str = "chorus_search_embed_errors_total";

/// Chunks left without an embedding because the tenant's daily AI tokens were used up.
pub const SEARCH_EMBED_SKIPPED_TOTAL: &str = "chorus_search_embed_skipped_total";

/// Chunks embedded (changed text, or a new embedding model).
pub const SEARCH_EMBEDDED_CHUNKS_TOTAL: &str = "chorus_search_embedded_chunks_total";

/// Indexings that failed (the room stays queued and is tried again).
pub const SEARCH_INDEX_ERRORS_TOTAL: &str = "chorus_search_index_errors_total";

/// Rooms indexed for search (each a whole room, after a debounced burst of edits), by where
/// the document was read: its live room on this node, or the store.
pub const SEARCH_INDEXED_TOTAL: &str = "chorus_search_indexed_total";

/// Searches refused because too many were in progress (node or tenant).
pub const SEARCH_REFUSED_TOTAL: &str = "chorus_search_refused_total";

/// Search queries answered, by mode.
pub const SEARCH_QUERIES_TOTAL: &str = "chorus_search_queries_total";

/// Sessions (or Hocuspocus documents) closed because their token expired or its key was revoked.
pub const SESSIONS_EXPIRED_TOTAL: &str = "chorus_sessions_expired_total";

/// Connections closed with 1013 because their send queue overflowed.
pub const SLOW_CONSUMER_CLOSES_TOTAL: &str = "chorus_slow_consumer_closes_total";

/// Webhook outbox events handled, by result (delivered, retry, failed, filtered).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "chorus_webhook_deliveries_total";

/// Batches of spans posted to `--otlp-endpoint`, by result (ok, failed).
pub const OTLP_EXPORTS_TOTAL: &str = "chorus_otlp_exports_total";

/// AI runs queued or executing on this node.
pub const AI_ACTIVE_RUNS: &str = "chorus_ai_active_runs";

/// Live nodes in the ring as of the last heartbeat (cluster mode).
pub const CLUSTER_NODES: &str = "chorus_cluster_nodes";

/// WebSocket connections open now.
pub const CONNECTIONS_ACTIVE: &str = "chorus_connections_active";

/// Rooms loaded in memory.
pub const ROOMS_OPEN: &str = "chorus_rooms_open";

/// Messages waiting in connections' outbound queues (read when /metrics is scraped).
pub const OUTBOUND_QUEUED_MESSAGES: &str = "chorus_outbound_queued_messages";

/// Bytes waiting in connections' outbound queues (read when /metrics is scraped).
pub const OUTBOUND_QUEUED_BYTES: &str = "chorus_outbound_queued_bytes";

/// Commands waiting in rooms' queues (read when /metrics is scraped).
pub const ROOM_QUEUED_COMMANDS: &str = "chorus_room_queued_commands";

/// Queued rooms due for indexing now.
pub const SEARCH_QUEUE_DUE_ROOMS: &str = "chorus_search_queue_due_rooms";

/// Rooms in the search indexing queue (all nodes).
pub const SEARCH_QUEUE_ROOMS: &str = "chorus_search_queue_rooms";

/// Estimated memory of this node's vector index.
pub const SEARCH_VECTOR_BYTES: &str = "chorus_search_vector_bytes";

/// Chunk vectors in this node's vector index.
pub const SEARCH_VECTORS: &str = "chorus_search_vectors";

/// Time from asking the provider to the first token, retries included.
pub const AI_FIRST_TOKEN_SECONDS: &str = "chorus_ai_first_token_seconds";

/// Time to queue one update to every member of its room.
pub const FANOUT_SECONDS: &str = "chorus_fanout_seconds";

/// Time to commit one group of update batches.
pub const PERSIST_BATCH_SECONDS: &str = "chorus_persist_batch_seconds";

/// One PUBLISH to Redis.
pub const REDIS_PUBLISH_SECONDS: &str = "chorus_redis_publish_seconds";

/// Time of one webhook request, to the response status or the failure.
pub const WEBHOOK_DELIVERY_SECONDS: &str = "chorus_webhook_delivery_seconds";

/// Time of one embeddings request.
pub const SEARCH_EMBED_SECONDS: &str = "chorus_search_embed_seconds";

/// Time to index one room.
pub const SEARCH_INDEX_SECONDS: &str = "chorus_search_index_seconds";

/// Time to answer a search.
pub const SEARCH_QUERY_SECONDS: &str = "chorus_search_query_seconds";

/// Every metric, described and published at zero by the hub.
pub const ALL: &[Metric] = &[
    Metric {
        name: AI_HANDOFFS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cluster run hand-offs: runs handed to their room's home (run), a departed node's runs claimed by this node (claimed), queue entries dropped as foreign (dropped)",
        label: "kind",
        values: &["run", "claimed", "dropped"],
    },
    Metric {
        name: AI_PROVIDER_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Provider failures (status, connection, stream, timeout) that ended a run",
        label: "",
        values: &[],
    },
    Metric {
        name: AI_TOOL_CALLS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Functions the assistant's model called (search_documents)",
        label: "",
        values: &[],
    },
    Metric {
        name: AI_RUNS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "AI runs ended, by outcome (done, cancelled, failed, interrupted)",
        label: "outcome",
        values: &["done", "cancelled", "failed", "interrupted"],
    },
    Metric {
        name: AI_TOKENS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "AI tokens (kind=prompt|completion), reported by the provider or estimated",
        label: "kind",
        values: &["prompt", "completion"],
    },
    Metric {
        name: API_KEY_FAILURES_CACHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "REST requests refused from the cache of recently failed API keys, without hashing the key again",
        label: "",
        values: &[],
    },
    Metric {
        name: AWARENESS_DROPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Awareness updates dropped because their sender spent its awareness byte budget",
        label: "",
        values: &[],
    },
    Metric {
        name: AWARENESS_FOREIGN_IDS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Awareness updates from which entries of another user's client ids were removed",
        label: "",
        values: &[],
    },
    Metric {
        name: BAD_FRAMES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Frames refused as malformed or too large (connection closed)",
        label: "",
        values: &[],
    },
    Metric {
        name: BUS_UNSIGNED_DROPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cluster bus messages dropped because their signature was missing or wrong",
        label: "",
        values: &[],
    },
    Metric {
        name: CATCH_UPS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Rooms reloaded from the store after a node left the ring",
        label: "",
        values: &[],
    },
    Metric {
        name: COMPACTION_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Log compactions that failed",
        label: "",
        values: &[],
    },
    Metric {
        name: COMPACTIONS_SKIPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Compactions skipped: another node held the room's compaction lock",
        label: "",
        values: &[],
    },
    Metric {
        name: COMPACTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Log compactions completed",
        label: "",
        values: &[],
    },
    Metric {
        name: EDIT_RETRIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Server edits retried after their room died before answering (applied once)",
        label: "",
        values: &[],
    },
    Metric {
        name: CONNECTIONS_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Connections refused, by reason: before the upgrade, or (no or bad token, room not granted, page not allowed) closed at once with 4401/4403",
        label: "reason",
        values: &[
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
    },
    Metric {
        name: CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "WebSocket connections accepted",
        label: "",
        values: &[],
    },
    Metric {
        name: DRAINED_SESSIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions open when the node began draining (closed with 1012)",
        label: "",
        values: &[],
    },
    Metric {
        name: ENCODES_OFF_WORKER_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Whole-document encodes run on the blocking pool (large documents)",
        label: "",
        values: &[],
    },
    Metric {
        name: HOCUSPOCUS_DROPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Hocuspocus messages dropped because they named a document the connection had not opened",
        label: "",
        values: &[],
    },
    Metric {
        name: LIMIT_REJECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Inputs refused by a configured limit, by limit",
        label: "limit",
        values: &[
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
    },
    Metric {
        name: MESSAGES_IN_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Binary frames received from clients",
        label: "",
        values: &[],
    },
    Metric {
        name: MESSAGES_OUT_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Messages queued to clients",
        label: "",
        values: &[],
    },
    Metric {
        name: NESTING_REFUSALS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Updates refused for nesting past the limit, by source (client, remote node, store)",
        label: "source",
        values: &["client", "remote", "store"],
    },
    Metric {
        name: PERSIST_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Failed group commits (retried)",
        label: "",
        values: &[],
    },
    Metric {
        name: PERSISTED_UPDATES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Updates committed to the store",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_DROPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bus messages dropped because their room's queue was full",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_PUBLISH_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bus messages that failed to publish or were dropped before it",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_PUBLISHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bus messages published to other nodes",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_RECEIVED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bus messages received from Redis",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_RECONNECTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bus reconnections or lags after which every room resyncs",
        label: "",
        values: &[],
    },
    Metric {
        name: REPLIES_COALESCED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Replies replaced by a newer one still waiting in a member's queue, by kind",
        label: "kind",
        values: &["state", "step1", "awareness"],
    },
    Metric {
        name: REPLIES_SKIPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Replies not sent because their member had left or was being closed",
        label: "",
        values: &[],
    },
    Metric {
        name: RESYNCS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Sync requests rooms published",
        label: "",
        values: &[],
    },
    Metric {
        name: ROOM_LOAD_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Rooms that failed to load from the store",
        label: "",
        values: &[],
    },
    Metric {
        name: ROOM_PANICS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Rooms restarted after yrs panicked on an update",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_EMBED_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Embedding requests that failed or timed out",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_EMBED_SKIPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Chunks left without an embedding because the tenant's daily AI tokens were used up",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_EMBEDDED_CHUNKS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Chunks embedded (changed text, or a new embedding model)",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_INDEX_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Indexings that failed (the room stays queued and is tried again)",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_INDEXED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Rooms indexed for search (each a whole room, after a debounced burst of edits), by where the document was read: its live room on this node (live) or the store (store)",
        label: "source",
        values: &["live", "store"],
    },
    Metric {
        name: SEARCH_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Searches refused because too many were in progress (node or tenant)",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_QUERIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Search queries answered, by mode",
        label: "mode",
        values: &["text", "semantic", "hybrid"],
    },
    Metric {
        name: SESSIONS_EXPIRED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions (or Hocuspocus documents) closed because their token expired or its key was revoked",
        label: "",
        values: &[],
    },
    Metric {
        name: SLOW_CONSUMER_CLOSES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Connections closed with 1013 because their send queue overflowed",
        label: "",
        values: &[],
    },
    Metric {
        name: OTLP_EXPORTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Batches of spans posted to --otlp-endpoint, by result (ok; failed: unreachable, timed out or not 2xx)",
        label: "result",
        values: &["ok", "failed"],
    },
    Metric {
        name: WEBHOOK_DELIVERIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Webhook outbox events handled, by result (delivered, retry, failed, filtered)",
        label: "result",
        values: &["delivered", "retry", "failed", "filtered"],
    },
    Metric {
        name: AI_ACTIVE_RUNS,
        kind: Kind::Gauge,
        unit: None,
        help: "AI runs queued or executing on this node",
        label: "",
        values: &[],
    },
    Metric {
        name: CLUSTER_NODES,
        kind: Kind::Gauge,
        unit: None,
        help: "Live nodes in the ring as of the last heartbeat (cluster mode)",
        label: "",
        values: &[],
    },
    Metric {
        name: CONNECTIONS_ACTIVE,
        kind: Kind::Gauge,
        unit: None,
        help: "WebSocket connections open now",
        label: "",
        values: &[],
    },
    Metric {
        name: ROOMS_OPEN,
        kind: Kind::Gauge,
        unit: None,
        help: "Rooms loaded in memory",
        label: "",
        values: &[],
    },
    Metric {
        name: OUTBOUND_QUEUED_MESSAGES,
        kind: Kind::Gauge,
        unit: None,
        help: "Messages waiting in connections' outbound queues (read when /metrics is scraped)",
        label: "",
        values: &[],
    },
    Metric {
        name: OUTBOUND_QUEUED_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes waiting in connections' outbound queues (read when /metrics is scraped)",
        label: "",
        values: &[],
    },
    Metric {
        name: ROOM_QUEUED_COMMANDS,
        kind: Kind::Gauge,
        unit: None,
        help: "Commands waiting in rooms' queues (read when /metrics is scraped)",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_QUEUE_DUE_ROOMS,
        kind: Kind::Gauge,
        unit: None,
        help: "Queued rooms due for indexing now",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_QUEUE_ROOMS,
        kind: Kind::Gauge,
        unit: None,
        help: "Rooms in the search indexing queue (all nodes)",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_VECTOR_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Estimated memory of this node's vector index",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_VECTORS,
        kind: Kind::Gauge,
        unit: None,
        help: "Chunk vectors in this node's vector index",
        label: "",
        values: &[],
    },
    Metric {
        name: AI_FIRST_TOKEN_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from asking the provider to the first token, retries included",
        label: "",
        values: &[],
    },
    Metric {
        name: FANOUT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to queue one update to every member of its room",
        label: "",
        values: &[],
    },
    Metric {
        name: PERSIST_BATCH_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to commit one group of update batches",
        label: "",
        values: &[],
    },
    Metric {
        name: REDIS_PUBLISH_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "One PUBLISH to Redis",
        label: "",
        values: &[],
    },
    Metric {
        name: WEBHOOK_DELIVERY_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time of one webhook request, to the response status or the failure",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_EMBED_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time of one embeddings request",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_INDEX_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to index one room",
        label: "",
        values: &[],
    },
    Metric {
        name: SEARCH_QUERY_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to answer a search",
        label: "",
        values: &[],
    },
];
