//! Token verification: JWTs from `?token=` or `Authorization: Bearer`.
//!
//! Two kinds of keys verify them:
//! - Tenant keys (`POST /v1/keys`): a token names one with its `kid` header, and the key is
//!   looked up among the keys of the tenant its `tenant` claim names, so a token signed by
//!   tenant A's key can never open tenant B's rooms. Several keys are active at once, so keys
//!   rotate without downtime.
//! - Node keys (`--jwt-secret`, `--jwt-public-key`): the operator's, for tokens without `kid`;
//!   they may name any tenant.
//!
//! The algorithm is pinned by the key, never taken from the token alone, so a token cannot pick
//! a weaker algorithm than the key was registered with.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::config::{Config, TokenArgs};
use crate::error::ApiError;
use crate::tenants::Tenants;

/// The tenant of anonymous connections and of tokens without a `tenant` claim.
pub const DEFAULT_TENANT: &str = "default";

/// What a connection may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receive everything; updates are refused.
    Read,
    /// Receive and edit.
    Write,
}

impl Role {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// JWT claims Chorus reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Tenant; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Room names (`name`) or prefixes (`prefix*`, `*` for all) the token opens.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// `read` or `write`; `read` when absent (least privilege).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Issued at, seconds since the epoch: a token issued in the future is refused, and a
    /// tenant-key token may live at most `MAX_TENANT_TOKEN_LIFETIME` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the epoch (validated when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Display name for presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Presence colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// Who a connection is, once verified.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Tenant of the room.
    pub tenant: String,
    /// User id, if the token named one.
    pub user: Option<String>,
    /// Access level.
    pub role: Role,
    /// Room patterns this identity may open.
    rooms: Vec<String>,
    /// When the token expires (seconds since the epoch); open sessions close with 4401
    /// then. `None` for anonymous connections.
    pub expires: Option<u64>,
    /// Presence name and colour from the token, shown to others instead of what the client
    /// claims about itself. Shared with the connection's handle; most tokens carry neither,
    /// and every open session keeps its identity.
    pub shown_as: Option<Arc<crate::outbound::ShownAs>>,
    /// The tenant key (`kid`) that signed the token: the session ends (4401) once the
    /// tenant no longer has it (revoked). `None` for node keys and anonymous sessions.
    pub kid: Option<Arc<str>>,
}

impl Identity {
    /// The identity of a tokenless connection where anonymous access is allowed.
    pub fn anonymous() -> Self {
        Identity {
            tenant: DEFAULT_TENANT.to_string(),
            user: None,
            role: Role::Write,
            rooms: vec!["*".to_string()],
            expires: None,
            shown_as: None,
            kid: None,
        }
    }

    /// The room patterns it may open (`name`, `prefix*`, `*`).
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// Whether this identity may open `room`.
    pub fn may_open(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| pattern_matches(p, room))
    }
}

/// `*` matches everything, `prefix*` matches names starting with `prefix`, anything else
/// matches only itself.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    /// Signs development tokens (`GET /v1/dev-token`) where anonymous access is allowed: the
    /// node's `--jwt-secret`, or else a random secret of this process, which `hs256` then
    /// verifies (so a restart voids them).
    dev: Option<EncodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    anonymous: bool,
    tenants: Arc<Tenants>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("dev", &self.dev.is_some())
            .field("public", &self.public.as_ref().map(|(_, a)| *a))
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// A configuration error in the key settings.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key could not be read or parsed.
    #[error("--jwt-public-key: {0}")]
    PublicKey(String),
    /// The secret is too short to resist guessing.
    #[error("--jwt-secret must be at least 32 bytes")]
    ShortSecret,
}

/// Shortest HS256 secret accepted (`--jwt-secret`, for signing and verifying): 256 bits, as
/// RFC 7518 asks of HS256 keys; a short one can be brute-forced offline from any token.
pub const MIN_SECRET_BYTES: usize = 32;

impl Verifier {
    /// Builds the verifier from the config.
    pub fn from_config(config: &Config, tenants: Arc<Tenants>) -> Result<Self, KeyError> {
        let mut hs256 = match config.jwt_secret.as_deref() {
            Some(s) if s.len() < MIN_SECRET_BYTES => return Err(KeyError::ShortSecret),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let anonymous = config.anonymous_allowed();
        let dev = match (anonymous, config.jwt_secret.as_deref()) {
            (false, _) => None,
            (true, Some(s)) => Some(EncodingKey::from_secret(s.as_bytes())),
            (true, None) => {
                let secret: [u8; 32] = rand::random();
                hs256 = Some(DecodingKey::from_secret(&secret));
                Some(EncodingKey::from_secret(&secret))
            }
        };
        let public = match config.jwt_public_key.as_deref() {
            None => None,
            Some(v) => Some(parse_public_key(v)?),
        };
        Ok(Verifier {
            hs256,
            dev,
            public,
            anonymous,
            tenants,
        })
    }

    /// A development token for one room (write role, an hour, a random `sub`), where anonymous
    /// access is allowed: what the web client uses on a local hub, so that it has a user and
    /// a token for the REST API like any embedded page. `None` where anonymous access is off.
    pub fn mint_dev(&self, room: &str) -> Option<(String, u64)> {
        let key = self.dev.as_ref()?;
        let exp = now_secs() + DEV_TOKEN_LIFETIME;
        let claims = Claims {
            sub: Some(format!("dev-{:08x}", rand::random::<u32>())),
            tenant: None,
            rooms: vec![room.to_owned()],
            role: Some(Role::Write),
            exp,
            iat: Some(now_secs()),
            nbf: None,
            name: None,
            color: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .ok()
            .map(|t| (t, exp))
    }

    /// Verifies an optional token. `None` is accepted only where anonymous access is allowed.
    pub async fn verify(&self, token: Option<&str>) -> Result<Identity, ApiError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return if self.anonymous {
                Ok(Identity::anonymous())
            } else {
                Err(ApiError::Unauthenticated("missing token".into()))
            };
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthenticated("malformed token".into()))?;
        let kid: Option<Arc<str>> = header.kid.as_deref().map(Arc::from);
        let claims = match header.kid.as_deref() {
            Some(kid) => {
                // The tenant is read before the signature is checked only to find the key;
                // the key then verifies the very claims that named it.
                let tenant = unverified_tenant(token)?;
                // Only well-formed ids reach the database: a flood of made-up tenants or key
                // ids must cost a parse, not a query.
                if !crate::tenants::valid_id(&tenant) || kid.is_empty() || kid.len() > 64 {
                    return Err(ApiError::Unauthenticated(
                        "unknown or revoked key id for this tenant".into(),
                    ));
                }
                let state = self.tenants.get(&tenant).await.map_err(|e| {
                    tracing::warn!(error = %e, "cannot load tenant keys");
                    ApiError::Unavailable("token keys are unavailable; retry later".into())
                })?;
                let Some(k) = state.keys.get(kid) else {
                    return Err(ApiError::Unauthenticated(
                        "unknown or revoked key id for this tenant".into(),
                    ));
                };
                if k.alg != header.alg {
                    return Err(ApiError::Unauthenticated(format!(
                        "token algorithm {:?} does not match its key",
                        header.alg
                    )));
                }
                let claims = decode(token, &k.key, k.alg)?;
                if claims.tenant.as_deref() != Some(tenant.as_str()) {
                    return Err(ApiError::Unauthenticated("invalid tenant claim".into()));
                }
                // A tenant's key can be leaked by the tenant's own backend; a token minted
                // with it must not outlive a day (node keys are the operator's business).
                let born = claims.iat.unwrap_or_else(now_secs);
                if claims.exp > born.saturating_add(MAX_TENANT_TOKEN_LIFETIME + LEEWAY) {
                    return Err(ApiError::Unauthenticated(
                        "token lifetime exceeds 24 hours".into(),
                    ));
                }
                claims
            }
            None => {
                let (key, alg) = match header.alg {
                    Algorithm::HS256 => (self.hs256.as_ref(), Algorithm::HS256),
                    Algorithm::EdDSA | Algorithm::RS256 => match &self.public {
                        Some((k, a)) if *a == header.alg => (Some(k), *a),
                        _ => (None, header.alg),
                    },
                    _ => (None, header.alg),
                };
                let Some(key) = key else {
                    return Err(ApiError::Unauthenticated(format!(
                        "token algorithm {alg:?} is not accepted by this server"
                    )));
                };
                decode(token, key, alg)?
            }
        };
        if claims.iat.is_some_and(|iat| iat > now_secs() + LEEWAY) {
            return Err(ApiError::Unauthenticated(
                "token issued in the future".into(),
            ));
        }
        let tenant = claims.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string());
        // The same ids tenants are created with: no quotes, slashes or spaces (a tenant id
        // ends up in Redis channel names and logs).
        if !crate::tenants::valid_id(&tenant) {
            return Err(ApiError::Unauthenticated("invalid tenant claim".into()));
        }
        Ok(Identity {
            tenant,
            user: claims.sub,
            role: claims.role.unwrap_or(Role::Read),
            rooms: claims.rooms,
            expires: Some(claims.exp),
            kid,
            shown_as: (claims.name.is_some() || claims.color.is_some()).then(|| {
                Arc::new(crate::outbound::ShownAs {
                    name: claims.name,
                    color: claims.color,
                })
            }),
        })
    }
}

/// Lifetime of a development token, in seconds.
pub const DEV_TOKEN_LIFETIME: u64 = 3600;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY: u64 = 5;

/// Longest lifetime of a token signed with a tenant's key (from `iat`, or from now).
pub const MAX_TENANT_TOKEN_LIFETIME: u64 = 24 * 3600;

fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, ApiError> {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            ApiError::Unauthenticated(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
                    ErrorKind::InvalidSignature => "invalid token signature",
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    _ => "invalid token",
                }
                .into(),
            )
        })
}

/// The `tenant` claim of a token whose signature has not been checked yet.
fn unverified_tenant(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct TenantOnly {
        tenant: Option<String>,
    }
    let bad = || ApiError::Unauthenticated("malformed token".into());
    let payload = token.split('.').nth(1).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad())?;
    let claims: TenantOnly = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    claims.tenant.ok_or_else(|| {
        ApiError::Unauthenticated("a token with a key id must carry a tenant claim".into())
    })
}

/// Signs a token with a tenant's HS256 key, naming it by `kid` (what `POST /v1/tokens` returns).
pub fn mint_for_tenant(
    claims: &Claims,
    kid: &str,
    secret: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn parse_public_key(value: &str) -> Result<(DecodingKey, Algorithm), KeyError> {
    let pem = if value.trim_start().starts_with("-----BEGIN") {
        value.as_bytes().to_vec()
    } else {
        std::fs::read(value)
            .map_err(|e| KeyError::PublicKey(format!("cannot read {value}: {e}")))?
    };
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((k, Algorithm::RS256));
    }
    Err(KeyError::PublicKey(
        "not an Ed25519 or RSA public key in PEM form".into(),
    ))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs an HS256 token (what `chorus token` prints).
pub fn mint_hs256(args: &TokenArgs) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: Some(args.sub.clone()),
        tenant: Some(args.tenant.clone()),
        rooms: args.rooms.clone(),
        role: Some(if args.role == "read" {
            Role::Read
        } else {
            Role::Write
        }),
        exp: now_secs() + args.ttl.as_secs(),
        iat: Some(now_secs()),
        nbf: None,
        name: args.name.clone(),
        color: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(args.jwt_secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("docs/*", "docs/a"));
        assert!(!pattern_matches("docs/*", "doc"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
    }
}
