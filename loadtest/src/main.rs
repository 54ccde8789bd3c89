//! `chorus-loadtest`: parses flags, checks the target is loopback, runs one scenario (with
//! progress bars on stderr when it is a terminal), prints a table and optionally writes the
//! JSON report. Exits 1 if a correctness check failed, 2 on an error (a refused token, a bad
//! flag, an unreachable worker).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chorus_loadtest::scenario::{self, ConnectParams, Dialect, EditParams, Target, Worker};
use clap::{Args, Parser, Subcommand};

/// Load tester for Chorus and other y-websocket servers. Sends traffic only to loopback
/// addresses unless --allow-remote is given; every run is bounded and stops by itself.
#[derive(Debug, Parser)]
#[command(name = "chorus-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// Base WebSocket URL; rooms are appended, or replace `{room}` where the URL has it.
    /// Several separated by commas (the nodes of a cluster): connections take them in turn.
    /// Default: ws://127.0.0.1:8080/ws.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Token for a hub that refuses anonymous connections, sent as ?token= (Hocuspocus: in
    /// the auth message). A refusal (HTTP 401/403, close 4401/4403) ends the run with advice.
    /// Default: none.
    #[arg(
        long,
        global = true,
        env = "CHORUS_LOADTEST_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Allow a target outside 127.0.0.0/8 and ::1. Default: false.
    #[arg(long, global = true)]
    allow_remote: bool,
    /// Prefix of room names. Default: lt-<pid>-.
    #[arg(long, global = true)]
    room_prefix: Option<String>,
    /// Most handshakes in flight at once. Default: 200.
    #[arg(long, global = true, default_value_t = 200)]
    concurrency: usize,
    /// Patience for a handshake and for the final drain. Default: 30s.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Server pid, to report its memory and CPU from /proc. Default: none.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Also write the report as JSON to this file; `-` writes it to stdout instead of the
    /// table. Default: none.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// No progress bars (they are drawn on stderr only when it is a terminal). Default: false.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Wire dialect. Default: y-websocket (URL + /room); hocuspocus takes the server's
    /// endpoint as --url and sends rooms as document names.
    #[arg(long, global = true, value_enum, default_value_t = Dialect::YWebsocket)]
    dialect: Dialect,
    /// With several comma-separated URLs, which node a client goes to: `spread` gives
    /// client i node i modulo the node count (a room's members on every node: most
    /// deliveries cross Redis), `room` gives every member of room r node r modulo the node
    /// count (what a load balancer hashing the room name does). Default: spread.
    #[arg(long, global = true, value_enum, default_value_t = Placement::Spread)]
    placement: Placement,
    /// Spread connections over source addresses 127.0.0.1 ... 127.0.0.N (each pair of
    /// addresses has ~28k ports). Default: one per 25,000 clients.
    #[arg(long, global = true)]
    sources: Option<u8>,
    /// Worker processes for `connect` and `edit` (one process holds at most ~19,000
    /// sockets). Default: one per 15,000 clients.
    #[arg(long, global = true)]
    workers: Option<usize>,
    #[arg(long, global = true, hide = true)]
    worker_index: Option<usize>,
    #[arg(long, global = true, hide = true)]
    worker_count: Option<usize>,
}

/// Which node of several a client connects to (`--placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Placement {
    Spread,
    Room,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N sessions over M rooms and hold them.
    Connect {
        /// Sessions. Default: 100.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Rooms. Default: 10.
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Hold time. Default: 5s.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// V viewers in one room updating awareness at a rate; measures presence latency.
    Presence {
        /// Viewers. Default: 100.
        #[arg(long, default_value_t = 100)]
        viewers: usize,
        /// Awareness updates per second per viewer. Default: 1.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Updating time. Default: 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Grow a document to a size, then J clients join it at once; time to the full state.
    JoinStorm {
        /// Document size in bytes. Default: 1000000.
        #[arg(long, default_value_t = 1_000_000)]
        doc_bytes: usize,
        /// Joiners. Default: 100.
        #[arg(long, default_value_t = 100)]
        joiners: usize,
    },
    /// The hardening review's attacks (deep nesting, request floods without reading, presence
    /// floods, slowloris), one phase each, while a probe edits another room: its latency and
    /// missed edits per phase, and the server's peak memory with --server-pid. Fails if the
    /// node stops serving the probe. (y-websocket dialect.)
    Attack {
        /// Length of each phase. Default: 5s.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        phase: Duration,
        /// Attacking connections per phase. Default: 4.
        #[arg(long, default_value_t = 4)]
        attackers: usize,
        /// Size of the document the floods ask for. Default: 620000.
        #[arg(long, default_value_t = 620_000)]
        doc_bytes: usize,
    },
    /// Play back sessions recorded by `chorus --record-dir`, N copies at once.
    Replay {
        /// Directory of `.jsonl` recordings.
        #[arg(long)]
        dir: PathBuf,
        /// Copies of the whole set played at once. Default: 1.
        #[arg(long, default_value_t = 1)]
        copies: usize,
        /// Time scale (2 = twice as fast as recorded). Default: 1.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Replay a real editing trace (.json or .json.gz; sequential: one writer, concurrent: one
    /// client per agent) into rooms with observers; every replica must end with the trace's
    /// text.
    Trace {
        /// Trace file (`.json` or `.json.gz`, the ASCII traces of josephg/editing-traces, not
        /// shipped here), e.g. sequential/automerge-paper.json.gz or
        /// concurrent/clownschool.json.gz.
        #[arg(long)]
        file: PathBuf,
        /// Rooms replaying it at once. Default: 1.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Observers per room. Default: 10.
        #[arg(long, default_value_t = 10)]
        observers: usize,
        /// Transactions between waits for the observers (flow control). Default: 500.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// N assistant runs into N rooms of M members while the members edit: token delay from
    /// the provider to every member, and edit latency without and with the runs. Starts the
    /// stand-in model server on --standin-listen; run the hub with `--ai-base-url
    /// http://<standin-listen>/v1 --ai-model standin` (anonymous loopback access).
    Ai {
        /// Runs (one per room). Default: 100.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Members per room. Default: 10.
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Tokens per second of each run. Default: 50.
        #[arg(long, default_value_t = 50.0)]
        tokens_per_second: f64,
        /// Tokens per answer. Default: 250.
        #[arg(long, default_value_t = 250)]
        tokens: usize,
        /// Edits per second per member. Default: 1.
        #[arg(long, default_value_t = 1.0)]
        edit_rate: f64,
        /// Length of each phase (edits alone, then with the runs). Default: 5s.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        phase: Duration,
        /// Where the stand-in model server listens. Default: 127.0.0.1:8091.
        #[arg(long, default_value = "127.0.0.1:8091")]
        standin_listen: String,
        /// Who writes the answers: `hub` (the hub's assistant, asked over REST), or
        /// `clients` (one more client per room writes the same stamped tokens into the chat,
        /// committed every 50 ms, with a cursor in awareness every 250 ms, as the assistant
        /// does): the same traffic without the AI bridge, for any server, the bare relay
        /// included. Default: hub.
        #[arg(long, value_enum, default_value_t = chorus_loadtest::ai::Writer::Hub)]
        writer: chorus_loadtest::ai::Writer,
    },
    /// Clients edit across a cluster this scenario starts (three `chorus` nodes, its own
    /// PostgreSQL from `initdb`, its own `redis-server`, all on 127.0.0.1) while faults strike
    /// in turn; checks that every edit acknowledged with `saved` is in the final document
    /// exactly once, that clients converge, and that a fresh node loads the same; reports how
    /// long each fault stalled deliveries and acknowledgements. --url is not used.
    Chaos {
        /// The `chorus` binary. Default: `chorus` beside this program.
        #[arg(long)]
        chorus_bin: Option<PathBuf>,
        /// Rooms. Default: 10.
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Editing clients per room, spread over the three nodes. Default: 3.
        #[arg(long, default_value_t = 3)]
        clients_per_room: usize,
        /// Edits per second per client. Default: 5.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Editing before the first fault and after each one. Default: 5s.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// The faults, in order. Default: kill,redis,postgres,kill,join.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "kill,redis,postgres,kill,join"
        )]
        faults: Vec<chorus_loadtest::chaos::Fault>,
    },
    /// Samples running hubs while load runs beside it (`edit` in another process): memory
    /// and CPU from /proc, open rooms, connections and queue depths from /metrics, every
    /// --every for --duration. Writes the samples (CSV) and their curves (SVG) and judges
    /// whether they stayed flat (memory within 10 %, queues not climbing); fails if not.
    Soak {
        /// A hub's pid; repeat for every node of a cluster.
        #[arg(long = "pid", required = true)]
        pids: Vec<u32>,
        /// A hub's /metrics address; repeat for every node. Default: http://127.0.0.1:8080/metrics.
        #[arg(long = "metrics-url")]
        metrics_urls: Vec<String>,
        /// Time between samples. Default: 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        every: Duration,
        /// Sampling time. Default: 30m.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Samples before this are left out of the verdict. Default: 2m.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Where the samples go. Default: soak.csv.
        #[arg(long, default_value = "soak.csv")]
        csv: PathBuf,
        /// Where the curves go. Default: soak.svg.
        #[arg(long, default_value = "soak.svg")]
        svg: PathBuf,
    },
    /// N users in rooms of K, each sending small edits at a rate; measures delivery latency.
    Edit {
        /// Users. Default: 100.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Users per room. Default: 10.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Edits per second per user. Default: 1.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Editing time. Default: 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Text each room holds before the edits start, in bytes. Default: 0.
        #[arg(long, default_value_t = 0)]
        doc_bytes: usize,
    },
}

/// Hard caps so a typo cannot start an unbounded run.
const MAX_CLIENTS: usize = 18_000;
/// Clients over all worker processes of one `connect` or `edit` run.
const MAX_TOTAL_CLIENTS: usize = 100_000;
/// Clients one worker takes when the split is automatic.
const PER_WORKER: usize = 15_000;
/// Clients per source address when the spread is automatic.
const PER_SOURCE: usize = 25_000;
const MAX_DURATION: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let c = cli.common;
    chorus_loadtest::target::check(&c.url, c.allow_remote)?;
    // Connect and edit may be split over worker processes; the others run in this one.
    let total = match &cli.scenario {
        Scenario::Connect { sessions, .. } => Some(*sessions),
        Scenario::Edit { users, .. } => Some(*users),
        _ => None,
    };
    let worker = match (c.worker_index, c.worker_count) {
        (Some(index), Some(count)) if index < count => Some(Worker { index, count }),
        (None, None) => None,
        _ => anyhow::bail!("--worker-index must be below --worker-count"),
    };
    let workers = match (worker, total) {
        (Some(_), _) | (None, None) => 1,
        (None, Some(n)) => {
            anyhow::ensure!(
                n <= MAX_TOTAL_CLIENTS,
                "clients are capped at {MAX_TOTAL_CLIENTS} per run"
            );
            c.workers.unwrap_or(n.div_ceil(PER_WORKER)).clamp(1, 64)
        }
    };
    // Workers serve disjoint rooms, so each may pick its own default prefix.
    let room_prefix = c
        .room_prefix
        .unwrap_or_else(|| format!("lt-{}-", std::process::id()));
    let progress = !c.no_progress && worker.is_none();
    if workers > 1 {
        let (scenario_name, timed) = match cli.scenario {
            Scenario::Connect { hold, .. } => ("connect", hold),
            Scenario::Edit { duration, .. } => ("edit", duration),
            _ => ("edit", Duration::ZERO),
        };
        let report =
            chorus_loadtest::workers::run(workers, c.server_pid, scenario_name, timed, progress)?;
        return output(&report, c.json.as_deref());
    }
    let sources = c
        .sources
        .map(usize::from)
        .unwrap_or_else(|| total.unwrap_or(0).div_ceil(PER_SOURCE))
        .max(1);
    let mut target = Target::new(&c.url);
    target.token = c.token;
    target.room_prefix = room_prefix;
    target.concurrency = c.concurrency;
    target.timeout = c.timeout;
    target.server_pid = c.server_pid;
    target.dialect = c.dialect;
    target.worker = worker;
    target.progress = progress;
    target.by_room = c.placement == Placement::Room;
    if sources > 1 {
        anyhow::ensure!(
            !c.allow_remote && sources <= 250,
            "--sources needs a loopback target and at most 250 addresses"
        );
        target.sources = (1..=sources)
            .map(|i| std::net::IpAddr::from([127, 0, 0, i as u8]))
            .collect();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = match cli.scenario {
        Scenario::Connect {
            sessions,
            rooms,
            hold,
        } => {
            anyhow::ensure!(
                sessions.div_ceil(worker.map_or(1, |w| w.count)) <= MAX_CLIENTS,
                "--sessions is capped at {MAX_CLIENTS} per process"
            );
            anyhow::ensure!(hold <= MAX_DURATION, "--hold is capped at 1h");
            runtime.block_on(scenario::connect(
                &target,
                &ConnectParams {
                    sessions,
                    rooms,
                    hold,
                },
            ))
        }
        Scenario::Presence {
            viewers,
            rate,
            duration,
        } => {
            anyhow::ensure!(
                viewers <= MAX_CLIENTS,
                "--viewers is capped at {MAX_CLIENTS} per process"
            );
            anyhow::ensure!(duration <= MAX_DURATION, "--duration is capped at 1h");
            anyhow::ensure!(rate > 0.0 && rate <= 100.0, "--rate must be in (0, 100]");
            runtime.block_on(chorus_loadtest::rooms::presence(
                &target,
                &chorus_loadtest::rooms::PresenceParams {
                    viewers,
                    rate,
                    duration,
                },
            ))
        }
        Scenario::Ai {
            runs,
            members,
            tokens_per_second,
            tokens,
            edit_rate,
            phase,
            standin_listen,
            writer,
        } => {
            anyhow::ensure!(
                runs * members <= MAX_CLIENTS && runs <= 10_000,
                "--runs x --members is capped at {MAX_CLIENTS}"
            );
            anyhow::ensure!(
                tokens <= 10_000 && tokens_per_second > 0.0 && tokens_per_second <= 1000.0,
                "--tokens is capped at 10000 and --tokens-per-second at 1000"
            );
            anyhow::ensure!(
                phase <= Duration::from_secs(600) && edit_rate > 0.0 && edit_rate <= 100.0,
                "--phase is capped at 10m and --edit-rate must be in (0, 100]"
            );
            chorus_loadtest::target::check(&format!("ws://{standin_listen}"), false)?;
            runtime.block_on(chorus_loadtest::ai::ai(
                &target,
                &chorus_loadtest::ai::AiParams {
                    runs,
                    members,
                    tokens_per_second,
                    tokens,
                    edit_rate,
                    phase,
                    standin_listen,
                    writer,
                },
            ))
        }
        Scenario::JoinStorm { doc_bytes, joiners } => {
            anyhow::ensure!(
                joiners < MAX_CLIENTS,
                "--joiners is capped below {MAX_CLIENTS} per process"
            );
            anyhow::ensure!(doc_bytes <= 256 << 20, "--doc-bytes is capped at 256 MiB");
            runtime.block_on(chorus_loadtest::rooms::join_storm(
                &target,
                &chorus_loadtest::rooms::JoinStormParams { doc_bytes, joiners },
            ))
        }
        Scenario::Attack {
            phase,
            attackers,
            doc_bytes,
        } => {
            anyhow::ensure!(
                phase <= Duration::from_secs(60) && attackers <= 64 && doc_bytes <= 64 << 20,
                "--phase is capped at 60s, --attackers at 64 and --doc-bytes at 64 MiB"
            );
            runtime.block_on(chorus_loadtest::attack::attack(
                &target,
                &chorus_loadtest::attack::AttackParams {
                    phase,
                    attackers,
                    doc_bytes,
                },
            ))
        }
        Scenario::Replay { dir, copies, speed } => {
            anyhow::ensure!(copies <= MAX_CLIENTS, "--copies is capped at {MAX_CLIENTS}");
            anyhow::ensure!(
                speed > 0.0 && speed <= 1000.0,
                "--speed must be in (0, 1000]"
            );
            runtime.block_on(chorus_loadtest::replay::replay(
                &target,
                &chorus_loadtest::replay::ReplayParams { dir, copies, speed },
            ))
        }
        Scenario::Trace {
            file,
            rooms,
            observers,
            batch,
        } => {
            anyhow::ensure!(
                rooms * (observers + 1) <= MAX_CLIENTS,
                "--rooms x (--observers + 1) is capped at {MAX_CLIENTS} per process"
            );
            runtime.block_on(chorus_loadtest::trace::trace(
                &target,
                &chorus_loadtest::trace::TraceParams {
                    file,
                    rooms,
                    observers,
                    batch,
                },
            ))
        }
        Scenario::Chaos {
            chorus_bin,
            rooms,
            clients_per_room,
            rate,
            settle,
            faults,
        } => {
            anyhow::ensure!(
                rooms * clients_per_room <= 2_000,
                "--rooms x --clients-per-room is capped at 2,000"
            );
            anyhow::ensure!(rate > 0.0 && rate <= 50.0, "--rate must be in (0, 50]");
            anyhow::ensure!(
                settle <= Duration::from_secs(120) && faults.len() <= 16,
                "--settle is capped at 120s and --faults at 16"
            );
            let chorus_bin = match chorus_bin {
                Some(b) => b,
                None => std::env::current_exe()?
                    .parent()
                    .map(|d| d.join("chorus"))
                    .context("no directory beside this program")?,
            };
            if let Some(missing) = chorus_loadtest::chaos::tools_missing() {
                anyhow::bail!(
                    "chaos needs PostgreSQL's server programs and redis-server: {missing}"
                );
            }
            runtime.block_on(chorus_loadtest::chaos::chaos(
                &chorus_loadtest::chaos::ChaosParams {
                    chorus_bin,
                    rooms,
                    clients_per_room,
                    rate,
                    settle,
                    faults,
                    patience: c.timeout,
                },
            ))
        }
        Scenario::Soak {
            pids,
            metrics_urls,
            every,
            duration,
            warmup,
            csv,
            svg,
        } => {
            let metrics = if metrics_urls.is_empty() {
                vec!["http://127.0.0.1:8080/metrics".to_string()]
            } else {
                metrics_urls
            };
            for url in &metrics {
                let ws = url
                    .strip_prefix("http://")
                    .context("--metrics-url must start with http://")?;
                chorus_loadtest::target::check(&format!("ws://{ws}"), c.allow_remote)?;
            }
            anyhow::ensure!(
                every >= Duration::from_millis(100) && duration <= 2 * MAX_DURATION,
                "--every is at least 100ms and --duration at most 2h"
            );
            runtime.block_on(chorus_loadtest::soak::soak(
                &chorus_loadtest::soak::SoakParams {
                    pids,
                    metrics,
                    every,
                    duration,
                    warmup,
                    csv,
                    svg,
                },
            ))
        }
        Scenario::Edit {
            users,
            room_size,
            rate,
            duration,
            doc_bytes,
        } => {
            anyhow::ensure!(doc_bytes <= 256 << 20, "--doc-bytes is capped at 256 MiB");
            anyhow::ensure!(
                users.div_ceil(worker.map_or(1, |w| w.count)) <= MAX_CLIENTS,
                "--users is capped at {MAX_CLIENTS} per process"
            );
            anyhow::ensure!(duration <= MAX_DURATION, "--duration is capped at 1h");
            anyhow::ensure!(rate > 0.0 && rate <= 1000.0, "--rate must be in (0, 1000]");
            runtime.block_on(scenario::edit(
                &target,
                &EditParams {
                    users,
                    room_size,
                    rate,
                    duration,
                    doc_bytes,
                },
            ))
        }
    };
    let mut report = report;
    report.refused = target.refused();
    if worker.is_some() {
        // The parent merges these exactly; it prints the table (and any refusal).
        report.histograms.serialize = true;
        if let Some(path) = c.json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        }
        return Ok(report.passed());
    }
    output(&report, c.json.as_deref())
}

/// Prints the table (or, with `--json -`, the JSON) on stdout and writes the JSON file. A
/// refusal of the credentials is an error (exit 2) saying to pass `--token`, not a table.
fn output(report: &chorus_loadtest::report::Report, json: Option<&Path>) -> anyhow::Result<bool> {
    let to_stdout = json.is_some_and(|p| p == Path::new("-"));
    if to_stdout {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else if report.refused.is_none() {
        print!("{}", report.table());
    }
    if let Some(path) = json.filter(|_| !to_stdout) {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)?;
    }
    if let Some(advice) = &report.refused {
        anyhow::bail!("{advice}");
    }
    Ok(report.passed())
}
