//! The HTTP accept loop: hyper's HTTP/1 server with a timer, so that a client must send each
//! request's headers within `--header-read-timeout` (a socket that sends half a request line,
//! or idles on keep-alive, is closed: slowloris), and at most `--max-pending-connections`
//! sockets wait for a request or an upgrade at once (over that, new sockets are closed at
//! accept). A socket's place is released when it upgrades to a WebSocket: those are counted
//! by `--max-connections` instead. (`axum::serve` builds hyper without a timer: no header
//! timeout at all.)

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// Limits of the accept loop (from the config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// See `--header-read-timeout`.
    pub header_read_timeout: Duration,
    /// See `--max-pending-connections`.
    pub max_pending: usize,
}

/// Accepts and serves connections until `stop`; then in-flight requests finish (hyper's
/// graceful shutdown) while upgraded WebSockets go on until the node drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    // Built once: `timer` allocates, and every connection would repeat it.
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let tcp = tokio::select! {
            res = listener.accept() => match res {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "pending_connections")
                .increment(1);
            drop(tcp);
            continue;
        };
        // Small messages must leave at once: with Nagle's algorithm on, a lone update waits
        // for the peer's delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let stop = stop.clone();
        let http1 = http1.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut router = router.clone();
                async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
            });
            let conn = http1
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
            drop(permit);
        });
    }
}
