//! The assistant's extension frames (`ai.ask`, `ai.cancel`, `ai.revert`, `ai.accept`,
//! `ai.reject`), answered with `ai.run`, `ai.done` and `ai.error`. Shared by both dialects:
//! a Hocuspocus client sends the same JSON in a stateless message.

use chorus_persistence::RoomKey;
use chorus_protocol::ext::{ClientMessage, ServerMessage};

use crate::ai::{Asker, Op, Refusal};
use crate::auth::Role;
use crate::outbound::ConnHandle;
use crate::registry::Registry;

fn error(run: Option<String>, request: Option<String>, r: Refusal) -> ServerMessage {
    ServerMessage::AiError {
        run,
        request,
        code: r.code.to_owned(),
        message: r.message,
    }
}

/// Whether a message is one of the assistant's.
pub(super) fn is_ai(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::AiAsk(_)
            | ClientMessage::AiCancel { .. }
            | ClientMessage::AiRevert { .. }
            | ClientMessage::AiAccept { .. }
            | ClientMessage::AiReject { .. }
    )
}

/// Handles an assistant message from a member of `key`. Answers go to `reply` (for a
/// y-websocket member, its extension frames; for Hocuspocus, stateless messages); the run's
/// own status changes go to `conn`.
pub(super) async fn handle(
    registry: &Registry,
    key: &RoomKey,
    conn: &ConnHandle,
    role: Role,
    grants: &[String],
    msg: ClientMessage,
    reply: impl Fn(&ServerMessage) + Send + Sync + 'static,
) {
    // Hocuspocus documents get the run's status changes through `reply` (stateless
    // messages); extension connections straight from the run.
    let stateless = conn.answers_with_step1();
    let Some(assistant) = registry.assistant().cloned() else {
        let request = match &msg {
            ClientMessage::AiAsk(a) => a.id.clone(),
            _ => None,
        };
        reply(&error(
            None,
            request,
            Refusal {
                code: "ai_disabled",
                message: "no model provider is configured on this node".into(),
            },
        ));
        return;
    };
    let who = Asker {
        key: key.clone(),
        user: conn.user.as_deref().map(str::to_owned),
        role,
        conn: (!stateless).then(|| conn.clone()),
        grants: grants.to_vec(),
    };
    match msg {
        ClientMessage::AiAsk(ask) => {
            let request = ask.id.clone();
            match assistant.ask(who, ask, None).await {
                Err(r) => reply(&error(None, request, r)),
                Ok(record) if stateless => {
                    let Some(active) = assistant.active(&record.id) else {
                        return;
                    };
                    let mut events = active.subscribe();
                    drop(active);
                    tokio::spawn(async move {
                        while let Ok(m) = events.recv().await {
                            let end = matches!(m, ServerMessage::AiDone { .. });
                            reply(&m);
                            if end {
                                break;
                            }
                        }
                    });
                }
                Ok(_) => {}
            }
        }
        other => {
            let (run, op) = match other {
                ClientMessage::AiCancel { run } => (run, None),
                ClientMessage::AiRevert { run } => (run, Some(Op::Revert)),
                ClientMessage::AiAccept { run } => (run, Some(Op::Accept)),
                ClientMessage::AiReject { run } => (run, Some(Op::Reject)),
                _ => return,
            };
            // These wait for a run to stop or a change to be stored: off the socket's task.
            tokio::spawn(async move {
                let done = match op {
                    None => assistant.cancel(&who, &run).await,
                    Some(op) => assistant.change(&who, &run, op).await,
                };
                match done {
                    Ok(record) => reply(&ServerMessage::AiRun {
                        run: record.id,
                        status: record.status,
                        request: None,
                        queued_behind: None,
                    }),
                    Err(r) => reply(&error(Some(run), None, r)),
                }
            });
        }
    }
}
