//! The provider layer: a trait for streaming chat completions, and the policy every run
//! applies on top of any provider (timeouts, retries before the first token, cancellation).

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// The functions an assistant message called (its answer was these calls).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of `role` with `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The assistant's turn that called `calls`.
    pub fn calls(calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            tool_calls: calls,
            ..ChatMessage::new(Role::Assistant, "")
        }
    }

    /// A function's result, for the call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::new(Role::Tool, content)
        }
    }
}

/// A function call the model made.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ToolCall {
    /// The provider's id of the call (echoed with the result).
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments: JSON text as the model wrote it (untrusted: check before use).
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its parameters, a JSON Schema object.
    pub parameters: serde_json::Value,
}

/// Embeddings of some texts, in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the provider counted (or estimated).
    pub tokens: u64,
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the operator and tenant (never from the document).
    System,
    /// The asker, and the untrusted context they point at.
    User,
    /// Earlier answers.
    Assistant,
    /// A function's result.
    Tool,
}

/// A streaming chat request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Functions the model may call instead of answering.
    pub tools: Vec<Tool>,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Text of the answer.
    Text(String),
    /// A piece of a function call: calls stream as pieces by `index`; the first piece of a
    /// call has its id and name, and the arguments' text arrives in parts.
    ToolCall {
        /// Which call of the answer.
        index: u32,
        /// The call's id (first piece).
        id: Option<String>,
        /// The function (first piece).
        name: Option<String>,
        /// More of the arguments' text.
        arguments: String,
    },
    /// Token counts, when the provider reports them.
    Usage {
        /// Prompt tokens.
        prompt: u64,
        /// Completion tokens.
        completion: u64,
    },
}

/// What went wrong talking to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an HTTP error status.
    #[error("provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's message (may be shown to operators, never keys).
        message: String,
    },
    /// No connection, or it broke.
    #[error("provider connection failed: {0}")]
    Connection(String),
    /// The stream carried an error or something unreadable.
    #[error("provider stream failed: {0}")]
    Stream(String),
    /// A timeout of the [`Policy`].
    #[error("provider timed out ({0})")]
    Timeout(&'static str),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The request was refused before any I/O (unknown model, bad configuration).
    #[error("{0}")]
    Refused(String),
}

impl ProviderError {
    /// Whether trying again may help: 429, 5xx, connection errors.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Connection(_) | ProviderError::Timeout("first token") => true,
            _ => false,
        }
    }

    /// The outcome class it is reported as (`ai.error` codes).
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Status { status: 429, .. } => "rate_limited",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Cancelled => "cancelled",
            _ => "provider_error",
        }
    }
}

/// A stream of answer pieces.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// Something that streams chat completions: an OpenAI-compatible endpoint
/// ([`crate::openai::OpenAiProvider`]) or another implementation.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The operator's name for it.
    fn name(&self) -> &str;
    /// Whether it serves `model`.
    fn serves(&self, model: &str) -> bool;
    /// The model used when none is asked for.
    fn default_model(&self) -> &str;
    /// Starts a streaming completion. Dropping the stream drops the HTTP request.
    async fn stream(&self, request: &ChatRequest) -> Result<ChunkStream, ProviderError>;
    /// Embeds `inputs` with `model` (`dimensions`: ask for shorter vectors where the model
    /// can). Providers without embeddings refuse.
    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<Embeddings, ProviderError> {
        let _ = (model, inputs, dimensions);
        Err(ProviderError::Refused(format!(
            "provider {} has no embeddings",
            self.name()
        )))
    }
}

/// Collects streamed [`Chunk::ToolCall`] pieces into whole calls.
#[derive(Debug, Default)]
pub struct ToolCalls {
    calls: std::collections::BTreeMap<u32, ToolCall>,
    bytes: usize,
}

impl ToolCalls {
    /// Most argument text kept over all calls of one answer: a model cannot make the node
    /// hold more.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Adds a piece; `false` once the calls exceed [`Self::MAX_BYTES`] or 16 calls.
    pub fn push(
        &mut self,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: &str,
    ) -> bool {
        self.bytes += arguments.len();
        if self.bytes > Self::MAX_BYTES
            || (self.calls.len() >= 16 && !self.calls.contains_key(&index))
        {
            return false;
        }
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(name) = name {
            call.name.push_str(&name);
        }
        call.arguments.push_str(arguments);
        true
    }

    /// Whether no call arrived.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in order.
    pub fn into_calls(self) -> Vec<ToolCall> {
        self.calls.into_values().collect()
    }
}

/// Timeouts and retries applied to every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From the request to the first piece of text (each attempt).
    pub first_token: Duration,
    /// Between two pieces.
    pub between_tokens: Duration,
    /// The whole run, retries included: every run ends within it.
    pub total: Duration,
    /// Attempts before the first token (1: no retry).
    pub attempts: u32,
    /// The first backoff; doubled each time, with full jitter.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            first_token: Duration::from_secs(30),
            between_tokens: Duration::from_secs(30),
            total: Duration::from_secs(300),
            attempts: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

/// A started answer: its first piece has arrived (or the answer was empty).
pub struct Answer {
    stream: ChunkStream,
    deadline: Instant,
    policy: Policy,
    cancel: CancellationToken,
    first: Option<Chunk>,
    /// Attempts it took.
    pub attempts: u32,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Starts `request` on `provider` under `policy`: retries 429, 5xx and connection failures
/// with backoff until the first piece of text arrives, never after.
pub async fn start(
    provider: &dyn Provider,
    request: &ChatRequest,
    policy: Policy,
    cancel: CancellationToken,
) -> Result<Answer, ProviderError> {
    let deadline = Instant::now() + policy.total;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tried = first_piece(provider, request, &policy, deadline, &cancel).await;
        match tried {
            Ok((stream, first)) => {
                return Ok(Answer {
                    stream,
                    deadline,
                    policy,
                    cancel,
                    first,
                    attempts: attempt,
                });
            }
            Err(e) if e.retryable() && attempt < policy.attempts.max(1) => {
                let cap = policy.backoff.saturating_mul(1 << (attempt - 1).min(10));
                let wait = cap.mul_f64(rand::random::<f64>());
                tracing::debug!(provider = provider.name(), attempt, error = %e, "retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ProviderError::Cancelled),
                    _ = tokio::time::sleep_until((Instant::now() + wait).min(deadline)) => {}
                }
                if Instant::now() >= deadline {
                    return Err(ProviderError::Timeout("total"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn first_piece(
    provider: &dyn Provider,
    request: &ChatRequest,
    policy: &Policy,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(ChunkStream, Option<Chunk>), ProviderError> {
    let limit = (Instant::now() + policy.first_token).min(deadline);
    let work = async {
        let mut stream = provider.stream(request).await?;
        // Usage or empty pieces may come first; the first text (or function call) counts.
        let mut held = None;
        loop {
            match stream.next().await {
                Some(Ok(Chunk::Text(t))) if t.is_empty() => continue,
                Some(Ok(chunk @ (Chunk::Text(_) | Chunk::ToolCall { .. }))) => {
                    return Ok((stream, Some(chunk)));
                }
                Some(Ok(usage @ Chunk::Usage { .. })) => held = Some(usage),
                // Broken before any text arrived: as good as a failed connection, and retried
                // like one (nothing was written yet, so nothing can be duplicated).
                Some(Err(ProviderError::Stream(m))) => return Err(ProviderError::Connection(m)),
                Some(Err(e)) => return Err(e),
                None => return Ok((stream, held)),
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => Err(ProviderError::Cancelled),
        r = tokio::time::timeout_at(limit, work) => match r {
            Ok(r) => r,
            Err(_) if limit >= deadline => Err(ProviderError::Timeout("total")),
            Err(_) => Err(ProviderError::Timeout("first token")),
        },
    }
}

impl Answer {
    /// Whether the model answered with a function call rather than text.
    pub fn is_call(&self) -> bool {
        matches!(self.first, Some(Chunk::ToolCall { .. }))
    }

    /// The next piece; `Ok(None)` when the answer is complete. Never waits past the
    /// between-tokens timeout or the run's deadline; cancellation returns at once.
    pub async fn next(&mut self) -> Result<Option<Chunk>, ProviderError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let limit = (Instant::now() + self.policy.between_tokens).min(self.deadline);
        tokio::select! {
            _ = self.cancel.cancelled() => Err(ProviderError::Cancelled),
            r = tokio::time::timeout_at(limit, self.stream.next()) => match r {
                Ok(Some(r)) => r.map(Some),
                Ok(None) => Ok(None),
                Err(_) if limit >= self.deadline => Err(ProviderError::Timeout("total")),
                Err(_) => Err(ProviderError::Timeout("between tokens")),
            },
        }
    }
}
