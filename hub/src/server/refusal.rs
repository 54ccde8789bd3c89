//! Refusing a connection: counted, logged (rate-limited), and answered with an HTTP error,
//! or, for refusals a retry cannot fix, with an accepted socket closed at once (4401/4403).

use super::*;

pub(super) fn refused(reason: &'static str, e: ApiError) -> Response {
    metrics::counter!("chorus_connections_refused_total", "reason" => reason).increment(1);
    log_refusal(reason, e.parts().0.as_u16(), &e.to_string());
    e.into_response()
}

/// Sockets being closed at once for a refusal a retry cannot fix; past this many, such
/// refusals go back to plain HTTP errors, so a flood of bad tokens costs no more than it did.
/// One per process (tests run several hubs in one process; the bound is what matters).
pub(super) static CLOSING_REFUSALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// How long a refused socket waits for the client's close reply.
pub(super) const REFUSAL_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses for good (no token, a bad token, a room the token does not grant, a page that
/// may not connect): the upgrade is accepted and the socket closed at once with 4401 or 4403
/// and the reason. Browsers hide the HTTP status of a failed upgrade, and stock providers
/// retry a refused upgrade forever; a 4400-4499 close stops y-websocket's reconnect loop and
/// hands the reason to the application (its `connection-close` event). A request that is
/// not a WebSocket upgrade gets the HTTP error with its JSON body as before.
pub(super) fn refused_for_good(
    app: &AppState,
    ws: Result<Upgrade, ApiError>,
    reason: &'static str,
    e: ApiError,
) -> Response {
    let code = match e {
        ApiError::Unauthenticated(_) => chorus_protocol::CloseCode::Unauthenticated,
        _ => chorus_protocol::CloseCode::Forbidden,
    };
    let (Ok(ws), Ok(permit)) = (ws, CLOSING_REFUSALS.try_acquire()) else {
        return refused(reason, e);
    };
    metrics::counter!("chorus_connections_refused_total", "reason" => reason).increment(1);
    let message = e.to_string();
    log_refusal(reason, code.code(), &message);
    let protocol = select_protocol(&ws);
    ws.respond(
        protocol.as_deref(),
        ws_config(&app.config),
        move |mut socket| async move {
            use futures_util::{SinkExt, StreamExt};
            let _permit = permit;
            let frame = tungstenite::protocol::CloseFrame {
                code: code.code().into(),
                reason: chorus_protocol::close::truncate_reason(&message).into(),
            };
            let close = async {
                if socket
                    .send(crate::session::websocket::Message::Close(Some(frame)))
                    .await
                    .is_ok()
                {
                    // Wait for the client's reply so the close is clean (and not a reset).
                    while let Some(Ok(m)) = socket.next().await {
                        if matches!(m, crate::session::websocket::Message::Close(_)) {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(REFUSAL_CLOSE_WAIT, close).await;
        },
    )
}

/// Logs a refused connection at info, at most [`REFUSAL_LOG_BURST`] lines per second; the
/// rest are counted and reported with the next line, so a flood cannot fill the disk.
pub(crate) fn log_refusal(reason: &str, status: u16, message: &str) {
    use std::sync::Mutex;
    static WINDOW: Mutex<Option<(std::time::Instant, u32, u64)>> = Mutex::new(None);
    let suppressed = {
        let Ok(mut window) = WINDOW.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        let (start, logged, suppressed) = window.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= std::time::Duration::from_secs(1) {
            *start = now;
            *logged = 0;
        }
        if *logged >= REFUSAL_LOG_BURST {
            *suppressed += 1;
            return;
        }
        *logged += 1;
        std::mem::take(suppressed)
    };
    if suppressed > 0 {
        tracing::info!(
            reason,
            status,
            suppressed,
            "connection refused: {message} ({suppressed} more refusals not logged)"
        );
    } else {
        tracing::info!(reason, status, "connection refused: {message}");
    }
}

/// Refusal log lines per second (see [`log_refusal`]).
pub(super) const REFUSAL_LOG_BURST: u32 = 10;
