//! The room's chat, kept in the document so that late joiners see its history and it
//! persists like any edit. People's clients and the assistant write it alike.
//!
//! Schema (root `chat`, a Y.Array of Y.Map messages):
//!
//! | key | type | |
//! |---|---|---|
//! | `id` | string | unique message id |
//! | `author` | string | the user (`sub`) or `assistant` |
//! | `role` | string | `user` or `assistant` |
//! | `text` | Y.Text | grows by deltas while `status` is `streaming` |
//! | `status` | string | `streaming`, `done`, `cancelled`, `interrupted`, `failed` |
//! | `run` | string | the AI run that wrote it (assistant messages) |
//! | `model` | string | the model (assistant messages) |
//! | `asked_by` | string | who asked (assistant messages) |
//! | `time` | number | milliseconds since the epoch |
//! | `reply_to` | string | the message answered, if any |
//!
//! A long answer costs update bytes linear in its length: each delta is an insert at the end
//! of `text`, never a rewrite of the message.

use std::sync::Arc;

use yrs::{
    Any, Array, ArrayRef, GetString, Map, MapPrelim, MapRef, Out, ReadTxn, Text, TextPrelim,
    TextRef, TransactionMut,
};

/// The root Y.Array of the chat.
pub const CHAT: &str = "chat";

/// A message's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still being written.
    Streaming,
    /// Complete.
    Done,
    /// Stopped by someone; the partial text stays.
    Cancelled,
    /// The node writing it stopped; the partial text stays.
    Interrupted,
    /// The provider failed mid-answer; the partial text stays.
    Failed,
}

impl Status {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Streaming => "streaming",
            Status::Done => "done",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }
}

/// A new assistant message.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Message id.
    pub id: &'a str,
    /// The run writing it.
    pub run: &'a str,
    /// The model.
    pub model: &'a str,
    /// Who asked.
    pub asked_by: &'a str,
    /// The message answered.
    pub reply_to: Option<&'a str>,
    /// Milliseconds since the epoch.
    pub time: u64,
}

/// Writes one assistant message as its answer streams.
#[derive(Debug)]
pub struct ChatWriter {
    message: MapRef,
    text: TextRef,
}

impl ChatWriter {
    /// Appends a `streaming` message to the chat.
    pub fn start(txn: &mut TransactionMut, chat: &ArrayRef, m: &NewMessage<'_>) -> Self {
        let mut prelim = MapPrelim::default();
        let mut put = |k: &str, v: Any| {
            prelim.insert(Arc::from(k), yrs::In::Any(v));
        };
        put("id", Any::from(m.id));
        put("author", Any::from("assistant"));
        put("role", Any::from("assistant"));
        put("status", Any::from(Status::Streaming.as_str()));
        put("run", Any::from(m.run));
        put("model", Any::from(m.model));
        put("asked_by", Any::from(m.asked_by));
        put("time", Any::from(m.time as f64));
        if let Some(r) = m.reply_to {
            put("reply_to", Any::from(r));
        }
        let len = chat.len(txn);
        let message = chat.insert(txn, len, prelim);
        let text = message.insert(txn, "text", TextPrelim::new(""));
        ChatWriter { message, text }
    }

    /// Sets the message's citations: `(room, passage)` pairs of other rooms the answer drew
    /// on, as a `citations` list of `{room, snippet}` maps.
    pub fn cite(&self, txn: &mut TransactionMut, citations: &[(String, String)]) {
        if citations.is_empty() {
            return;
        }
        let list: Vec<Any> = citations
            .iter()
            .map(|(room, snippet)| {
                let mut m = std::collections::HashMap::new();
                m.insert("room".to_owned(), Any::from(room.as_str()));
                m.insert("snippet".to_owned(), Any::from(snippet.as_str()));
                Any::from(m)
            })
            .collect();
        self.message.insert(txn, "citations", Any::from(list));
    }

    /// Appends a piece of the answer.
    pub fn push(&self, txn: &mut TransactionMut, piece: &str) {
        self.text.push(txn, piece);
    }

    /// Sets the message's status.
    pub fn set_status(&self, txn: &mut TransactionMut, status: Status) {
        self.message.insert(txn, "status", status.as_str());
    }
}

/// Appends a complete message written by a person or a bot (`role` `user`, `status` `done`).
pub fn push_user(
    txn: &mut TransactionMut,
    chat: &ArrayRef,
    id: &str,
    author: &str,
    text: &str,
    time: u64,
) {
    let mut prelim = MapPrelim::default();
    let mut put = |k: &str, v: Any| {
        prelim.insert(Arc::from(k), yrs::In::Any(v));
    };
    put("id", Any::from(id));
    put("author", Any::from(author));
    put("role", Any::from("user"));
    put("status", Any::from(Status::Done.as_str()));
    put("time", Any::from(time as f64));
    let len = chat.len(txn);
    let message = chat.insert(txn, len, prelim);
    message.insert(txn, "text", TextPrelim::new(text));
}

/// A chat message as read back (for the assistant's context and for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Who wrote it.
    pub author: String,
    /// Its text.
    pub text: String,
    /// Its status (`None` if absent or unknown).
    pub status: Option<String>,
    /// The run, for assistant messages.
    pub run: Option<String>,
}

/// The last `n` messages, oldest first. Malformed entries (anyone may write the chat) are
/// skipped.
pub fn recent<T: ReadTxn>(txn: &T, chat: &ArrayRef, n: usize) -> Vec<Message> {
    let len = chat.len(txn) as usize;
    let mut out = Vec::new();
    for i in len.saturating_sub(n)..len {
        let Some(Out::YMap(m)) = chat.get(txn, i as u32) else {
            continue;
        };
        let s = |k: &str| match m.get(txn, k) {
            Some(Out::Any(Any::String(s))) => Some(s.to_string()),
            _ => None,
        };
        let text = match m.get(txn, "text") {
            Some(Out::YText(t)) => t.get_string(txn),
            Some(Out::Any(Any::String(s))) => s.to_string(),
            _ => continue,
        };
        out.push(Message {
            role: s("role").unwrap_or_else(|| "user".into()),
            author: s("author").unwrap_or_default(),
            text,
            status: s("status"),
            run: s("run"),
        });
    }
    out
}

/// Sets the status of run `run`'s message, if it is still `streaming` (used when the node
/// that wrote it is gone: `interrupted`). Returns whether a message changed.
pub fn settle(txn: &mut TransactionMut, chat: &ArrayRef, run: &str, status: Status) -> bool {
    let len = chat.len(txn);
    for i in (0..len).rev() {
        let Some(Out::YMap(m)) = chat.get(txn, i) else {
            continue;
        };
        let is_run = matches!(m.get(txn, "run"), Some(Out::Any(Any::String(r))) if &*r == run);
        if !is_run {
            continue;
        }
        let streaming = matches!(m.get(txn, "status"),
            Some(Out::Any(Any::String(s))) if &*s == Status::Streaming.as_str());
        if streaming {
            m.insert(txn, "status", status.as_str());
            return true;
        }
        return false;
    }
    false
}
