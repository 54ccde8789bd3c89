//! The provider for any OpenAI-compatible endpoint, through async-openai: OpenAI, Azure
//! OpenAI, vLLM, Ollama, llama.cpp's server, LiteLLM. The operator configures providers (base
//! URL, key, models, headers); tenants only pick among them by name, so no tenant can point
//! the node at a URL of its choosing.
//!
//! Keys never appear in `Debug` output, errors or logs: [`Secret`] prints `***`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::provider::{
    ChatRequest, Chunk, ChunkStream, Embeddings, Provider, ProviderError, Role, Tool,
};

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself (to hand to the HTTP client, nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// Which API flavour the endpoint speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// OpenAI's paths and `Authorization: Bearer` (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM).
    #[default]
    Openai,
    /// Azure OpenAI: deployments, `api-key` header, `api-version`.
    Azure,
}

/// One provider, as the operator configures it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name tenants pick it by.
    pub name: String,
    /// The API flavour.
    #[serde(default)]
    pub flavor: Flavor,
    /// Base URL (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, ...).
    pub base_url: String,
    /// API key (may be empty for local servers).
    #[serde(default)]
    pub api_key: Secret,
    /// Models tenants may use; the first is the default.
    pub models: Vec<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Azure: the API version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Connection timeout, in milliseconds.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
}

impl ProviderConfig {
    /// Checks what a provider needs before any request.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err("a provider needs a name of 1-64 characters".into());
        }
        let lower = self.base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!(
                "provider {}: base_url must be an http(s) URL",
                self.name
            ));
        }
        if self.models.is_empty() {
            return Err(format!("provider {}: name at least one model", self.name));
        }
        Ok(())
    }
}

/// A provider for an OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    config: ProviderConfig,
    client: Client<Box<dyn Config>>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.config.name)
            .field("base_url", &self.config.base_url)
            .field("models", &self.config.models)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// Builds the client (no request is made).
    pub fn new(config: ProviderConfig) -> Result<Self, String> {
        config.validate()?;
        // One process-wide TLS provider (ring, as the rest of the workspace): reqwest 0.13
        // is built without one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = config.base_url.trim_end_matches('/').to_owned();
        let api: Box<dyn Config> = match config.flavor {
            Flavor::Openai => {
                let mut c = OpenAIConfig::new()
                    .with_api_base(base)
                    .with_api_key(config.api_key.expose());
                for (k, v) in &config.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("provider {}: bad header name {k:?}", config.name))?;
                    c = c.with_header(name, v.as_str()).map_err(|_| {
                        format!("provider {}: bad value of header {k}", config.name)
                    })?;
                }
                Box::new(c)
            }
            Flavor::Azure => Box::new(
                AzureConfig::new()
                    .with_api_base(base)
                    .with_api_key(config.api_key.expose())
                    .with_deployment_id(config.models[0].clone())
                    .with_api_version(
                        config
                            .api_version
                            .clone()
                            .unwrap_or_else(|| "2024-10-21".into()),
                    ),
            ),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(
                config.connect_timeout_ms.unwrap_or(10_000),
            ))
            // Answers stream for minutes: the run's own timeouts bound them, not a total here.
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("provider {}: {e}", config.name))?;
        // Without the client's own retry layer: the run's `Policy` retries, with jitter and
        // within its deadline, and only before the first token.
        let client = Client::build(http.clone(), api)
            .with_http_service(async_openai::middleware::ReqwestService::new(http));
        Ok(OpenAiProvider { client, config })
    }

    /// Its configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }
}

fn message(m: &crate::provider::ChatMessage) -> ChatCompletionRequestMessage {
    let text = m.content.clone();
    match m.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(text),
            name: None,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text),
            name: None,
        }),
        Role::Assistant if !m.tool_calls.is_empty() => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                tool_calls: Some(
                    m.tool_calls
                        .iter()
                        .map(|c| {
                            ChatCompletionMessageToolCalls::Function(
                                ChatCompletionMessageToolCall {
                                    id: c.id.clone(),
                                    function: FunctionCall {
                                        name: c.name.clone(),
                                        arguments: c.arguments.clone(),
                                    },
                                },
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            })
        }
        Role::Assistant => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: Some(ChatCompletionRequestAssistantMessageContent::Text(text)),
                ..Default::default()
            })
        }
        Role::Tool => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(text),
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
        }),
    }
}

fn tool(t: &Tool) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: t.name.clone(),
            description: Some(t.description.clone()),
            parameters: Some(t.parameters.clone()),
            strict: None,
        },
    })
}

/// Maps the client's errors to ours, keeping secrets out: only statuses and the provider's
/// own message (which never echoes the key) pass.
fn error(e: OpenAIError) -> ProviderError {
    match e {
        OpenAIError::ApiError(r) => ProviderError::Status {
            status: r.status_code.as_u16(),
            message: truncate(&r.api_error.message),
        },
        OpenAIError::Reqwest(e) if e.is_status() => ProviderError::Status {
            status: e.status().map_or(500, |s| s.as_u16()),
            message: "http error".into(),
        },
        OpenAIError::Reqwest(e) => ProviderError::Connection(truncate(&without_url(&e))),
        OpenAIError::StreamError(e) => ProviderError::Stream(truncate(&e.to_string())),
        OpenAIError::JSONDeserialize(_, content) => {
            // A mid-stream `{"error": ...}` event lands here.
            let msg = serde_json::from_str::<serde_json::Value>(&content)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "unreadable stream event".into());
            ProviderError::Stream(truncate(&msg))
        }
        other => ProviderError::Stream(truncate(&other.to_string())),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // reqwest's messages name the URL, which may carry a key in its query: drop it.
    e.without_url_ref().to_string()
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut parts = Vec::new();
        if self.is_connect() {
            parts.push("connect");
        }
        if self.is_timeout() {
            parts.push("timeout");
        }
        if self.is_body() || self.is_decode() {
            parts.push("body");
        }
        if self.is_request() {
            parts.push("request");
        }
        if parts.is_empty() {
            parts.push("transport");
        }
        format!("{} error", parts.join(" "))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Removes keys from a provider's message: the configured key wherever it appears, and any
/// word that looks like one (`sk-…`, as OpenAI's 401 names a masked key), before anyone logs or
/// shows it.
fn redact(message: &str, key: &Secret) -> String {
    let mut out = message.to_owned();
    if key.expose().len() >= 4 {
        out = out.replace(key.expose(), "***");
    }
    out.split(' ')
        .map(|w| {
            let bare = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
            if bare.starts_with("sk-") || bare.starts_with("sk_") {
                "***"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redacted(e: ProviderError, key: &Secret) -> ProviderError {
    match e {
        ProviderError::Status { status, message } => ProviderError::Status {
            status,
            message: redact(&message, key),
        },
        ProviderError::Stream(m) => ProviderError::Stream(redact(&m, key)),
        ProviderError::Connection(m) => ProviderError::Connection(redact(&m, key)),
        other => other,
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn serves(&self, model: &str) -> bool {
        self.config.models.iter().any(|m| m == model)
    }

    fn default_model(&self) -> &str {
        &self.config.models[0]
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChunkStream, ProviderError> {
        if !self.serves(&request.model) {
            return Err(ProviderError::Refused(format!(
                "model {} is not served by provider {}",
                request.model, self.config.name
            )));
        }
        let req = CreateChatCompletionRequest {
            model: request.model.clone(),
            messages: request.messages.iter().map(message).collect(),
            max_completion_tokens: request.max_tokens,
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                ..Default::default()
            }),
            tools: (!request.tools.is_empty()).then(|| request.tools.iter().map(tool).collect()),
            ..Default::default()
        };
        let key = self.config.api_key.clone();
        let stream = self
            .client
            .chat()
            .create_stream(req)
            .await
            .map_err(|e| redacted(error(e), &key))?;
        let mapped = stream.flat_map(move |item| {
            let out: Vec<Result<Chunk, ProviderError>> = match item {
                Ok(chunk) => {
                    let mut v: Vec<Result<Chunk, ProviderError>> = Vec::new();
                    for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                        if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
                            v.push(Ok(Chunk::Text(t)));
                        }
                        for call in choice.delta.tool_calls.into_iter().flatten() {
                            let (name, arguments) = call
                                .function
                                .map(|f| (f.name, f.arguments.unwrap_or_default()))
                                .unwrap_or_default();
                            v.push(Ok(Chunk::ToolCall {
                                index: call.index,
                                id: call.id,
                                name,
                                arguments,
                            }));
                        }
                    }
                    if let Some(u) = chunk.usage {
                        v.push(Ok(Chunk::Usage {
                            prompt: u64::from(u.prompt_tokens),
                            completion: u64::from(u.completion_tokens),
                        }));
                    }
                    v
                }
                Err(e) => vec![Err(redacted(error(e), &key))],
            };
            futures_util::stream::iter(out)
        });
        Ok(Box::pin(mapped))
    }

    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<Embeddings, ProviderError> {
        let req = CreateEmbeddingRequest {
            model: model.to_owned(),
            input: EmbeddingInput::StringArray(inputs.to_vec()),
            dimensions,
            ..Default::default()
        };
        let key = self.config.api_key.clone();
        let response = self
            .client
            .embeddings()
            .create(req)
            .await
            .map_err(|e| redacted(error(e), &key))?;
        // In input order, whatever order the provider listed them in; every input needs one.
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
        for e in response.data {
            if let Some(slot) = vectors.get_mut(e.index as usize) {
                *slot = Some(e.embedding);
            }
        }
        let vectors: Option<Vec<Vec<f32>>> = vectors.into_iter().collect();
        let vectors = vectors.ok_or_else(|| {
            ProviderError::Stream("the provider returned fewer embeddings than inputs".into())
        })?;
        let tokens = u64::from(response.usage.total_tokens);
        Ok(Embeddings { vectors, tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_removed_from_provider_messages() {
        let key = Secret::new("sk-live-secret-123456");
        assert_eq!(
            redact("Incorrect API key provided: sk-live-secret-123456.", &key),
            "Incorrect API key provided: ***."
        );
        assert_eq!(
            redact(
                "Incorrect API key provided: sk-proj-****abcd. See docs",
                &key
            ),
            "Incorrect API key provided: *** See docs"
        );
        assert_eq!(redact("model not found", &key), "model not found");
    }
}
