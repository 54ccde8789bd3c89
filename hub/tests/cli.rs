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
        "log-format",
        "otlp-endpoint",
        "otlp-sample-ratio",
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
    serve_refuses(&["--otlp-endpoint", "ftp://collector"], "--otlp-endpoint");
    serve_refuses(&["--otlp-endpoint", "collector:4318"], "--otlp-endpoint");
    serve_refuses(&["--otlp-sample-ratio", "1.5"], "--otlp-sample-ratio");
    serve_refuses(&["--otlp-sample-ratio", "NaN"], "--otlp-sample-ratio");
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

/// Issue 14: the first hour's dead ends. Each says what is wrong and what to do.
#[test]
fn help_env_vars_and_addresses_work_the_way_a_newcomer_tries_them() {
    // Each default once: clap's `[default: ...]`, not also a "Default:" sentence.
    let help = String::from_utf8_lossy(&chorus(&["serve", "--help"]).stdout).into_owned();
    for block in help.split("\n      --").filter(|b| b.contains("[default:")) {
        assert!(!block.contains("Default:"), "default said twice: {block}");
    }
    // `chorus token`'s flags have env vars.
    let help = String::from_utf8_lossy(&chorus(&["token", "--help"]).stdout).into_owned();
    for env in [
        "CHORUS_TOKEN_ROOMS",
        "CHORUS_TOKEN_ROLE",
        "CHORUS_TOKEN_TENANT",
        "CHORUS_TOKEN_TTL",
    ] {
        assert!(help.contains(env), "{env} missing from token --help");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["token", "--jwt-secret", &"s".repeat(32)])
        .env("CHORUS_TOKEN_ROOMS", "a,b*")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An invalid environment variable is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["--data-dir", dir.path().to_str().expect("path")])
        .env("CHORUS_MAX_ROOMS", "many")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("environment variable CHORUS_MAX_ROOMS"),
        "{stderr}"
    );

    // `1`, `yes`, `on` are booleans too; a host name is an address. Checked with a config
    // that then fails validation, so nothing is served.
    for (var, value) in [
        ("CHORUS_ALLOW_ANONYMOUS", "1"),
        ("CHORUS_LOG_JSON", "yes"),
        ("CHORUS_SKIP_MIGRATIONS", "on"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(["--listen", "localhost:0", "--max-frame-bytes", "10"])
            .env(var, value)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--max-frame-bytes must be"),
            "{var}={value}: {stderr}"
        );
    }
    let out = chorus(&["--listen", "nowhere"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("expected host:port"), "{stderr}");
}

/// A `sqlite://` URL whose folder does not exist gets the folder, as `--data-dir` does.
#[test]
fn a_sqlite_url_creates_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("new/deeper/chorus.db");
    let url = format!("sqlite://{}", db.display());
    let out = chorus(&["migrate", "--database-url", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

/// An unreachable Postgres fails at once with the cause, said once; a login that may not
/// change the schema is told about `--skip-migrations`.
#[tokio::test]
async fn postgres_problems_are_reported_once_with_what_to_do() {
    // A port nothing listens on: bound and dropped just before.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/x?sslmode=disable");
    let started = std::time::Instant::now();
    let out = chorus(&["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("cannot connect to Postgres at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("refused").count(), 1, "said once: {stderr}");

    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    // A login role without CREATE on the schema (Postgres 15 takes it from PUBLIC).
    let role = format!("nocreate_{}", std::process::id());
    let admin = std::process::Command::new("psql")
        .args([db.url(), "-qc"])
        .arg(format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"))
        .status();
    if !admin.is_ok_and(|s| s.success()) {
        panic!("psql could not create the role {role}");
    }
    let url = url::Url::parse(db.url())
        .map(|mut u| {
            let _ = u.set_username(&role);
            u.to_string()
        })
        .expect("url");
    let out = chorus(&["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::process::Command::new("psql")
        .args([db.url(), "-qc"])
        .arg(format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role};"))
        .status();
    assert!(!out.status.success());
    assert!(stderr.contains("--skip-migrations"), "{stderr}");
    assert_eq!(
        stderr.matches("permission denied").count(),
        1,
        "said once: {stderr}"
    );
}

/// `--log-format json` writes one JSON object per line: a log pipeline can parse every line.
#[test]
fn log_format_json_writes_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chorus");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let listening = loop {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            break None;
        };
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        seen.push(line);
        if v["fields"]["message"] == "listening" {
            break Some(v);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let v = listening.unwrap_or_else(|| panic!("no `listening` line in {seen:?}"));
    let addr = v["fields"]["addr"].as_str().expect("addr field");
    assert!(addr.starts_with("127.0.0.1:"), "{v}");
}

/// With the node's spans on (`RUST_LOG=info,chorus_hub=debug`), a JSON log line written inside
/// a connection carries the connection's span: its id, tenant, room and dialect, for a log
/// pipeline to group by.
#[tokio::test]
async fn json_log_lines_inside_a_connection_carry_its_span() {
    use futures_util::SinkExt;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info,chorus_hub=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chorus");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let within = std::time::Duration::from_secs(60);
    // Each JSON line up to the first that `pick` accepts.
    async fn next_matching(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
        within: std::time::Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        tokio::time::timeout(within, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if pick(&v) {
                    return v;
                }
            }
            panic!("chorus exited");
        })
        .await
        .expect("the line in time")
    }
    let listening = next_matching(&mut lines, within, |v| {
        v["fields"]["message"] == "listening"
    })
    .await;
    let addr = listening["fields"]["addr"].as_str().expect("addr");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/logged"))
        .await
        .expect("connect");
    // A message type y-websocket does not have: refused, and logged inside the connection.
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        0x7f, 0,
    ]))
    .await
    .expect("send");
    let refused = next_matching(&mut lines, within, |v| {
        v["fields"]["message"] == "refusing frame"
    })
    .await;
    let span = &refused["span"];
    assert_eq!(span["name"], "connection", "{refused}");
    assert_eq!(span["tenant"], "default", "{refused}");
    assert_eq!(span["room"], "logged", "{refused}");
    assert_eq!(span["dialect"], "y-websocket", "{refused}");
    assert!(span["conn"].is_u64(), "{refused}");
    let _ = child.kill().await;
}
