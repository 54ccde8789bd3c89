//! The `chorus` binary: parses the command line and calls the library.

use std::process::ExitCode;

use chorus_hub::config::{Cli, CliCommand, Config};
use clap::Parser;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let var = env_source(&e);
            let _ = e.print();
            if let Some(var) = var {
                eprintln!("note: that value comes from the environment variable {var}");
            }
            std::process::exit(e.exit_code());
        }
    };
    match cli.command {
        Some(CliCommand::Token(args))
            if args.jwt_secret.len() < chorus_hub::auth::MIN_SECRET_BYTES =>
        {
            eprintln!("error: --jwt-secret must be at least 32 bytes");
            ExitCode::FAILURE
        }
        Some(CliCommand::Token(args)) => match chorus_hub::auth::mint_hs256(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot sign token: {e}");
                ExitCode::FAILURE
            }
        },
        Some(CliCommand::Serve(config)) => serve(config),
        Some(CliCommand::Migrate(args)) => migrate(&args.database_url),
        Some(CliCommand::Reindex(args)) => reindex(args.tenant.as_deref(), &args.config),
        None => serve(cli.serve),
    }
}

/// A runtime for the one-shot subcommands (`migrate`, `reindex`).
fn one_thread_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

fn migrate(url: &str) -> ExitCode {
    let _logs = init_tracing(false, None);
    let Some(runtime) = one_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(chorus_hub::migrate(url)) {
        Ok(()) => {
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("migration failed: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn reindex(tenant: Option<&str>, config: &Config) -> ExitCode {
    let _logs = init_tracing(false, None);
    let Some(runtime) = one_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    let queued = runtime.block_on(async {
        let store = chorus_hub::open_store(config).await?;
        chorus_hub::search::Search::queue_all(&*store, tenant)
            .await
            .map_err(anyhow::Error::from)
    });
    match queued {
        Ok(n) => {
            tracing::info!(rooms = n, "queued for search indexing");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("reindex failed: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    // Checked before the subscriber exists: the OTLP exporter is built from the config.
    if let Err(e) = config.validate() {
        let _logs = init_tracing(false, None);
        tracing::error!("chorus stopped: {e}");
        return ExitCode::FAILURE;
    }
    let json = config.log_json || config.log_format == chorus_hub::config::LogFormat::Json;
    let otlp = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| chorus_hub::telemetry::Otlp {
            endpoint,
            sample_ratio: config.otlp_sample_ratio,
            node_id: config.node_id.as_deref(),
        });
    let Some(telemetry) = init_tracing(json, otlp) else {
        return ExitCode::FAILURE;
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    // yrs recurses in decode, encode, drop and delete. Every input is depth-checked first
    // (`--max-nesting-depth`, at most 1024), and this margin (workers and the blocking pool,
    // which encodes whole documents) keeps even the hard cap far from a stack overflow, which
    // would abort the process. It costs address space, not memory: untouched pages are never
    // committed.
    builder.thread_stack_size(16 * 1024 * 1024);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry.attach_runtime(runtime.handle().clone());
    let result = runtime.block_on(async move {
        let listener = listen(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        // Boxed: the whole node's start-up and serve state (11 KiB) lives on the heap, not in
        // the runtime's root future (clippy::large_futures).
        Box::pin(chorus_hub::run(listener, config, shutdown_signal())).await
    });
    // Dropping what is left of the node's tasks ends their spans (connections, rooms); then
    // the last spans are exported.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("chorus stopped: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: the store's errors carry their
/// source in their own message too, and `{:#}` would repeat it at every level.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The environment variable a parse error came from, when the flag it names was not on the
/// command line but its variable is set: clap's message names only the flag.
fn env_source(e: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?.to_owned();
    let on_command_line =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if on_command_line {
        return None;
    }
    let command = Cli::command();
    let mut commands = vec![&command];
    commands.extend(command.get_subcommands());
    commands
        .iter()
        .flat_map(|c| c.get_arguments())
        .filter(|a| a.get_long() == Some(long.as_str()))
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .find(|v| std::env::var_os(v).is_some())
}

/// Binds with a deep accept queue: a reconnect storm of thousands of clients must queue, not
/// have its SYNs dropped (each drop costs the client a one-second retransmit).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    const BACKLOG: u32 = 8192;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Installs the log subscriber (and the trace exporter with `otlp`); `None` after printing why
/// it cannot.
fn init_tracing(
    json: bool,
    otlp: Option<chorus_hub::telemetry::Otlp<'_>>,
) -> Option<chorus_hub::telemetry::Telemetry> {
    match chorus_hub::telemetry::init(json, otlp) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
