//! The Chorus load tester.
//!
//! - [`target`]: refuses any server address outside 127.0.0.0/8 and ::1 unless the user passes
//!   `--allow-remote`, so a typo cannot aim load at someone else's machine.
//! - [`scenario`]: the scenarios (`connect`, `edit`), each bounded in count and time and
//!   ending by itself, each producing a [`report::Report`].
//! - [`rooms`]: `presence` (many viewers moving cursors) and `join-storm` (many joiners of a
//!   large document at once).
//! - [`replay`]: plays back sessions the hub recorded with `--record-dir`.
//! - [`trace`]: replays real editing traces and checks every replica ends with the trace's text.
//! - [`report`]: HDR latency summaries, a human table and one JSON document per run.
//! - [`chaos`]: a cluster of its own (three nodes, PostgreSQL, Redis) under faults in turn;
//!   nothing acknowledged may be lost or duplicated.
//! - [`attack`]: the attacks of the hardening review against one node, phase by phase,
//!   while a probe keeps editing another room (the node must keep serving it).
//! - [`proc`]: the server's resident memory and CPU time from `/proc/PID`, and the load
//!   generator's own CPU time, so a reader can tell when the generator was the limit.
//!
//! Clients are the `chorus-protocol` client: real WebSockets, real yrs documents, 32-bit client
//! ids as browsers use.

pub mod ai;
pub mod attack;
pub mod auth;
pub mod chaos;
pub mod human;
pub mod proc;
pub mod progress;
pub mod replay;
pub mod report;
pub mod rooms;
pub mod scenario;
pub mod soak;
pub mod target;
pub mod trace;
pub mod workers;
