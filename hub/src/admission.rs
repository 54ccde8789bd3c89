//! Admission: may this session open this room? One path for both dialects. It checks, in
//! order: the token grants the room, the tenant is not being deleted, its settings load, it
//! has a connection place left, a writer's first visit records the room within the tenant's
//! room limit, and the room is open or can be spawned. A refusal is typed; each dialect turns
//! it into its own answer (an HTTP status or a 4401/4403 close before the y-websocket upgrade,
//! a permission-denied message for a Hocuspocus document).

use std::sync::Arc;

use chorus_persistence::RoomKey;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::registry::{JoinError, RoomHandle};
use crate::server::AppState;
use crate::tenants::{TenantSlot, TenantState};

/// Why a session may not open a room.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The token's `rooms` do not match the room.
    NotGranted,
    /// The tenant is being deleted.
    TenantDeleting,
    /// The tenant's settings could not be loaded (the store failed).
    TenantUnavailable,
    /// The tenant's `max_connections` (or its share of the node) is reached.
    TenantConnections,
    /// Recording the room failed: the tenant's `max_rooms` is reached, or the store failed.
    Record(ApiError),
    /// The node has `--max-rooms` rooms open.
    TooManyRooms,
    /// The room is being deleted.
    RoomDeleted,
    /// The tenant has its share of this node's rooms open.
    TenantShare,
    /// The room could not be opened; retry.
    RoomUnavailable,
}

impl Refusal {
    /// What the client is told.
    pub(crate) fn reason(&self) -> String {
        match self {
            Refusal::NotGranted => "token does not grant this room".into(),
            Refusal::TenantDeleting => "the tenant is being deleted".into(),
            Refusal::TenantUnavailable => "tenant settings unavailable; retry later".into(),
            Refusal::TenantConnections => "the tenant's connection limit is reached".into(),
            Refusal::Record(e) => e.to_string(),
            Refusal::TooManyRooms => "too many rooms open on this node".into(),
            Refusal::RoomDeleted => "the room is being deleted".into(),
            Refusal::TenantShare => "the tenant has its share of this node's rooms open".into(),
            Refusal::RoomUnavailable => "the room is unavailable; retry later".into(),
        }
    }

    /// The `reason` label of `chorus_connections_refused_total`.
    pub(crate) fn metric(&self) -> &'static str {
        match self {
            Refusal::NotGranted => "forbidden",
            Refusal::TenantDeleting | Refusal::RoomDeleted => "deleted",
            Refusal::TenantUnavailable => "store",
            Refusal::TenantConnections => "tenant_connections",
            Refusal::Record(_) | Refusal::TooManyRooms | Refusal::RoomUnavailable => "rooms",
            Refusal::TenantShare => "tenant_rooms",
        }
    }

    /// The HTTP error of a refused upgrade.
    pub(crate) fn into_api_error(self) -> ApiError {
        let reason = self.reason();
        match self {
            Refusal::NotGranted => ApiError::Forbidden(reason),
            Refusal::TenantDeleting | Refusal::RoomDeleted => ApiError::NotFound(reason),
            Refusal::TenantUnavailable | Refusal::TooManyRooms | Refusal::RoomUnavailable => {
                ApiError::Unavailable(reason)
            }
            Refusal::TenantConnections | Refusal::TenantShare => ApiError::TooManyRequests(reason),
            Refusal::Record(e) => e,
        }
    }
}

/// What an admitted session holds: the tenant as loaded, its connection place (released when
/// dropped), and the room, open and ready to be joined.
pub(crate) struct Admitted {
    /// The tenant's settings.
    pub tenant: Arc<TenantState>,
    /// The tenant's connection place.
    pub slot: TenantSlot,
    /// The room.
    pub room: RoomHandle,
}

/// Decides whether `identity` may open `room` (see the module documentation).
pub(crate) async fn admit(
    app: &Arc<AppState>,
    identity: &Identity,
    room: &str,
) -> Result<Admitted, Refusal> {
    if !identity.may_open(room) {
        return Err(Refusal::NotGranted);
    }
    if app.tenants.is_deleting(&identity.tenant) {
        return Err(Refusal::TenantDeleting);
    }
    let tenant = app.tenants.get(&identity.tenant).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot load tenant settings");
        Refusal::TenantUnavailable
    })?;
    let slot = app
        .tenants
        .reserve_connection(
            &identity.tenant,
            crate::server::tenant_connection_limit(app, &identity.tenant, &tenant),
        )
        .ok_or(Refusal::TenantConnections)?;
    let key = RoomKey::new(identity.tenant.clone(), room.to_owned());
    // Only writers record rooms: a reader's visit must not use up the tenant's `max_rooms`.
    if identity.role == Role::Write && app.registry.get(&key).is_none() {
        crate::server::record_room(app, &key, &tenant)
            .await
            .map_err(Refusal::Record)?;
    }
    // Spawned now, so that a room limit is a refusal and not a close after the session began.
    let room = app.registry.get_or_spawn(&key).map_err(|e| match e {
        JoinError::TooManyRooms => Refusal::TooManyRooms,
        JoinError::Deleted => Refusal::RoomDeleted,
        JoinError::TenantShare => Refusal::TenantShare,
        JoinError::LoadFailed | JoinError::Unavailable => Refusal::RoomUnavailable,
    })?;
    Ok(Admitted { tenant, slot, room })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// Each refusal has its status, its metric label and a reason; the HTTP body says the
    /// same words a Hocuspocus client is told.
    #[test]
    fn each_refusal_maps_to_one_status_label_and_reason() {
        let cases = [
            (Refusal::NotGranted, StatusCode::FORBIDDEN, "forbidden"),
            (Refusal::TenantDeleting, StatusCode::NOT_FOUND, "deleted"),
            (
                Refusal::TenantUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "store",
            ),
            (
                Refusal::TenantConnections,
                StatusCode::TOO_MANY_REQUESTS,
                "tenant_connections",
            ),
            (
                Refusal::Record(ApiError::TooManyRequests(
                    "the tenant's room limit is reached".into(),
                )),
                StatusCode::TOO_MANY_REQUESTS,
                "rooms",
            ),
            (
                Refusal::TooManyRooms,
                StatusCode::SERVICE_UNAVAILABLE,
                "rooms",
            ),
            (Refusal::RoomDeleted, StatusCode::NOT_FOUND, "deleted"),
            (
                Refusal::TenantShare,
                StatusCode::TOO_MANY_REQUESTS,
                "tenant_rooms",
            ),
            (
                Refusal::RoomUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "rooms",
            ),
        ];
        for (refusal, status, label) in cases {
            let reason = refusal.reason();
            assert_eq!(refusal.metric(), label, "{reason}");
            let error = refusal.into_api_error();
            assert_eq!(error.parts().0, status, "{reason}");
            assert_eq!(error.to_string(), reason);
        }
    }
}
