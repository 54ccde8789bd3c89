//! API keys: `chk_<tenant>.<key id>.<secret>`, stored as an argon2 hash, verified once per
//! key per `API_KEY_CACHE_TTL` (argon2 is slow by design), with failures cached too and
//! argon2 rationed per key id.

use super::*;

/// What every API key starts with.
pub(crate) const API_KEY_PREFIX: &str = "chk_";

/// How long a verified API key is trusted without re-checking its hash and revocation.
pub(super) const API_KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// Verified API keys (by digest of the whole key): argon2 is slow by design, so it runs once
/// per key per [`API_KEY_CACHE_TTL`], not per request. Revocation through this node clears
/// the entry at once.
#[derive(Debug, Default)]
pub struct KeyCache {
    verified: DashMap<[u8; 32], (String, String, Instant)>,
    // Keys that failed verification, by digest, when: refused again without argon2 for
    // `API_KEY_CACHE_TTL` (a client retrying a bad key costs nothing).
    failed: DashMap<[u8; 32], Instant>,
    // argon2 runs per key id (`tenant`, `key id`): the id is not secret, so anyone can make
    // the node verify guesses against it; this bounds how often.
    attempts: DashMap<(String, String), crate::session::RateLimit>,
}

/// argon2 verifications running at once (each takes ~19 MiB and tens of milliseconds of a
/// core); more wait, up to `ARGON2_WAIT`.
pub(super) static ARGON2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How long a request waits for an argon2 slot before it is told to retry (429).
pub(super) const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// argon2 verifications per second for one key id (bursts of twice that).
pub(super) const ARGON2_PER_KEY_ID: u32 = 5;

/// Entries the key caches may hold before they are cleared (a flood of made-up keys).
pub(super) const KEY_CACHE_MAX: usize = 100_000;

impl KeyCache {
    pub(crate) fn forget_key(&self, tenant: &str, key_id: &str) {
        self.verified
            .retain(|_, (t, k, _)| !(t == tenant && k == key_id));
    }

    pub(crate) fn forget_tenant(&self, tenant: &str) {
        self.verified.retain(|_, (t, _, _)| t != tenant);
    }
}

/// Splits `chk_<tenant>.<key id>.<secret>`.
pub(super) fn parse_api_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let mut parts = rest.splitn(3, '.');
    let (tenant, key_id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    (!tenant.is_empty() && !key_id.is_empty() && !secret.is_empty())
        .then_some((tenant, key_id, secret))
}

pub(super) async fn verify_api_key(app: &AppState, key: &str) -> ApiResult<String> {
    let invalid = || Problem::unauthenticated("invalid or revoked API key");
    let d = digest(key);
    if let Some(hit) = app.api_keys.verified.get(&d)
        && hit.2.elapsed() < API_KEY_CACHE_TTL
    {
        return Ok(hit.0.clone());
    }
    if app
        .api_keys
        .failed
        .get(&d)
        .is_some_and(|t| t.elapsed() < API_KEY_CACHE_TTL)
    {
        metrics::counter!(crate::metrics::names::API_KEY_FAILURES_CACHED_TOTAL).increment(1);
        return Err(invalid());
    }
    let (tenant, key_id, secret) = parse_api_key(key).ok_or_else(invalid)?;
    if validate_tenant_id(tenant).is_err() || key_id.len() > 64 || secret.len() > 256 {
        return Err(invalid());
    }
    let stored = app
        .store
        .get_api_key(tenant, key_id)
        .await?
        .filter(|k| k.revoked.is_none())
        .ok_or_else(invalid)?;
    let allowed = {
        if app.api_keys.attempts.len() > KEY_CACHE_MAX {
            app.api_keys.attempts.clear();
        }
        app.api_keys
            .attempts
            .entry((tenant.to_string(), key_id.to_string()))
            .or_insert_with(|| crate::session::RateLimit::new(ARGON2_PER_KEY_ID))
            .take()
    };
    if !allowed {
        metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "api_key_verifications")
            .increment(1);
        return Err(Problem::quota(
            "too many attempts with this API key id; retry in a few seconds",
        ));
    }
    let Ok(Ok(permit)) = tokio::time::timeout(ARGON2_WAIT, ARGON2.acquire()).await else {
        metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "api_key_verifications")
            .increment(1);
        return Err(Problem::quota("too many API key verifications; retry"));
    };
    let secret = secret.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &stored.hash))
        .await
        .map_err(Problem::internal)?;
    drop(permit);
    if !ok {
        if app.api_keys.failed.len() > KEY_CACHE_MAX {
            app.api_keys.failed.clear();
        }
        app.api_keys.failed.insert(d, Instant::now());
        return Err(invalid());
    }
    if app.api_keys.verified.len() > KEY_CACHE_MAX {
        app.api_keys.verified.clear();
    }
    app.api_keys
        .verified
        .insert(d, (tenant.to_string(), key_id.to_string(), Instant::now()));
    Ok(tenant.to_string())
}

/// Argon2id hash (PHC string) of an API key secret.
pub(super) fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub(super) fn verify_secret(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A random secret: 32 bytes, URL-safe base64 (no `.`, so it never splits an API key).
pub(super) fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A short random id (12 hex digits).
pub(super) fn random_id() -> String {
    let n: u64 = rand::random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse() {
        assert_eq!(
            parse_api_key("chk_acme.k1.s3cr3t"),
            Some(("acme", "k1", "s3cr3t"))
        );
        assert_eq!(parse_api_key("chk_acme.k1."), None);
        assert_eq!(parse_api_key("acme.k1.s"), None);
        assert_eq!(parse_api_key("chk_.k1.s"), None);
    }

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("abc").expect("hash");
        assert!(verify_secret("abc", &h));
        assert!(!verify_secret("abd", &h));
        assert!(!verify_secret("abc", "not a hash"));
    }
}
