//! A **stand-in** for a language model: a small OpenAI-compatible server for tests, the load
//! tester and the demo. It is not a model: it streams scripted answers (by default a markdown
//! text with every block and mark kind) and can misbehave on request, so that the hub's real
//! provider client is tested over real HTTP against every fault a provider shows.
//!
//! - `POST /v1/chat/completions`: streaming (SSE, `data: {chunk}` lines, `data: [DONE]`) or
//!   not; reports usage when asked (`stream_options.include_usage`).
//! - `POST /v1/embeddings`: deterministic vectors (a hash of the text), for search tests.
//! - Function calling: a scripted behaviour may call functions (`tool_calls`) instead of
//!   answering; the next request then carries the results, which `/_standin/requests` shows.
//! - `GET /v1/models`.
//! - `POST /_standin/script`: queues [`Behavior`]s, one consumed per chat request (then the
//!   default); `GET /_standin/requests` returns the chat requests received (to check what
//!   the hub sent: the prompt, the context, never more than the asker may read).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The default answer: every block and mark kind the document writer knows.
pub const SAMPLE_ANSWER: &str = "# A heading\n\nA paragraph with **bold**, *italic*, `code` and a [link](https://example.com/docs).\n\n## A list\n\n- first point\n- second point with **emphasis**\n\n1. step one\n2. step two\n\n> a quotation\n\n```rust\nfn main() {\n    println!(\"hi\");\n}\n```\n\nThe end.";

/// Requests kept for `GET /_standin/requests`.
const KEPT_REQUESTS: usize = 256;

/// How the stand-in answers one chat request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// The answer's text (markdown). `None`: [`SAMPLE_ANSWER`].
    pub answer: Option<String>,
    /// Streamed tokens per second (0: as fast as possible).
    pub tokens_per_second: f64,
    /// Characters per token (the answer is cut into pieces of about this many characters).
    pub token_chars: usize,
    /// Milliseconds before the first token.
    pub first_token_delay_ms: u64,
    /// Answer with this HTTP status (and an OpenAI-style error body) instead of streaming.
    pub status: Option<u16>,
    /// After this many tokens, send an error event in the stream and end it.
    pub error_after: Option<usize>,
    /// After this many tokens, cut the connection without ending the stream.
    pub disconnect_after: Option<usize>,
    /// Report usage (prompt and completion tokens) when the request asks for it.
    pub usage: bool,
    /// Instead of `answer`, this many tokens `t<send time in µs since the epoch> `: a load
    /// tester reads when each token left the provider from the text that arrives.
    pub stamped: Option<usize>,
    /// Instead of an answer, call these functions (streamed as `tool_calls` deltas, the
    /// arguments in pieces, ending with `finish_reason: "tool_calls"`).
    pub tool_calls: Vec<ScriptedCall>,
}

/// A function call the stand-in makes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCall {
    /// The function.
    pub name: String,
    /// Its arguments (JSON text, sent as is: a test may send broken JSON).
    pub arguments: String,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            answer: None,
            tokens_per_second: 0.0,
            token_chars: 4,
            first_token_delay_ms: 0,
            status: None,
            error_after: None,
            disconnect_after: None,
            usage: true,
            stamped: None,
            tool_calls: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    default: Behavior,
    script: VecDeque<Behavior>,
    requests: VecDeque<Value>,
}

/// A running stand-in. Dropping it does not stop it; [`StandIn::stop`] does.
#[derive(Debug, Clone)]
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<tokio::sync::Notify>,
}

impl StandIn {
    /// Serves on `listener` with `default` for requests no script covers.
    pub fn serve(listener: TcpListener, default: Behavior) -> std::io::Result<StandIn> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            default,
            ..Shared::default()
        }));
        let stop = Arc::new(tokio::sync::Notify::new());
        let app = router(shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.notified().await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "stand-in server failed");
            }
        });
        Ok(StandIn { addr, shared, stop })
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(default: Behavior) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, default)
    }

    /// The OpenAI-compatible base URL (`http://127.0.0.1:port/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues behaviours for the next chat requests, in order.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        lock(&self.shared).script.extend(behaviors);
    }

    /// The chat requests received so far (their JSON bodies).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared).requests.iter().cloned().collect()
    }

    /// Stops serving (open streams are cut).
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding this lock leaves plain data behind: keep serving.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn router(shared: Arc<Mutex<Shared>>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/_standin/script", post(script))
        .route("/_standin/requests", get(requests))
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(shared)
}

async fn script(
    State(shared): State<Arc<Mutex<Shared>>>,
    axum::Json(behaviors): axum::Json<Vec<Behavior>>,
) -> StatusCode {
    lock(&shared).script.extend(behaviors);
    StatusCode::NO_CONTENT
}

async fn requests(State(shared): State<Arc<Mutex<Shared>>>) -> axum::Json<Vec<Value>> {
    axum::Json(lock(&shared).requests.iter().cloned().collect())
}

async fn models() -> axum::Json<Value> {
    axum::Json(json!({"object": "list", "data": [
        {"id": "standin", "object": "model", "created": 0, "owned_by": "chorus-standin"}
    ]}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Microseconds since the epoch (the stamp of `Behavior::stamped` tokens).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "standin_error", "code": null}});
    (status, axum::Json(body)).into_response()
}

async fn chat(State(shared): State<Arc<Mutex<Shared>>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let behavior = {
        let mut s = lock(&shared);
        if s.requests.len() >= KEPT_REQUESTS {
            s.requests.pop_front();
        }
        s.requests.push_back(request.clone());
        s.script.pop_front().unwrap_or_else(|| s.default.clone())
    };
    if let Some(status) = behavior.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = error(status, "scripted failure");
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("0"));
        }
        return response;
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("standin")
        .to_owned();
    let prompt_chars: usize = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .map(str::len)
                .sum()
        })
        .unwrap_or(0);
    let answer = behavior
        .answer
        .clone()
        .unwrap_or_else(|| SAMPLE_ANSWER.to_owned());
    let tokens = match behavior.stamped {
        // Placeholders: each is replaced by its send time as it goes out.
        Some(n) => vec![String::new(); n.min(100_000)],
        None => tokenize(&answer, behavior.token_chars.max(1)),
    };
    let stamped = behavior.stamped.is_some();
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if !stream {
        if behavior.first_token_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(behavior.first_token_delay_ms)).await;
        }
        return axum::Json(json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": now(),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop"}],
            "usage": usage(prompt_chars, tokens.len()),
        }))
        .into_response();
    }
    let include_usage = behavior.usage
        && request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |v: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Bytes::from(format!("data: {v}\n\n"))))
                    .await
                    .is_ok()
            }
        };
        if behavior.first_token_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(behavior.first_token_delay_ms)).await;
        }
        let gap = (behavior.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / behavior.tokens_per_second));
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                   "created": now(), "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        if !send(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ))
        .await
        {
            return;
        }
        if !behavior.tool_calls.is_empty() {
            for (i, call) in behavior.tool_calls.iter().enumerate() {
                let id = format!("call_{i}");
                let first = json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]});
                if !send(chunk(first, Value::Null)).await {
                    return;
                }
                for piece in tokenize(&call.arguments, behavior.token_chars.max(1)) {
                    let delta = json!({"tool_calls": [{"index": i,
                        "function": {"arguments": piece}}]});
                    if !send(chunk(delta, Value::Null)).await {
                        return;
                    }
                }
            }
            if send(chunk(json!({}), json!("tool_calls"))).await && include_usage {
                let _ = send(
                    json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                           "created": now(), "model": model, "choices": [],
                           "usage": usage(prompt_chars, behavior.tool_calls.len())}),
                )
                .await;
            }
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            return;
        }
        for (i, token) in tokens.iter().enumerate() {
            if behavior.disconnect_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::other("scripted disconnect")))
                    .await;
                return;
            }
            if behavior.error_after == Some(i) {
                let _ = send(json!({"error": {"message": "scripted failure mid-stream",
                                              "type": "server_error"}}))
                .await;
                return;
            }
            if i > 0
                && let Some(gap) = gap
            {
                tokio::time::sleep(gap).await;
            }
            let token = if stamped {
                format!("t{} ", now_micros())
            } else {
                token.clone()
            };
            if !send(chunk(json!({"content": token}), Value::Null)).await {
                // The client went away (a cancelled run): stop generating.
                return;
            }
        }
        if !send(chunk(json!({}), json!("stop"))).await {
            return;
        }
        if include_usage {
            let _ = send(
                json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                                "created": now(), "model": model, "choices": [],
                                "usage": usage(prompt_chars, tokens.len())}),
            )
            .await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn usage(prompt_chars: usize, completion_tokens: usize) -> Value {
    let prompt = prompt_chars.div_ceil(4);
    json!({"prompt_tokens": prompt, "completion_tokens": completion_tokens,
           "total_tokens": prompt + completion_tokens})
}

/// Cuts text into pieces of about `n` characters (on character boundaries).
pub fn tokenize(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

async fn embeddings(axum::Json(req): axum::Json<EmbeddingRequest>) -> Response {
    let inputs: Vec<String> = match req.input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return error(StatusCode::BAD_REQUEST, "input must be a string or strings"),
    };
    let dims = req.dimensions.unwrap_or(384).clamp(1, 4096);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": embed(text, dims)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
    axum::Json(json!({"object": "list", "data": data,
                      "model": req.model.unwrap_or_else(|| "standin-embed".into()),
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

/// A deterministic unit vector from the words of `text` (texts sharing words are close).
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.to_lowercase().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let i = (h % dims as u64) as usize;
        v[i] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rebuild_the_answer() {
        let t = tokenize("héllo wörld", 3);
        assert_eq!(t.concat(), "héllo wörld");
        assert_eq!(t[0], "hél");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("pricing decision", 64);
        assert_eq!(a, embed("Pricing decision", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
