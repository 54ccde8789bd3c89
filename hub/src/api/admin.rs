//! Tenants and API keys (operator), token verification keys and client tokens (tenant).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chorus_persistence::{ApiKey, SigningKey, Tenant};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiResult, Caller, JsonBody, Operator, PathParams, Problem, hash_secret, now, random_id,
    random_secret, validate_tenant_id,
};
use crate::auth::{Claims, Role};
use crate::server::AppState;
use crate::tenants::TenantSettings;

fn tenant_json(t: &Tenant) -> Value {
    json!({ "id": t.id, "name": t.name, "settings": t.settings, "created": t.created })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
}

fn check_name(name: &str, what: &str) -> ApiResult<()> {
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(Problem::invalid(format!(
            "{what} must be at most 200 bytes without control characters"
        )));
    }
    Ok(())
}

/// A fresh HS256 key: what a new tenant gets, so it can mint tokens at once.
fn new_hs256_key(tenant: &str, kid: Option<String>) -> SigningKey {
    SigningKey {
        tenant: tenant.to_string(),
        kid: kid.unwrap_or_else(|| format!("hs-{}", random_id())),
        alg: "HS256".into(),
        material: random_secret(),
        created: now(),
        revoked: None,
    }
}

pub(super) async fn create_tenant(
    State(app): State<Arc<AppState>>,
    _: Operator,
    JsonBody(body): JsonBody<NewTenant>,
) -> ApiResult<impl IntoResponse> {
    validate_tenant_id(&body.id)?;
    if body.id == crate::auth::DEFAULT_TENANT {
        // Anonymous connections and node-key tokens without a tenant claim land there: a
        // tenant of that name would share its rooms with them.
        return Err(Problem::invalid(
            "tenant id \"default\" is reserved for anonymous connections and tokens without a tenant claim",
        ));
    }
    let name = body.name.unwrap_or_else(|| body.id.clone());
    check_name(&name, "name")?;
    let settings = match &body.settings {
        Some(v) => TenantSettings::parse_submitted(v).map_err(Problem::invalid)?,
        None => TenantSettings::default(),
    };
    let tenant = Tenant {
        id: body.id.clone(),
        name,
        settings: settings.to_value(),
        created: now(),
    };
    if !app.store.create_tenant(&tenant).await? {
        return Err(Problem::conflict(format!(
            "tenant {:?} already exists",
            tenant.id
        )));
    }
    let key = new_hs256_key(&tenant.id, None);
    app.store.add_signing_key(&key).await?;
    app.changed(crate::cluster::Change::tenant(&tenant.id));
    let mut out = tenant_json(&tenant);
    out["signing_key"] = json!({ "kid": key.kid, "alg": key.alg, "secret": key.material });
    Ok((StatusCode::CREATED, Json(out)))
}

pub(super) async fn list_tenants(
    State(app): State<Arc<AppState>>,
    _: Operator,
) -> ApiResult<Json<Value>> {
    let tenants = app.store.list_tenants().await?;
    Ok(Json(
        json!({ "tenants": tenants.iter().map(tenant_json).collect::<Vec<_>>() }),
    ))
}

pub(super) async fn get_tenant(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let t = app
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no tenant {id:?}")))?;
    let mut out = tenant_json(&t);
    out["connections"] = json!(app.tenants.connections(&id));
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
}

pub(super) async fn update_tenant(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<TenantPatch>,
) -> ApiResult<Json<Value>> {
    if let Some(n) = &body.name {
        check_name(n, "name")?;
    }
    // Read, merge, check, write: one PATCH at a time on this node, so two operators' changes
    // to different settings do not undo each other here (across nodes the last write wins).
    static PATCHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = PATCHES.lock().await;
    let settings = match &body.settings {
        Some(patch) => {
            if !patch.is_object() {
                return Err(Problem::invalid("settings must be a JSON object"));
            }
            let current = app
                .store
                .get_tenant(&id)
                .await?
                .ok_or_else(|| Problem::not_found(format!("no tenant {id:?}")))?;
            let mut merged = current.settings.clone();
            merge_patch(&mut merged, patch);
            Some(
                TenantSettings::parse_submitted(&merged)
                    .map_err(Problem::invalid)?
                    .to_value(),
            )
        }
        None => None,
    };
    if !app
        .store
        .update_tenant(&id, body.name.as_deref(), settings.as_ref())
        .await?
    {
        return Err(Problem::not_found(format!("no tenant {id:?}")));
    }
    app.changed(crate::cluster::Change::tenant(&id));
    let t = app
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no tenant {id:?}")))?;
    Ok(Json(tenant_json(&t)))
}

/// RFC 7396 JSON merge patch: members of `patch` replace those of `target`, `null` removes
/// one, objects merge recursively, and anything that is not an object replaces the target.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

pub(super) async fn delete_tenant(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    // New sessions and requests of the tenant are refused, live rooms close (4404) and write
    // nothing more, then the rows go.
    let _deleting = app.tenants.begin_delete(&id);
    let keys = app.registry.rooms_of(&id);
    let mut guards = Vec::with_capacity(keys.len());
    for key in keys {
        guards.push(super::rooms::close_room(&app, &key, "tenant deleted").await?);
    }
    let existed = app.store.delete_tenant(&id).await?;
    if let Some(search) = app.registry.search() {
        search.forget_tenant(&id);
    }
    drop(guards);
    app.changed(crate::cluster::Change {
        all_api_keys: true,
        ..crate::cluster::Change::tenant(&id)
    });
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no tenant {id:?}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewApiKey {
    #[serde(default)]
    name: Option<String>,
}

fn api_key_json(k: &ApiKey) -> Value {
    json!({ "key_id": k.key_id, "name": k.name, "created": k.created, "revoked": k.revoked })
}

async fn require_tenant(app: &AppState, id: &str) -> ApiResult<()> {
    match app.store.get_tenant(id).await? {
        Some(_) => Ok(()),
        None => Err(Problem::not_found(format!("no tenant {id:?}"))),
    }
}

pub(super) async fn create_api_key(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams(tenant): PathParams<String>,
    JsonBody(body): JsonBody<NewApiKey>,
) -> ApiResult<impl IntoResponse> {
    require_tenant(&app, &tenant).await?;
    let name = body.name.unwrap_or_default();
    check_name(&name, "name")?;
    let secret = random_secret();
    let key_id = random_id();
    let hash = tokio::task::spawn_blocking({
        let secret = secret.clone();
        move || hash_secret(&secret)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let record = ApiKey {
        tenant: tenant.clone(),
        key_id: key_id.clone(),
        hash,
        name,
        created: now(),
        revoked: None,
    };
    if !app.store.add_api_key(&record).await? {
        return Err(Problem::conflict("key id collision; retry"));
    }
    let mut out = api_key_json(&record);
    // The only time the whole key is shown: only its hash is stored.
    out["key"] = json!(format!(
        "{}{tenant}.{key_id}.{secret}",
        super::API_KEY_PREFIX
    ));
    Ok((StatusCode::CREATED, Json(out)))
}

pub(super) async fn list_api_keys(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams(tenant): PathParams<String>,
) -> ApiResult<Json<Value>> {
    require_tenant(&app, &tenant).await?;
    let keys = app.store.list_api_keys(&tenant).await?;
    Ok(Json(
        json!({ "api_keys": keys.iter().map(api_key_json).collect::<Vec<_>>() }),
    ))
}

pub(super) async fn revoke_api_key(
    State(app): State<Arc<AppState>>,
    _: Operator,
    PathParams((tenant, key_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let revoked = app.store.revoke_api_key(&tenant, &key_id, now()).await?;
    app.changed(crate::cluster::Change {
        api_key: Some(key_id.clone()),
        ..crate::cluster::Change::tenant(&tenant)
    });
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no such active API key"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// HS256: the secret (generated when absent); EdDSA / RS256: the public key PEM.
    #[serde(default)]
    key: Option<String>,
}

fn key_json(k: &SigningKey) -> Value {
    json!({ "kid": k.kid, "alg": k.alg, "created": k.created, "revoked": k.revoked })
}

pub(super) async fn create_key(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<NewKey>,
) -> ApiResult<impl IntoResponse> {
    if let Some(kid) = &body.kid
        && (kid.is_empty()
            || kid.len() > 64
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(Problem::invalid(
            "kid must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let mut generated = false;
    let key = match (body.alg.as_str(), body.key) {
        ("HS256", None) => {
            generated = true;
            new_hs256_key(&caller.tenant, body.kid)
        }
        ("HS256", Some(secret)) if secret.len() < 32 || secret.len() > 512 => {
            return Err(Problem::invalid(
                "an HS256 secret must be 32 to 512 bytes long",
            ));
        }
        (alg @ ("HS256" | "EdDSA" | "RS256"), Some(material)) => SigningKey {
            tenant: caller.tenant.clone(),
            kid: body.kid.unwrap_or_else(|| format!("k-{}", random_id())),
            alg: alg.to_string(),
            material,
            created: now(),
            revoked: None,
        },
        ("EdDSA" | "RS256", None) => {
            return Err(Problem::invalid(
                "key (the public key in PEM form) is required for EdDSA and RS256",
            ));
        }
        (other, _) => {
            return Err(Problem::invalid(format!(
                "alg {other:?} is not supported: use HS256, EdDSA or RS256"
            )));
        }
    };
    if crate::tenants::decode_key(&key).is_none() {
        return Err(Problem::invalid(format!(
            "key is not a valid {} key in PEM form",
            key.alg
        )));
    }
    if app.store.get_tenant(&caller.tenant).await?.is_none() {
        return Err(Problem::not_found(format!("no tenant {:?}", caller.tenant)));
    }
    if !app.store.add_signing_key(&key).await? {
        return Err(Problem::conflict(format!(
            "the tenant already has a key {:?}",
            key.kid
        )));
    }
    app.changed(crate::cluster::Change::tenant(&caller.tenant));
    let mut out = key_json(&key);
    if generated {
        out["secret"] = json!(key.material);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub(super) async fn list_keys(
    State(app): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    require_tenant(&app, &caller.tenant).await?;
    let keys = app.store.list_signing_keys(&caller.tenant).await?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

pub(super) async fn revoke_key(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParams(kid): PathParams<String>,
) -> ApiResult<StatusCode> {
    let revoked = app
        .store
        .revoke_signing_key(&caller.tenant, &kid, now())
        .await?;
    app.changed(crate::cluster::Change::tenant(&caller.tenant));
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no such active key"))
    }
}

/// Longest client token lifetime the API mints: 7 days.
const MAX_TOKEN_TTL: u64 = crate::auth::MAX_TENANT_TOKEN_LIFETIME;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

pub(super) async fn mint_token(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<TokenRequest>,
) -> ApiResult<impl IntoResponse> {
    let mut rooms = body.rooms;
    rooms.extend(body.room);
    if rooms.is_empty() || rooms.len() > 100 {
        return Err(Problem::invalid(
            "name 1 to 100 rooms (room, rooms); patterns `prefix*` and `*` are allowed",
        ));
    }
    for r in &rooms {
        let name = r.strip_suffix('*').unwrap_or(r);
        if !(r == "*" || name.is_empty() && r.ends_with('*')) {
            crate::server::validate_room(name).map_err(|e| Problem::invalid(e.to_string()))?;
        }
    }
    for (field, v) in [
        ("sub", &body.sub),
        ("name", &body.name),
        ("color", &body.color),
    ] {
        if let Some(v) = v {
            check_name(v, field)?;
        }
    }
    let ttl = body.ttl_seconds.unwrap_or(3600);
    if ttl == 0 || ttl > MAX_TOKEN_TTL {
        return Err(Problem::invalid(format!(
            "ttl_seconds must be between 1 and {MAX_TOKEN_TTL}"
        )));
    }
    let state = app.tenants.get(&caller.tenant).await?;
    if !state.exists {
        return Err(Problem::not_found(format!("no tenant {:?}", caller.tenant)));
    }
    let Some((kid, secret)) = state.mint_key.clone() else {
        return Err(Problem::conflict(
            "the tenant has no active HS256 key to sign with; create one with POST /v1/keys",
        ));
    };
    let role = body.role.unwrap_or(Role::Write);
    let exp = crate::auth::now_secs() + ttl;
    let claims = Claims {
        sub: body.sub,
        tenant: Some(caller.tenant.clone()),
        rooms,
        role: Some(role),
        exp,
        iat: Some(crate::auth::now_secs()),
        nbf: None,
        name: body.name,
        color: body.color,
    };
    let token = crate::auth::mint_for_tenant(&claims, &kid, &secret).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "expires_at": exp, "kid": kid, "role": role.as_str() })),
    ))
}

/// For the fuzz targets: the operator's bodies, parsed and checked as the handlers do (no
/// store: what a handler checks before it writes).
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn fuzz(raw: &[u8]) {
    if let Ok(t) = super::parse_json::<NewTenant>(raw) {
        let _ = check_name(&t.id, "id");
        if let Some(n) = &t.name {
            let _ = check_name(n, "name");
        }
        if let Some(s) = &t.settings {
            let _ = TenantSettings::parse_submitted(s).map(|s| s.to_value());
        }
    }
    if let Ok(TenantPatch {
        settings: Some(s), ..
    }) = super::parse_json::<TenantPatch>(raw)
    {
        let mut merged = serde_json::json!({});
        merge_patch(&mut merged, &s);
        let _ = TenantSettings::parse_submitted(&merged).map(|s| s.to_value());
    }
    let _ = super::parse_json::<NewApiKey>(raw);
    let _ = super::parse_json::<NewKey>(raw);
    let _ = super::parse_json::<TokenRequest>(raw);
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut got = target.clone();
            merge_patch(&mut got, &patch);
            assert_eq!(got, want, "{target} patched with {patch}");
        }
    }
}
