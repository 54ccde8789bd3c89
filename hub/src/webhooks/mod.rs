//! Webhook delivery from the durable outbox.
//!
//! The hub never calls a tenant's endpoint from a room or a request handler: it writes events to
//! the outbox ([`Catalog::enqueue_events`], or with the updates in `DocStore::append`), so an
//! event is exactly as durable as the change it reports and a slow receiver slows nobody. The
//! [`Dispatcher`] (one task per node, started by [`spawn`]) claims due events in batches
//! ([`Catalog::claim_events`] leases them, so several nodes share one outbox without sending an
//! event twice at the same time), POSTs each to its tenant's webhook and records the outcome
//! ([`Catalog::record_attempt`]): delivered on 2xx, otherwise retried with exponential backoff
//! and jitter, and given up after [`WebhookOptions::max_attempts`] (or at once on 410 Gone).
//!
//! Delivery is at least once. A node that stops (or is cancelled) between sending a request and
//! recording its outcome leaves the event leased; when the lease runs out another claim sends it
//! again. Receivers dedupe on the `Chorus-Delivery` header, which is the outbox id and stays the
//! same across retries.
//!
//! Each request is signed: `Chorus-Signature: v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` with
//! `t` the `Chorus-Timestamp` header (Unix seconds of this attempt). Signing the timestamp with
//! the body lets a receiver refuse replays of an old request; [`verify`] does both checks.
//!
//! Events a webhook does not subscribe to (its `events` list is non-empty and lacks the name)
//! are marked delivered with error `filtered` and no status, since the outbox has no other way
//! to retire a row; the webhook's last-attempt fields then show that skip. Events of a tenant
//! without a webhook are given up with error `no webhook configured`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_persistence::{Attempt, Catalog, OutboxEvent, StoreError, Webhook};
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

pub mod events;
mod signature;
mod target;

pub use signature::{sign, verify};
use target::PublicResolver;
pub use target::{check_target, is_internal};

/// Signature scheme prefix in `Chorus-Signature`; a new scheme would get a new prefix, and
/// receivers accept any signature they know.
const SCHEME: &str = "v1=";
/// Longest error text recorded for an attempt: errors are shown to tenants and stored per
/// event, so a receiver's error page must not fill the database.
const MAX_ERROR_CHARS: usize = 200;
/// Error recorded for events of a tenant that has no webhook (any more).
pub const NO_WEBHOOK: &str = "no webhook configured";
/// Error recorded for events the tenant's webhook does not subscribe to.
pub const FILTERED: &str = "filtered";

/// How the dispatcher claims, sends and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// How often the outbox is polled when nobody calls [`WebhookNotify::notify`]: it bounds
    /// the delay of retries and of events written by other nodes. Default 1 s.
    pub poll: Duration,
    /// How long a claimed event stays invisible to other claims. Must exceed the time to send
    /// a whole batch (`timeout` times `batch / concurrency`, rounded up): events whose lease
    /// would run out before their request could time out are left for the next claim rather
    /// than risk a second node sending them at the same time. Default 60 s.
    pub lease: Duration,
    /// Attempts before an event is given up. Default 12 (with the default backoff the last one
    /// is about 34 minutes after the first).
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it. Default 1 s.
    pub base_backoff: Duration,
    /// Longest delay between two attempts (before jitter). Default 1 h.
    pub max_backoff: Duration,
    /// Whole-request timeout, connect to last body byte. Default 10 s.
    pub timeout: Duration,
    /// Events claimed at once. Default 32.
    pub batch: u32,
    /// Requests in flight at once, so one node never opens more than this many sockets to
    /// receivers. Default 16.
    pub concurrency: usize,
    /// Whether receivers may be on loopback, private, link-local or other internal addresses.
    /// Off by default: a tenant's webhook must not reach the operator's internal network (or
    /// a cloud metadata endpoint). See `--webhook-allow-private`.
    pub allow_private: bool,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            max_attempts: 12,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            batch: 32,
            concurrency: 16,
            allow_private: false,
        }
    }
}

/// Wakes the dispatcher at once, so events written by this node go out without waiting for the
/// next poll. Cheap to clone; a wake-up while a round runs is kept for after it.
#[derive(Debug, Clone, Default)]
pub struct WebhookNotify {
    notify: Arc<Notify>,
}

impl WebhookNotify {
    /// Asks for a claim round now (call after writing events).
    pub fn notify(&self) {
        self.notify.notify_one();
    }
}

/// The delivery loop: claims due events, sends them, records each outcome.
pub struct Dispatcher {
    store: Arc<dyn Catalog>,
    options: WebhookOptions,
    client: reqwest::Client,
    /// Shared with every [`WebhookNotify`] handed out, so writers can wake this loop.
    wake: WebhookNotify,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Starts the dispatcher on the current runtime. It runs until `shutdown` is cancelled; the
/// handle resolves then (requests in flight are dropped, see the module doc).
pub fn spawn(
    store: Arc<dyn Catalog>,
    options: WebhookOptions,
    shutdown: CancellationToken,
) -> (WebhookNotify, JoinHandle<()>) {
    match Dispatcher::new(store, options) {
        Ok(dispatcher) => {
            let wake = dispatcher.notifier();
            (wake, tokio::spawn(dispatcher.run(shutdown)))
        }
        Err(e) => {
            // Only a broken TLS setup gets here; the hub keeps serving without webhooks and the
            // events wait in the outbox for a node that can send them.
            error!(error = %e, "webhook client could not be built; webhooks are not delivered");
            (WebhookNotify::default(), tokio::spawn(async {}))
        }
    }
}

impl Dispatcher {
    /// A dispatcher over `store`; fails only if the HTTP client cannot be built.
    pub fn new(store: Arc<dyn Catalog>, options: WebhookOptions) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect would send the signed body somewhere the tenant did not configure
            // (and could point at our internal network): a 3xx is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve receiver names itself, past the
            // resolver below that keeps webhooks out of the internal network.
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            // Names resolve through a resolver that drops internal addresses (unless allowed),
            // so a DNS name cannot smuggle a request into the internal network.
            .dns_resolver(Arc::new(PublicResolver {
                allow_private: options.allow_private,
            }))
            .user_agent(concat!(
                "chorus-hub/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .build()?;
        if options.lease <= options.timeout {
            warn!(
                lease = ?options.lease, timeout = ?options.timeout,
                "webhook lease not longer than the request timeout: events may be sent twice at once"
            );
        }
        Ok(Dispatcher {
            store,
            options,
            client,
            wake: WebhookNotify::default(),
        })
    }

    /// Events claimed per round; at least one, so a full round is never an empty one.
    fn batch(&self) -> u32 {
        self.options.batch.max(1)
    }

    /// A handle that wakes this dispatcher.
    pub fn notifier(&self) -> WebhookNotify {
        self.wake.clone()
    }

    /// Claims and delivers until `shutdown` is cancelled. A full batch is followed at once by
    /// another claim; otherwise the loop sleeps until the next poll or a wake-up.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let full = tokio::select! {
                () = shutdown.cancelled() => return,
                round = self.run_once() => match round {
                    Ok(claimed) => claimed >= self.batch() as usize,
                    Err(e) => {
                        // Claimed events stay leased and come back when the lease runs out.
                        warn!(error = %e, "webhook outbox claim failed");
                        false
                    }
                },
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notify.notified() => {}
                () = tokio::time::sleep(self.options.poll) => {}
            }
        }
    }

    /// One round: claims up to `batch` due events and delivers them, returning how many were
    /// claimed. Errors only when the claim itself fails; a failure to record one outcome is
    /// logged and that event is sent again after its lease.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claimed_at = Instant::now();
        let lease = secs_ceil(self.options.lease);
        let events = self
            .store
            .claim_events(unix_now(), lease, self.batch())
            .await?;
        let claimed = events.len();
        if claimed == 0 {
            return Ok(0);
        }
        debug!(claimed, "webhook events claimed");
        // One lookup per tenant per round: a batch usually holds many events of few tenants.
        let mut hooks: HashMap<String, Option<Arc<Webhook>>> = HashMap::new();
        let mut jobs = Vec::with_capacity(claimed);
        for event in events {
            let hook = match hooks.get(&event.tenant) {
                Some(hook) => hook.clone(),
                None => match self.store.get_webhook(&event.tenant).await {
                    Ok(hook) => {
                        let hook = hook.map(Arc::new);
                        hooks.insert(event.tenant.clone(), hook.clone());
                        hook
                    }
                    Err(e) => {
                        warn!(tenant = %event.tenant, error = %e, "webhook lookup failed");
                        continue;
                    }
                },
            };
            jobs.push((event, hook));
        }
        // The latest moment a request can start and still end (or time out) within the lease.
        // With a lease no longer than the timeout there is none; events are sent anyway, since
        // a possible duplicate beats never sending (`new` warns about that configuration).
        let send_by = self
            .options
            .lease
            .checked_sub(self.options.timeout)
            .filter(|margin| !margin.is_zero())
            .and_then(|margin| claimed_at.checked_add(margin));
        futures_util::stream::iter(jobs)
            .for_each_concurrent(self.options.concurrency.max(1), |(event, hook)| {
                self.process(event, hook, send_by)
            })
            .await;
        Ok(claimed)
    }

    /// Decides what to do with one claimed event and records it.
    async fn process(
        &self,
        event: OutboxEvent,
        hook: Option<Arc<Webhook>>,
        send_by: Option<Instant>,
    ) {
        let Some(hook) = hook else {
            let attempt = Attempt {
                at: unix_now(),
                status: None,
                error: Some(NO_WEBHOOK.to_owned()),
                delivered: false,
                retry_at: None,
            };
            self.record(&event, &attempt, "failed").await;
            return;
        };
        if !hook.events.is_empty() && !hook.events.contains(&event.event) {
            let attempt = Attempt {
                at: unix_now(),
                status: None,
                error: Some(FILTERED.to_owned()),
                delivered: true,
                retry_at: None,
            };
            self.record(&event, &attempt, "filtered").await;
            return;
        }
        // Waiting for a concurrency slot may have eaten the lease: sending now could overlap
        // with another node that has claimed the event again.
        if send_by.is_some_and(|t| Instant::now() > t) {
            debug!(
                id = event.id,
                "webhook lease too short to send; left for the next claim"
            );
            return;
        }
        let attempt = self.deliver(&event, &hook).await;
        let result = if attempt.delivered {
            "delivered"
        } else if attempt.retry_at.is_some() {
            "retry"
        } else {
            "failed"
        };
        self.record(&event, &attempt, result).await;
    }

    /// Sends one event and turns the outcome into an [`Attempt`].
    async fn deliver(&self, event: &OutboxEvent, hook: &Webhook) -> Attempt {
        let timestamp = unix_now();
        let payload = serde_json::json!({
            "id": event.id,
            "event": event.event,
            "tenant": event.tenant,
            "created": event.created,
            "data": event.body,
        });
        // A `Value` always serialises; an empty body would only fail the receiver's checks.
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        if let Err(e) = check_target(&hook.url, self.options.allow_private) {
            return Attempt {
                at: timestamp,
                status: None,
                error: Some(e),
                delivered: false,
                retry_at: None,
            };
        }
        let signature = sign(hook.secret.as_bytes(), timestamp, &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Chorus-Event", &event.event)
            .header("Chorus-Delivery", event.id.to_string())
            .header("Chorus-Timestamp", timestamp.to_string())
            .header("Chorus-Signature", signature)
            .body(body)
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    (Some(status.as_u16()), None)
                } else {
                    let excerpt = body_excerpt(response).await;
                    let error = if excerpt.is_empty() {
                        format!("HTTP {}", status.as_u16())
                    } else {
                        format!("HTTP {}: {excerpt}", status.as_u16())
                    };
                    (Some(status.as_u16()), Some(error))
                }
            }
            Err(e) => (None, Some(request_error(&e))),
        };
        metrics::histogram!(crate::metrics::names::WEBHOOK_DELIVERY_SECONDS)
            .record(started.elapsed());
        let attempts = u32::try_from(event.attempts).unwrap_or(0).saturating_add(1);
        let delivered = error.is_none();
        let next = if delivered || status == Some(410) || attempts >= self.options.max_attempts {
            None
        } else {
            Some(retry_at(
                SystemTime::now(),
                backoff(&self.options, attempts, rand::rng().random()),
            ))
        };
        if !delivered {
            debug!(
                tenant = %event.tenant, id = event.id, attempts, error = error.as_deref().unwrap_or(""),
                "webhook attempt failed"
            );
        }
        Attempt {
            at: timestamp,
            status: status.map(i32::from),
            error: error.map(|e| truncate(&e)),
            delivered,
            retry_at: next,
        }
    }

    /// Stores an outcome and counts it.
    async fn record(&self, event: &OutboxEvent, attempt: &Attempt, result: &'static str) {
        metrics::counter!(crate::metrics::names::WEBHOOK_DELIVERIES_TOTAL, "result" => result)
            .increment(1);
        if let Err(e) = self
            .store
            .record_attempt(&event.tenant, event.id, attempt)
            .await
        {
            // The event stays leased and is claimed again after the lease: at least once.
            warn!(tenant = %event.tenant, id = event.id, error = %e, "webhook attempt not recorded");
        }
    }
}

/// Delay after the `attempts`-th failed attempt: `base * 2^(attempts - 1)`, at most
/// `max_backoff`, plus up to a fifth more chosen by `jitter` (uniform in 0..1), so receivers
/// that failed together are not retried together.
fn backoff(options: &WebhookOptions, attempts: u32, jitter: f64) -> Duration {
    let factor = 2u32
        .checked_pow(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let delay = options
        .base_backoff
        .saturating_mul(factor)
        .min(options.max_backoff);
    delay.saturating_add(delay.mul_f64(jitter.clamp(0.0, 1.0) / 5.0))
}

/// The outbox keeps whole seconds: round the due time up, so a retry never comes before its
/// delay (sub-second delays, as in tests, wait for the next second).
fn retry_at(now: SystemTime, delay: Duration) -> i64 {
    let due = now
        .checked_add(delay)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    secs_ceil(due)
}

fn secs_ceil(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The start of a failed response's body, for the tenant's debugging: at most a few hundred
/// bytes are read, whatever the receiver sends.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_CHARS * 2 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(flat.trim())
}

/// A short description of a request that got no response. The URL is left out: it may carry a
/// token the tenant put in its query.
fn request_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".to_owned();
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid request (check the webhook url)"
    } else {
        "request failed"
    };
    // The innermost cause says what happened ("Connection refused", a TLS complaint).
    let mut cause: Option<&dyn std::error::Error> = None;
    let mut next = std::error::Error::source(e);
    while let Some(inner) = next {
        cause = Some(inner);
        next = inner.source();
    }
    match cause {
        Some(cause) => truncate(&format!("{kind}: {cause}")),
        None => kind.to_owned(),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = WebhookOptions {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..WebhookOptions::default()
        };
        let delays: Vec<u64> = (1..=6)
            .map(|n| backoff(&options, n, 0.0).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&options, 200, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(&options, 1, 1.0), Duration::from_millis(1200));
    }

    #[test]
    fn retry_is_never_early() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000_100);
        assert_eq!(retry_at(now, Duration::from_millis(900)), 10_001);
        assert_eq!(retry_at(now, Duration::from_millis(50)), 10_001);
        assert_eq!(retry_at(now, Duration::from_millis(950)), 10_002);
    }
}
