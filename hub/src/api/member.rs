//! The caller of a room-scoped endpoint: a tenant's API key or the operator (every room of
//! the tenant, write access), or a client's JWT as a Bearer token (or nothing, where the node
//! allows anonymous access), limited to the token's `rooms` and `role`. A browser calls these
//! endpoints with its user's token and never holds an API key.

use std::sync::Arc;

use axum::http::header;
use axum::http::request::Parts;
use chorus_persistence::RoomKey;

use super::{ApiResult, Caller, Problem, bearer};
use crate::ai::Asker;
use crate::auth::{Identity, Role};
use crate::server::{AppState, validate_room};

/// Who calls a room-scoped endpoint: a tenant's API key or the operator (every room, write),
/// or a client's token (its rooms and role).
pub(crate) struct Member {
    pub(crate) tenant: String,
    user: Option<String>,
    role: Role,
    /// `None` for API keys and the operator.
    identity: Option<Identity>,
}

impl Member {
    /// The room, if the caller may open it.
    pub(crate) fn room(&self, room: String) -> ApiResult<RoomKey> {
        validate_room(&room).map_err(|e| Problem::bad_request(e.to_string()))?;
        if let Some(id) = &self.identity
            && !id.may_open(&room)
        {
            return Err(Problem::forbidden("the token does not grant this room"));
        }
        Ok(RoomKey::new(self.tenant.clone(), room))
    }

    /// Refuses read-only callers.
    pub(crate) fn require_write(&self) -> ApiResult<()> {
        if self.role == Role::Write {
            Ok(())
        } else {
            Err(Problem::forbidden("the token grants read access only"))
        }
    }

    /// The rooms it may open, as token patterns (`*` for API keys and the operator).
    pub(crate) fn grants(&self) -> Vec<String> {
        match &self.identity {
            Some(id) => id.rooms().to_vec(),
            None => vec!["*".to_owned()],
        }
    }

    pub(crate) fn may_see(&self, room: &str) -> bool {
        self.identity.as_ref().is_none_or(|id| id.may_open(room))
    }

    pub(crate) fn asker(&self, key: RoomKey) -> Asker {
        Asker {
            key,
            user: self.user.clone(),
            role: self.role,
            conn: None,
            grants: self.grants(),
        }
    }
}

impl axum::extract::FromRequestParts<Arc<AppState>> for Member {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(_) => Some(bearer(&parts.headers)?.to_owned()),
        };
        let is_key = token.as_deref().is_some_and(|t| {
            t.starts_with(super::keys::API_KEY_PREFIX) || super::is_operator(app, t)
        });
        if is_key {
            let caller = Caller::from_request_parts(parts, app).await?;
            return Ok(Member {
                tenant: caller.tenant,
                user: None,
                role: Role::Write,
                identity: None,
            });
        }
        let identity = app.verifier.verify(token.as_deref()).await?;
        if app.tenants.is_deleting(&identity.tenant) {
            return Err(Problem::not_found("the tenant is being deleted"));
        }
        Ok(Member {
            tenant: identity.tenant.clone(),
            user: identity.user.clone(),
            role: identity.role,
            identity: Some(identity),
        })
    }
}
