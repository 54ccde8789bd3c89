//! Search's flags: on or off, how soon after an edit a room is indexed, the embedding models.

use std::time::Duration;

use clap::Args;

/// Search options (docs/SEARCH.md).
#[derive(Debug, Clone, Args)]
pub struct SearchConfig {
    /// Index rooms and serve `GET /v1/search`. Off: edits queue nothing and search answers 503.
    #[arg(long = "search", env = "CHORUS_SEARCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub search_enabled: bool,
    /// How long after a room's first unindexed edit it is indexed: a burst of edits within it
    /// costs one indexing.
    #[arg(long, env = "CHORUS_SEARCH_DEBOUNCE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub search_debounce: Duration,
    /// Embedding models for search by meaning, served by the tenant's AI provider
    /// (comma-separated: the first is the default, tenants may pick the others). Default:
    /// none (search by meaning is off; full-text search works without it).
    #[arg(long, env = "CHORUS_SEARCH_EMBEDDING_MODEL")]
    pub search_embedding_model: Option<String>,
    /// Ask the embedding model for vectors of this length (384 to 3072; models that support
    /// shortening them). Default: the model's own.
    #[arg(long, env = "CHORUS_SEARCH_EMBEDDING_DIMENSIONS")]
    pub search_embedding_dimensions: Option<u32>,
    /// Rooms indexed at once on this node.
    #[arg(long, env = "CHORUS_SEARCH_WORKERS", default_value_t = 2)]
    pub search_workers: usize,
    /// Most characters of one room's plain text that are indexed (the rest is not).
    #[arg(long, env = "CHORUS_SEARCH_MAX_CHARS", default_value_t = 2_000_000)]
    pub search_max_chars: usize,
}

impl SearchConfig {
    /// The embedding models, in order.
    pub fn embedding_models(&self) -> Vec<String> {
        self.search_embedding_model
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.search_debounce > Duration::from_secs(60) {
            return Err("--search-debounce must be at most 60s".into());
        }
        if self
            .search_embedding_dimensions
            .is_some_and(|d| !(384..=3072).contains(&d))
        {
            return Err("--search-embedding-dimensions must be between 384 and 3072".into());
        }
        if self.search_workers == 0 || self.search_workers > 64 {
            return Err("--search-workers must be between 1 and 64".into());
        }
        if self.search_max_chars < 1000 {
            return Err("--search-max-chars must be at least 1000".into());
        }
        Ok(())
    }
}
