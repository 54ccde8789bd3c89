//! Refusing a connection: counted, logged (rate-limited), and answered with an HTTP error,
//! or, for refusals a retry cannot fix, with an accepted socket closed at once (4401/4403).

use super::*;

pub(super) fn refused(reason: &'static str, e: ApiError) -> Response {
    metrics::counter!(crate::metrics::names::CONNECTIONS_REFUSED_TOTAL, "reason" => reason)
        .increment(1);
    log_refusal(reason, e.parts().0.as_u16(), &e.to_string());
    e.into_response()
}

/// Sockets being closed at once for a refusal a retry cannot fix; past this many, such
/// refusals go back to plain HTTP errors, so a flood of bad tokens costs no more than it did.
/// One per process (tests run several hubs in one process; the bound is what matters).
static CLOSING_REFUSALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// How long a refused socket waits for the client's close reply.
const REFUSAL_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    metrics::counter!(crate::metrics::names::CONNECTIONS_REFUSED_TOTAL, "reason" => reason)
        .increment(1);
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
    static WINDOW: std::sync::Mutex<LogWindow> = std::sync::Mutex::new(LogWindow::new());
    let admitted = match WINDOW.lock() {
        Ok(mut window) => window.admit(std::time::Instant::now()),
        Err(_) => return,
    };
    match admitted {
        Some(0) => tracing::info!(reason, status, "connection refused: {message}"),
        Some(suppressed) => tracing::info!(
            reason,
            status,
            suppressed,
            "connection refused: {message} ({suppressed} more refusals not logged)"
        ),
        None => {}
    }
}

/// At most [`REFUSAL_LOG_BURST`] lines per second, counting the ones left out.
struct LogWindow {
    start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogWindow {
    const fn new() -> Self {
        LogWindow {
            start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log this one, with the `n` left out since the last line; `None`: leave it
    /// out.
    fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let start = *self.start.get_or_insert(now);
        if now.duration_since(start) >= std::time::Duration::from_secs(1) {
            self.start = Some(now);
            self.logged = 0;
        }
        if self.logged >= REFUSAL_LOG_BURST {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Refusal log lines per second (see [`log_refusal`]).
const REFUSAL_LOG_BURST: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_flood_of_refusals_logs_a_burst_a_second_and_counts_the_rest() {
        let mut window = LogWindow::new();
        let t0 = Instant::now();
        let first: Vec<_> = (0..25).map(|_| window.admit(t0)).collect();
        assert_eq!(
            first.iter().filter(|a| a.is_some()).count(),
            REFUSAL_LOG_BURST as usize
        );
        assert!(
            first[REFUSAL_LOG_BURST as usize..]
                .iter()
                .all(Option::is_none)
        );
        // The next second's first line says how many were left out.
        assert_eq!(window.admit(t0 + Duration::from_millis(1001)), Some(15));
        assert_eq!(window.admit(t0 + Duration::from_millis(1002)), Some(0));
    }
}
