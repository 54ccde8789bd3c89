//! The Hocuspocus dialect on `/` and `/hocuspocus`, so `@hocuspocus/provider` works unchanged.
//!
//! One socket carries any number of documents (up to [`MAX_DOCUMENTS_PER_CONNECTION`]). Each
//! document is opened by its own auth message, carrying its own token: the hub verifies it like
//! a y-websocket token, answers `authenticated` (with the scope) or `permission-denied`, and
//! joins the room as a separate member whose outbound frames get the document's address in
//! front (see [`ConnHandle::for_document`]). Messages for a document that is not open (the
//! provider sends its SyncStep1 right behind the token, without waiting) are dropped.
//!
//! Updates are acknowledged with a sync status once they are durable, not merely applied, so a
//! provider's `hasUnsyncedChanges` means what it says. Readers' updates get a negative status.
//! Providers from 4.8 on get the connection-level ping they answer, since they drop a socket
//! that hears nothing for 30 s; older ones keep alive on awareness renewals, as with
//! Hocuspocus itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_persistence::RoomKey;
use chorus_protocol::CloseCode;
use chorus_protocol::hocuspocus::{self, DocMessage, Incoming};
use tokio::time::Instant;

use crate::auth::{Identity, Role};
use crate::outbound::{ConnHandle, Outbound, next_conn_id};
use crate::registry::RoomHandle;
use crate::server::AppState;
use crate::session::{Closing, Dialect, forward};
use crate::tenants::TenantSlot;

/// Most documents one socket may have open at once (Hocuspocus' own default is 100 pending).
pub const MAX_DOCUMENTS_PER_CONNECTION: usize = 100;

/// Longest session id accepted after the `\0` of an address, in bytes.
const MAX_SESSION_ID: usize = 128;

/// A socket that has no document open for this long is closed (1008): it only holds a slot
/// (Hocuspocus' own timeout for unauthenticated sockets is 30 s too).
pub const IDLE_WITHOUT_DOCUMENTS: Duration = Duration::from_secs(30);

/// Refused auth messages one socket may send before it is closed (1008): each costs a
/// signature check.
pub const MAX_REFUSALS: u32 = 20;

/// Documents of one socket that may share a room (providers with `sessionAwareness` open one
/// room under several addresses); more would multiply per-member limits.
pub const MAX_SAME_ROOM: usize = 4;

/// Patience for a room to load before the socket is closed (4503; the provider retries):
/// the socket's other documents wait meanwhile.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

struct OpenDoc {
    key: RoomKey,
    conn: ConnHandle,
    room: RoomHandle,
    // When its token expires: the document is closed then (4401's meaning, per document).
    expires: Option<u64>,
    // The rooms its token grants: the assistant's searches for this document see no others.
    grants: Vec<String>,
    // Counts against the tenant's connection limit while the document is open.
    _slot: TenantSlot,
}

/// A Hocuspocus connection's state: its open documents.
pub struct Hocuspocus {
    /// Shares the socket's queue and close signal; has no address itself.
    root: ConnHandle,
    app: Arc<AppState>,
    docs: HashMap<String, OpenDoc>,
    // Whether the provider answers the connection-level ping (4.8+).
    app_ping: bool,
    no_docs_since: Option<Instant>,
    refusals: u32,
    // The strictest messages-per-second limit among the tenants of the documents opened so
    // far (one socket may carry documents of several tenants).
    rate: Option<(u32, crate::session::RateLimit)>,
    // `--record-dir`: this socket's inbound frames (boxed: recording is rare).
    recorder: Option<Box<crate::session::recording::Recorder>>,
    /// Whether the page behind the socket may open documents without a token
    /// (`server::page_trust`).
    pub anonymous_allowed: bool,
    /// Whether the socket's trace is sampled (`--otlp-endpoint`): its documents' joins and
    /// updates get spans.
    pub traced: bool,
    // Awareness bytes this socket may still send (all its documents together).
    awareness: crate::session::ByteBudget,
    // Before the first document authenticates: a pre-auth place (`--max-preauth-connections`)
    // and a deadline (`--auth-timeout`). After: a node connection place.
    preauth: Option<(tokio::sync::OwnedSemaphorePermit, Instant)>,
    slot: Option<crate::outbound::Slot>,
    // Documents opened per second (`MAX_OPENS_PER_SECOND`).
    opens: crate::session::RateLimit,
}

/// Documents one socket may open (or re-authenticate) per second, after a first burst of twice
/// `MAX_DOCUMENTS_PER_CONNECTION` (a page may open all its documents at once, and swap some):
/// one socket
/// opening and closing documents in a loop would otherwise churn rooms and records.
pub const MAX_OPENS_PER_SECOND: u32 = 20;

impl Hocuspocus {
    /// A connection with no document open yet.
    pub fn new(
        root: ConnHandle,
        app: Arc<AppState>,
        preauth: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        let recorder = app
            .config
            .record_dir
            .as_deref()
            .and_then(|dir| crate::session::recording::Recorder::open_hocuspocus(dir, root.id))
            .map(Box::new);
        let rate = (app.config.messages_per_second > 0).then(|| {
            let r = app.config.messages_per_second;
            (r, crate::session::RateLimit::new(r))
        });
        let awareness = crate::session::ByteBudget::new(app.config.awareness_bytes_per_second);
        Hocuspocus {
            recorder,
            root,
            app,
            docs: HashMap::new(),
            app_ping: false,
            no_docs_since: Some(Instant::now()),
            refusals: 0,
            rate,
            awareness,
            preauth: Some((preauth, Instant::now())),
            slot: None,
            opens: crate::session::RateLimit::with_burst(
                MAX_OPENS_PER_SECOND,
                2 * MAX_DOCUMENTS_PER_CONNECTION as u32,
            ),
            anonymous_allowed: true,
            traced: false,
        }
    }

    /// Refuses a document; too many refusals close the socket.
    fn deny(&mut self, prefix: &[u8], reason: &str) -> Result<(), Closing> {
        metrics::counter!(crate::metrics::names::CONNECTIONS_REFUSED_TOTAL, "reason" => "hocuspocus_auth")
            .increment(1);
        crate::server::log_refusal("hocuspocus_auth", 4403, reason);
        self.root
            .send(Outbound::Binary(hocuspocus::permission_denied(
                prefix, reason,
            )));
        self.refusals += 1;
        if self.refusals > MAX_REFUSALS {
            return Err((CloseCode::Policy, "too many refused documents".into()));
        }
        Ok(())
    }

    async fn open(&mut self, address: String, token: &str) -> Result<(), Closing> {
        let prefix = hocuspocus::address_prefix(&address);
        if !self.opens.take() {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "hocuspocus_opens")
                .increment(1);
            return self.deny(&prefix, "documents opened too fast on one connection");
        }
        if let Some(doc) = self.docs.get(&address) {
            // A token refresh for an open document: it must still grant this room, and a new
            // role takes effect by reopening the document under it.
            let role_now = doc.conn.role;
            let refreshed = self
                .app
                .verifier
                .verify(Some(token))
                .await
                .ok()
                .filter(|i| *i.tenant == *doc.key.tenant && i.may_open(&doc.key.room))
                .map(|i| (i.role, i.expires));
            match refreshed {
                Some((role, expires)) if role == role_now => {
                    // Re-authentication before expiry keeps the document open.
                    if let Some(doc) = self.docs.get_mut(&address) {
                        doc.expires = expires;
                    }
                    return Ok(());
                }
                Some(_) => self.close_doc(&address).await,
                None => {
                    self.root.send(Outbound::Binary(hocuspocus::close(
                        &prefix,
                        "token no longer grants this document",
                    )));
                    self.close_doc(&address).await;
                    return self.deny(&prefix, "token no longer grants this document");
                }
            }
        }
        let name = hocuspocus::document_name(&address);
        if let Err(e) = crate::server::validate_room(name) {
            return self.deny(&prefix, &e.to_string());
        }
        if address.len() - name.len() > MAX_SESSION_ID + 1
            || address[name.len()..].chars().skip(1).any(char::is_control)
        {
            return self.deny(&prefix, "invalid session id");
        }
        if self.docs.len() >= MAX_DOCUMENTS_PER_CONNECTION {
            return self.deny(&prefix, "too many documents on one connection");
        }
        let identity: Identity = match self.app.verifier.verify(Some(token)).await {
            Ok(i) => i,
            Err(e) => return self.deny(&prefix, &e.to_string()),
        };
        if identity.expires.is_none() && !self.anonymous_allowed {
            return self.deny(
                &prefix,
                "anonymous access is only for pages on this machine: send a token",
            );
        }
        if self.slot.is_none() {
            // Authenticated: the socket now takes a place among the node's connections.
            match crate::server::reserve_connection(&self.app) {
                Ok(mut slot) => {
                    slot.attach_closer(self.root.id, self.root.closer());
                    self.slot = Some(slot);
                    self.preauth = None;
                }
                Err(e) => return self.deny(&prefix, &e.to_string()),
            }
        }
        let key = RoomKey::new(identity.tenant.clone(), name.to_string());
        if self.docs.values().filter(|d| d.key == key).count() >= MAX_SAME_ROOM {
            return self.deny(
                &prefix,
                "this room is open too many times on one connection",
            );
        }
        // Every refusal is an auth refusal, decided before "authenticated" goes out.
        let admitted = match crate::admission::admit(&self.app, &identity, name).await {
            Ok(a) => a,
            Err(refusal) => return self.deny(&prefix, &refusal.reason()),
        };
        if let Some(limit) = admitted.tenant.settings.messages_per_second
            && self.rate.as_ref().is_none_or(|(r, _)| limit < *r)
        {
            self.rate = Some((limit, crate::session::RateLimit::new(limit)));
        }
        let slot = admitted.slot;
        let conn = self
            .root
            .for_document(next_conn_id(), identity.role, prefix.clone())
            .with_user(identity.user.as_deref())
            .shown_as(identity.shown_as.clone());
        // The scope goes out before anything the room queues.
        conn.send(Outbound::Binary(hocuspocus::authenticated(
            &prefix,
            identity.role == Role::Read,
        )));
        let joining = if self.traced {
            tracing::debug_span!("join", room = %key)
        } else {
            tracing::Span::none()
        };
        let join =
            tracing::Instrument::instrument(self.app.registry.join(&key, conn.clone()), joining);
        match tokio::time::timeout(JOIN_TIMEOUT, join).await {
            Ok(Ok(room)) => {
                metrics::counter!(crate::metrics::names::CONNECTIONS_TOTAL).increment(1);
                crate::session::emit_presence(&self.app.events, &key, &conn, true);
                self.docs.insert(
                    address,
                    OpenDoc {
                        key,
                        conn,
                        room,
                        expires: identity.expires,
                        grants: identity.rooms().to_vec(),
                        _slot: slot,
                    },
                );
                self.no_docs_since = None;
                Ok(())
            }
            // A room that cannot load, or a node at its room limit after all: the provider
            // reconnects with backoff. (Closing the socket also removes a member whose join
            // the room still serves after a timeout: its queue is gone.)
            Ok(Err(e)) => Err((crate::session::join_close_code(&e), e.to_string())),
            Err(_) => Err((CloseCode::RoomUnavailable, "room load timed out".into())),
        }
    }

    async fn close_doc(&mut self, address: &str) {
        if let Some(doc) = self.docs.remove(address) {
            doc.room.leave(doc.conn.id).await;
            crate::session::emit_presence(&self.app.events, &doc.key, &doc.conn, false);
        }
        if self.docs.is_empty() {
            self.no_docs_since = Some(Instant::now());
        }
    }
}

impl Dialect for Hocuspocus {
    async fn binary(&mut self, frame: Bytes) -> Result<(), Closing> {
        if let Some((_, bucket)) = self.rate.as_mut()
            && !bucket.take()
        {
            return Err(crate::session::rate_exceeded());
        }
        if let Some(r) = self.recorder.as_mut() {
            r.hocuspocus_binary(&frame);
        }
        let incoming = Incoming::decode(frame).map_err(|_| {
            metrics::counter!(crate::metrics::names::BAD_FRAMES_TOTAL).increment(1);
            (CloseCode::InvalidPayload, "malformed message".to_string())
        })?;
        let (address, body) = match incoming {
            Incoming::Pong => return Ok(()),
            Incoming::Ping => {
                self.root
                    .send(Outbound::Binary(Bytes::from_static(hocuspocus::PONG_FRAME)));
                return Ok(());
            }
            Incoming::Doc { address, body } => (address, body),
        };
        match body {
            DocMessage::Auth {
                token,
                provider_version,
            } => {
                if provider_version
                    .as_deref()
                    .is_some_and(hocuspocus::answers_ping)
                {
                    self.app_ping = true;
                }
                // Boxed: opening a document (token, tenant, room load) is a large future that
                // would otherwise be reserved in every connection's state for its whole life;
                // it runs once per document.
                Box::pin(self.open(address, &token)).await
            }
            DocMessage::YSync(frame) => {
                let Some(doc) = self.docs.get(&address) else {
                    metrics::counter!(crate::metrics::names::HOCUSPOCUS_DROPPED_TOTAL).increment(1);
                    return Ok(());
                };
                forward(
                    &doc.key,
                    &doc.conn,
                    &doc.room,
                    frame,
                    doc.conn.role,
                    crate::session::FrameLimits::of(&self.app.config),
                    &mut self.awareness,
                    self.traced,
                )
                .await
            }
            // Stateless messages carry the assistant's JSON frames; others are for server
            // hooks, which Chorus does not have.
            DocMessage::Stateless(payload) => {
                let Some(doc) = self.docs.get(&address) else {
                    return Ok(());
                };
                match chorus_protocol::ext::decode_client(&payload) {
                    Ok(msg) if crate::session::ai::is_ai(&msg) => {
                        let conn = doc.conn.clone();
                        let reply = move |m: &chorus_protocol::ext::ServerMessage| {
                            conn.send_stateless(m);
                        };
                        let registry = self.app.registry.clone();
                        let (key, conn, role) = (doc.key.clone(), doc.conn.clone(), doc.conn.role);
                        let grants = doc.grants.clone();
                        Box::pin(crate::session::ai::handle(
                            &registry, &key, &conn, role, &grants, msg, reply,
                        ))
                        .await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            DocMessage::Close => {
                self.close_doc(&address).await;
                Ok(())
            }
            DocMessage::Unsupported(kind) => {
                metrics::counter!(crate::metrics::names::BAD_FRAMES_TOTAL).increment(1);
                Err((
                    CloseCode::UnsupportedData,
                    format!("message type {kind} is not accepted from clients"),
                ))
            }
        }
    }

    async fn text(&mut self, text: &str) -> Result<(), Closing> {
        if let Some(r) = self.recorder.as_mut() {
            r.text(text);
        }
        Err((
            CloseCode::UnsupportedData,
            "the hocuspocus protocol has no text frames".into(),
        ))
    }

    async fn tick(&mut self) -> Result<(), Closing> {
        if self
            .preauth
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= self.app.config.auth_timeout)
        {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "auth_timeout")
                .increment(1);
            return Err((
                CloseCode::Policy,
                "no document authenticated in time".into(),
            ));
        }
        if self
            .no_docs_since
            .is_some_and(|t| t.elapsed() >= IDLE_WITHOUT_DOCUMENTS)
        {
            return Err((CloseCode::Policy, "no document opened".into()));
        }
        // Documents whose token expired close (the provider re-authenticates before expiry
        // by sending a fresh token for the document: see `open`).
        let now = crate::auth::now_secs();
        let expired: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, d)| d.expires.is_some_and(|e| e <= now))
            .map(|(a, _)| a.clone())
            .collect();
        for address in expired {
            let prefix = hocuspocus::address_prefix(&address);
            self.root.send(Outbound::Binary(hocuspocus::close(
                &prefix,
                "token expired",
            )));
            self.root
                .send(Outbound::Binary(hocuspocus::permission_denied(
                    &prefix,
                    "token expired",
                )));
            metrics::counter!(crate::metrics::names::SESSIONS_EXPIRED_TOTAL).increment(1);
            self.close_doc(&address).await;
        }
        if self.app_ping {
            self.root
                .send(Outbound::Binary(Bytes::from_static(hocuspocus::PING_FRAME)));
        }
        Ok(())
    }

    async fn leave(&mut self) {
        for (_, doc) in self.docs.drain() {
            doc.room.leave(doc.conn.id).await;
            crate::session::emit_presence(&self.app.events, &doc.key, &doc.conn, false);
        }
    }
}
