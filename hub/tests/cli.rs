//! The `chorus` binary's command line: token minting, help, and refusing bad configuration.

use std::process::Command;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

fn chorus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .env_remove("CHORUS_JWT_SECRET")
        .output()
        .expect("run chorus")
}

#[test]
fn token_prints_a_verifiable_hs256_token() {
    let out = chorus(&[
        "token",
        "--room",
        "team/*",
        "--room",
        "solo",
        "--role",
        "read",
        "--tenant",
        "acme",
        "--ttl",
        "2h",
        "--jwt-secret",
        "s3cret-s3cret-s3cret-s3cret-s3cret",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf8");
    let data = jsonwebtoken::decode::<Value>(
        token.trim(),
        &DecodingKey::from_secret(b"s3cret-s3cret-s3cret-s3cret-s3cret"),
        &Validation::new(Algorithm::HS256),
    )
    .expect("valid token");
    let c = data.claims;
    assert_eq!(c["rooms"], serde_json::json!(["team/*", "solo"]));
    assert_eq!(c["role"], "read");
    assert_eq!(c["tenant"], "acme");
    let exp = c["exp"].as_u64().expect("exp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(exp > now + 7000 && exp <= now + 7200);
}

#[test]
fn token_without_a_secret_or_room_fails_clearly() {
    let out = chorus(&["token", "--room", "r"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
    let out = chorus(&["token", "--jwt-secret", &"x".repeat(32)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--room"));
    // Issue 13: a guessable secret is refused when signing, and when serving.
    let out = chorus(&["token", "--room", "r", "--jwt-secret", "short"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
    let out = chorus(&["serve", "--listen", "127.0.0.1:0", "--jwt-secret", "short"]);
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("at least 32 bytes"), "{said}");
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    let out = chorus(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "listen",
        "data-dir",
        "database-url",
        "jwt-secret",
        "jwt-public-key",
        "allow-anonymous",
        "max-frame-bytes",
        "max-document-bytes",
        "max-awareness-bytes",
        "max-rooms",
        "max-connections",
        "send-queue-messages",
        "send-queue-bytes",
        "persist-batch",
        "compact-threshold",
        "awareness-tick",
        "room-idle",
        "ping-interval",
        "record-dir",
        "shutdown-grace",
        "log-json",
    ] {
        assert!(
            help.contains(&format!("--{flag}")),
            "--{flag} missing from help"
        );
        let env = format!("CHORUS_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "{env} missing from help");
    }
}

/// Runs `chorus serve` with `flags` and expects a non-zero exit whose stderr names `needle`.
fn serve_refuses(flags: &[&str], needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data];
    args.extend_from_slice(flags);
    let out = chorus(&args);
    assert!(!out.status.success(), "{flags:?} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{flags:?}: {stderr}");
}

#[test]
fn bad_configuration_exits_with_a_clear_error() {
    serve_refuses(&["--max-frame-bytes", "10"], "--max-frame-bytes");
    serve_refuses(
        &["--database-url", "mysql://x"],
        "unsupported --database-url",
    );
    serve_refuses(
        &["--jwt-public-key", "/nonexistent.pem"],
        "--jwt-public-key",
    );
    serve_refuses(&["--max-rooms", "many"], "--max-rooms");
    serve_refuses(&["--ping-interval", "2h"], "--ping-interval");
}

/// `chorus migrate` applies the Postgres schema; a hub then starts on it without migrating
/// (`--skip-migrations`, as a least-privilege login would), and a bad URL fails clearly.
#[tokio::test]
async fn migrate_prepares_postgres_for_a_hub_that_skips_migrations() {
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let out = chorus(&["migrate", "--database-url", db.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Again: migrations are idempotent.
    let again = chorus(&["migrate", "--database-url", db.url()]);
    assert!(again.status.success());
    let store = chorus_persistence::PostgresStore::open(db.url(), false)
        .await
        .expect("schema present without migrating");
    use chorus_persistence::Catalog;
    assert!(store.list_tenants().await.expect("query").is_empty());

    let bad = chorus(&["migrate", "--database-url", "mysql://nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("postgres://"));
}
