//! The command line: `chorus [serve] [OPTIONS]`, `chorus token`, `chorus migrate`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::Config;

/// Chorus: a self-hostable real-time collaboration hub (Yjs rooms over WebSockets).
#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the hub (the default).
    Serve(Config),
    /// Print a signed development token (HS256, signed with --jwt-secret).
    Token(TokenArgs),
    /// Apply the database schema migrations and exit (run with the schema owner's URL).
    Migrate(MigrateArgs),
    /// Queue every room (of one tenant, or of all) for search indexing and exit; running hubs
    /// index them (docs/SEARCH.md). Takes the hub's database flags.
    Reindex(ReindexArgs),
}

/// Options of `chorus reindex`.
#[derive(Debug, Clone, Args)]
pub struct ReindexArgs {
    /// Only this tenant's rooms. Default: every tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The hub's options (its `--database-url` or `--data-dir` say which store).
    #[command(flatten)]
    pub config: Config,
}

/// Options of `chorus migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database URL (`postgres://...` or `sqlite://...`). Default: none (required).
    #[arg(long, env = "CHORUS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Options of `chorus token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Room name or pattern the token grants (`name`, `prefix*`, or `*`). Repeatable.
    #[arg(
        long = "room",
        env = "CHORUS_TOKEN_ROOMS",
        value_delimiter = ',',
        required = true
    )]
    pub rooms: Vec<String>,
    /// `write` (edit) or `read` (view only).
    #[arg(long, env = "CHORUS_TOKEN_ROLE", default_value = "write", value_parser = ["read", "write"])]
    pub role: String,
    /// Tenant the rooms belong to.
    #[arg(long, env = "CHORUS_TOKEN_TENANT", default_value = "default")]
    pub tenant: String,
    /// Subject (user id).
    #[arg(long, env = "CHORUS_TOKEN_SUB", default_value = "dev")]
    pub sub: String,
    /// Display name for presence. Default: none.
    #[arg(long, env = "CHORUS_TOKEN_NAME")]
    pub name: Option<String>,
    /// Lifetime, e.g. `1h`, `30m`.
    #[arg(long, env = "CHORUS_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// HS256 secret to sign with. Default: none (required).
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}
