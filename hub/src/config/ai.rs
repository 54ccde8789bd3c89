//! The AI assistant's flags: the operator's providers, and the node's limits on runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// AI options (all off until a provider is configured).
#[derive(Debug, Clone, Args)]
pub struct AiConfig {
    /// Base URL of the default OpenAI-compatible provider (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` for Ollama). Default: none (the assistant is off unless
    /// --ai-providers names some).
    #[arg(long, env = "CHORUS_AI_BASE_URL")]
    pub ai_base_url: Option<String>,

    /// API key of the default provider. Default: none (local servers need none).
    #[arg(long, env = "CHORUS_AI_API_KEY", hide_env_values = true)]
    pub ai_api_key: Option<String>,

    /// Model of the default provider (comma-separated: the first is the default, the others
    /// are allowed too). Default: none (required with --ai-base-url).
    #[arg(long, env = "CHORUS_AI_MODEL")]
    pub ai_model: Option<String>,

    /// A JSON file with more providers: `[{"name", "base_url", "api_key", "models",
    /// "headers", "flavor": "openai"|"azure", "api_version"}]` (docs/AI.md). Default: none.
    #[arg(long, env = "CHORUS_AI_PROVIDERS")]
    pub ai_providers: Option<PathBuf>,

    /// Runs executing at once on this node; more wait (queued).
    #[arg(long, env = "CHORUS_AI_MAX_RUNS", default_value_t = 32)]
    pub ai_max_runs: usize,

    /// Runs one tenant may have executing at once on this node (a tenant's settings may
    /// lower it).
    #[arg(long, env = "CHORUS_AI_MAX_TENANT_RUNS", default_value_t = 8)]
    pub ai_max_tenant_runs: u32,

    /// How often streamed tokens are written into the room, as one transaction.
    #[arg(long, env = "CHORUS_AI_COMMIT_INTERVAL", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub ai_commit_interval: Duration,

    /// Assistant transactions per second in one room, across its runs: a runaway stream
    /// never starves people (writes coalesce further instead).
    #[arg(long, env = "CHORUS_AI_ROOM_COMMITS_PER_SECOND", default_value_t = 40)]
    pub ai_room_commits_per_second: u32,

    /// Longest wait for the first token (each attempt).
    #[arg(long, env = "CHORUS_AI_FIRST_TOKEN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ai_first_token_timeout: Duration,

    /// Longest wait between two tokens.
    #[arg(long, env = "CHORUS_AI_TOKEN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ai_token_timeout: Duration,

    /// Longest run, retries included: every run ends within it.
    #[arg(long, env = "CHORUS_AI_RUN_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ai_run_timeout: Duration,

    /// Attempts before the first token (429, 5xx, connection errors).
    #[arg(long, env = "CHORUS_AI_ATTEMPTS", default_value_t = 3)]
    pub ai_attempts: u32,

    /// Most output tokens of one run (a tenant's settings may lower it).
    #[arg(long, env = "CHORUS_AI_MAX_OUTPUT_TOKENS", default_value_t = 2048)]
    pub ai_max_output_tokens: u32,

    /// Largest prompt an asker may send, in bytes (a tenant's settings may lower it).
    #[arg(long, env = "CHORUS_AI_MAX_PROMPT_BYTES", default_value_t = 8192)]
    pub ai_max_prompt_bytes: usize,

    /// Characters of the document and chat sent as context.
    #[arg(long, env = "CHORUS_AI_CONTEXT_CHARS", default_value_t = 24_000)]
    pub ai_context_chars: usize,

    /// Runs one user may start per minute (a tenant's settings may lower it).
    #[arg(long, env = "CHORUS_AI_RUNS_PER_MINUTE", default_value_t = 10)]
    pub ai_runs_per_minute: u32,
}

impl AiConfig {
    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.ai_base_url.is_some() && self.ai_model.as_deref().is_none_or(str::is_empty) {
            return Err("--ai-base-url needs --ai-model (the model to use)".into());
        }
        if self.ai_max_runs == 0 || self.ai_max_tenant_runs == 0 || self.ai_attempts == 0 {
            return Err(
                "--ai-max-runs, --ai-max-tenant-runs and --ai-attempts must be at least 1".into(),
            );
        }
        if self.ai_commit_interval < Duration::from_millis(5)
            || self.ai_commit_interval > Duration::from_secs(5)
        {
            return Err("--ai-commit-interval must be between 5ms and 5s".into());
        }
        if self.ai_room_commits_per_second == 0 || self.ai_runs_per_minute == 0 {
            return Err(
                "--ai-room-commits-per-second and --ai-runs-per-minute must be at least 1".into(),
            );
        }
        if self.ai_max_prompt_bytes < 16 || self.ai_max_output_tokens == 0 {
            return Err(
                "--ai-max-prompt-bytes must be at least 16 and --ai-max-output-tokens at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}
