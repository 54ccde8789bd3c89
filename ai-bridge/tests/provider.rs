//! The OpenAI-compatible provider over real HTTP against the stand-in server: streaming,
//! usage, retries before the first token only, timeouts, errors mid-stream, cancellation.

use std::time::{Duration, Instant};

use chorus_ai_bridge::openai::{OpenAiProvider, ProviderConfig, Secret};
use chorus_ai_bridge::provider::{
    self, ChatMessage, ChatRequest, Chunk, Policy, Provider, ProviderError, Role, Tool, ToolCall,
    ToolCalls,
};
use chorus_ai_bridge::standin::{Behavior, SAMPLE_ANSWER, ScriptedCall, StandIn};
use tokio_util::sync::CancellationToken;

fn provider(standin: &StandIn) -> OpenAiProvider {
    OpenAiProvider::new(ProviderConfig {
        name: "standin".into(),
        flavor: Default::default(),
        base_url: standin.base_url(),
        api_key: Secret::new("sk-test-secret-key"),
        models: vec!["standin-1".into()],
        headers: [("x-team".to_owned(), "chorus".to_owned())].into(),
        api_version: None,
        connect_timeout_ms: Some(2_000),
    })
    .expect("provider")
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "standin-1".into(),
        messages: vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "hello"),
        ],
        max_tokens: Some(100),
        tools: Vec::new(),
    }
}

fn fast() -> Policy {
    Policy {
        first_token: Duration::from_secs(5),
        between_tokens: Duration::from_secs(5),
        total: Duration::from_secs(20),
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

async fn collect(
    answer: &mut provider::Answer,
) -> (String, Option<(u64, u64)>, Option<ProviderError>) {
    let mut text = String::new();
    let mut usage = None;
    loop {
        match answer.next().await {
            Ok(Some(Chunk::Text(t))) => text.push_str(&t),
            Ok(Some(Chunk::Usage { prompt, completion })) => usage = Some((prompt, completion)),
            Ok(Some(Chunk::ToolCall { .. })) => panic!("a function call where text was expected"),
            Ok(None) => return (text, usage, None),
            Err(e) => return (text, usage, Some(e)),
        }
    }
}

#[tokio::test]
async fn streams_the_answer_with_usage_and_sends_what_was_asked() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let p = provider(&standin);
    let mut answer = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect("start");
    let (text, usage, err) = collect(&mut answer).await;
    assert_eq!(err, None);
    assert_eq!(text, SAMPLE_ANSWER);
    let (prompt, completion) = usage.expect("usage");
    assert!(prompt > 0 && completion > 0);
    let sent = standin.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], "standin-1");
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(sent[0]["messages"][1]["content"], "hello");
}

#[tokio::test]
async fn retries_429_and_5xx_before_the_first_token() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    standin.script([
        Behavior {
            status: Some(429),
            ..Behavior::default()
        },
        Behavior {
            status: Some(503),
            ..Behavior::default()
        },
    ]);
    let p = provider(&standin);
    let mut answer = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect("third attempt");
    assert_eq!(answer.attempts, 3);
    let (text, _, err) = collect(&mut answer).await;
    assert_eq!((text.as_str(), err), (SAMPLE_ANSWER, None));
    // Out of attempts: the last error, classified.
    standin.script((0..3).map(|_| Behavior {
        status: Some(429),
        ..Behavior::default()
    }));
    let err = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect_err("three 429s");
    assert_eq!(err.code(), "rate_limited");
    // A 400 is not retried.
    standin.script([Behavior {
        status: Some(400),
        ..Behavior::default()
    }]);
    let before = standin.requests().len();
    let err = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect_err("400");
    assert!(matches!(err, ProviderError::Status { status: 400, .. }));
    assert_eq!(standin.requests().len(), before + 1);
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_answer_without_a_retry() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    standin.script([Behavior {
        error_after: Some(5),
        ..Behavior::default()
    }]);
    let p = provider(&standin);
    let mut answer = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect("start");
    let (text, _, err) = collect(&mut answer).await;
    assert!(!text.is_empty() && SAMPLE_ANSWER.starts_with(&text));
    assert!(matches!(err, Some(ProviderError::Stream(_))), "{err:?}");
    assert_eq!(
        standin.requests().len(),
        1,
        "no retry after the first token"
    );

    standin.script([Behavior {
        disconnect_after: Some(3),
        tokens_per_second: 50.0,
        ..Behavior::default()
    }]);
    let mut answer = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect("start");
    let (text, _, err) = collect(&mut answer).await;
    assert!(SAMPLE_ANSWER.starts_with(&text));
    assert!(err.is_some(), "a cut connection is an error, not an end");

    // Cut before any text: retried like a failed connection.
    standin.script([Behavior {
        disconnect_after: Some(0),
        ..Behavior::default()
    }]);
    let mut answer = provider::start(&p, &request(), fast(), CancellationToken::new())
        .await
        .expect("retried");
    assert_eq!(answer.attempts, 2);
    let (text, _, err) = collect(&mut answer).await;
    assert_eq!((text.as_str(), err), (SAMPLE_ANSWER, None));
}

#[tokio::test]
async fn timeouts_bound_the_first_token_the_gaps_and_the_whole_run() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let p = provider(&standin);
    standin.script([Behavior {
        first_token_delay_ms: 2_000,
        ..Behavior::default()
    }]);
    let policy = Policy {
        first_token: Duration::from_millis(200),
        attempts: 1,
        ..fast()
    };
    let t = Instant::now();
    let err = provider::start(&p, &request(), policy, CancellationToken::new())
        .await
        .expect_err("slow first token");
    assert_eq!(err, ProviderError::Timeout("first token"));
    assert!(t.elapsed() < Duration::from_secs(2));

    standin.script([Behavior {
        tokens_per_second: 2.0,
        ..Behavior::default()
    }]);
    let policy = Policy {
        between_tokens: Duration::from_millis(100),
        ..fast()
    };
    let mut answer = provider::start(&p, &request(), policy, CancellationToken::new())
        .await
        .expect("start");
    let (_, _, err) = collect(&mut answer).await;
    assert_eq!(err, Some(ProviderError::Timeout("between tokens")));

    standin.script([Behavior {
        tokens_per_second: 20.0,
        ..Behavior::default()
    }]);
    let policy = Policy {
        total: Duration::from_millis(400),
        ..fast()
    };
    let t = Instant::now();
    let mut answer = provider::start(&p, &request(), policy, CancellationToken::new())
        .await
        .expect("start");
    let (_, _, err) = collect(&mut answer).await;
    assert_eq!(err, Some(ProviderError::Timeout("total")));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn cancelling_returns_at_once() {
    let standin = StandIn::start(Behavior {
        tokens_per_second: 10.0,
        ..Behavior::default()
    })
    .await
    .expect("standin");
    let p = provider(&standin);
    let cancel = CancellationToken::new();
    let mut answer = provider::start(&p, &request(), fast(), cancel.clone())
        .await
        .expect("start");
    assert!(matches!(answer.next().await, Ok(Some(Chunk::Text(_)))));
    cancel.cancel();
    let t = Instant::now();
    assert_eq!(answer.next().await, Err(ProviderError::Cancelled));
    assert!(t.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn keys_never_show_and_unknown_models_are_refused() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let p = provider(&standin);
    let shown = format!("{p:?} {:?}", p.config());
    assert!(!shown.contains("sk-test-secret-key"), "{shown}");
    let mut req = request();
    req.model = "gpt-elsewhere".into();
    let err = provider::start(&p, &req, fast(), CancellationToken::new())
        .await
        .expect_err("unknown model");
    assert!(matches!(err, ProviderError::Refused(_)));
    assert!(standin.requests().is_empty());
    // No server: a connection error, retried, then reported without the URL.
    standin.stop();
    let closed = OpenAiProvider::new(ProviderConfig {
        base_url: "http://127.0.0.1:9/v1?key=sk-in-url".into(),
        ..p.config().clone()
    })
    .expect("provider");
    let err = provider::start(&closed, &request(), fast(), CancellationToken::new())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ProviderError::Connection(_)), "{err:?}");
    assert!(!err.to_string().contains("sk-"), "{err}");
}

/// Function calling over the wire: the tools go out with the request, the call streams back in
/// pieces and is put together, and the next request carries the call and its result.
#[tokio::test]
async fn function_calls_stream_in_pieces_and_results_go_back() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    standin.script([Behavior {
        tool_calls: vec![ScriptedCall {
            name: "search_documents".into(),
            arguments: r#"{"query":"pricing decision","limit":3}"#.into(),
        }],
        token_chars: 5,
        ..Behavior::default()
    }]);
    let p = provider(&standin);
    let mut req = request();
    req.tools = vec![Tool {
        name: "search_documents".into(),
        description: "search".into(),
        parameters: serde_json::json!({"type": "object",
            "properties": {"query": {"type": "string"}}, "required": ["query"]}),
    }];
    let mut answer = provider::start(&p, &req, fast(), CancellationToken::new())
        .await
        .expect("start");
    let mut calls = ToolCalls::default();
    let mut pieces = 0;
    while let Some(chunk) = answer.next().await.expect("next") {
        if let Chunk::ToolCall {
            index,
            id,
            name,
            arguments,
        } = chunk
        {
            pieces += 1;
            assert!(calls.push(index, id, name, &arguments));
        }
    }
    assert!(pieces > 2, "the arguments arrive in pieces");
    let calls = calls.into_calls();
    assert_eq!(
        calls,
        [ToolCall {
            id: "call_0".into(),
            name: "search_documents".into(),
            arguments: r#"{"query":"pricing decision","limit":3}"#.into(),
        }]
    );
    let sent = standin.requests();
    assert_eq!(sent[0]["tools"][0]["function"]["name"], "search_documents");
    // The second turn: the call and its result, then a text answer.
    req.messages.push(ChatMessage::calls(calls));
    req.messages
        .push(ChatMessage::tool_result("call_0", "team/plan: ten euros"));
    let mut answer = provider::start(&p, &req, fast(), CancellationToken::new())
        .await
        .expect("start");
    let (text, _, err) = collect(&mut answer).await;
    assert_eq!((text.as_str(), err), (SAMPLE_ANSWER, None));
    let sent = standin.requests();
    let messages = &sent[1]["messages"];
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_0");
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_0");
    assert_eq!(messages[3]["content"], "team/plan: ten euros");
}

/// Argument text a model streams is bounded.
#[test]
fn tool_call_pieces_are_bounded() {
    let mut calls = ToolCalls::default();
    let big = "x".repeat(ToolCalls::MAX_BYTES / 2);
    assert!(calls.push(0, Some("a".into()), Some("f".into()), &big));
    assert!(calls.push(0, None, None, &big));
    assert!(!calls.push(0, None, None, "more"));
    let mut many = ToolCalls::default();
    for i in 0..16 {
        assert!(many.push(i, None, None, ""));
    }
    assert!(!many.push(16, None, None, ""));
}

/// Embeddings through the real client: one unit vector per input, in order, with usage.
#[tokio::test]
async fn embeddings_come_back_in_input_order() {
    let standin = StandIn::start(Behavior::default()).await.expect("standin");
    let p = provider(&standin);
    let inputs = vec!["pricing decision".to_owned(), "holiday plans".to_owned()];
    let out = p
        .embed("standin-embed", &inputs, Some(64))
        .await
        .expect("embed");
    assert_eq!(out.vectors.len(), 2);
    assert_eq!(
        out.vectors[0],
        chorus_ai_bridge::standin::embed("pricing decision", 64)
    );
    assert_eq!(
        out.vectors[1],
        chorus_ai_bridge::standin::embed("holiday plans", 64)
    );
    assert!(out.tokens > 0);
    // An unreachable provider is an error, not a panic.
    standin.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(p.embed("standin-embed", &inputs, None).await.is_err());
}
