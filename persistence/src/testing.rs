//! Helpers for tests of this crate and of the hub: a fresh Postgres database per test.
//!
//! ```no_run
//! # async fn t() {
//! use chorus_persistence::testing::TestDatabase;
//! let Some(db) = TestDatabase::create().await else { return }; // Postgres absent: skipped
//! let store = db.open_store().await;
//! // ... the database is dropped (WITH (FORCE)) when `db` goes out of scope.
//! # }
//! ```
//!
//! The server comes from `CHORUS_TEST_DATABASE_URL` (a role that may create databases),
//! default [`DEFAULT_ADMIN_URL`]. When it cannot be reached the test is skipped with a loud
//! message on stderr, unless the `CI` environment variable is set: then it fails, so a CI
//! job without Postgres never passes by skipping.

use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::PostgresStore;

/// Environment variable naming the admin URL.
pub const ADMIN_URL_VAR: &str = "CHORUS_TEST_DATABASE_URL";

/// The admin URL when [`ADMIN_URL_VAR`] is unset: the local server, trust authentication,
/// plain TCP (Debian's Postgres has TLS on, and sqlx would otherwise negotiate it).
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// Prefix of every database this module creates, to find leftovers of killed test runs.
pub const DATABASE_PREFIX: &str = "chorus_test_";

/// The admin URL in effect.
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database created for one test, dropped with `DROP DATABASE ... WITH (FORCE)` (which
/// ends the connections still open to it) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database (no schema) on the admin server. `None` means Postgres is
    /// unreachable and the caller should return (the skip was reported on stderr). Panics
    /// when it is unreachable under `CI`, or reachable but the database cannot be created.
    pub async fn create() -> Option<Self> {
        let admin_url = admin_url();
        let admin = match PgConnectOptions::from_str(&admin_url) {
            Ok(o) => o,
            Err(e) => panic!("{ADMIN_URL_VAR} is not a postgres url: {e}"),
        };
        let mut conn = match PgConnection::connect_with(&admin).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("Postgres at {} is unreachable ({e})", redacted(&admin_url));
                skip(&format!("{msg}: start Postgres or set {ADMIN_URL_VAR}"));
                return None;
            }
        };
        let name = unique_name();
        // The name is generated here (lowercase letters, digits, '_'), never user input.
        let create = format!("CREATE DATABASE \"{name}\"");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
        {
            panic!("cannot create test database {name}: {e}");
        }
        let _ = conn.close().await;
        // The admin URL with the new database's name as path: keeps user, password, host
        // and parameters such as sslmode.
        let mut url = match url::Url::parse(&admin_url) {
            Ok(u) => u,
            Err(e) => panic!("{ADMIN_URL_VAR} is not a url: {e}"),
        };
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        Some(Self { admin, name, url })
    }

    /// URL of the new database, as the admin role.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URL of the new database for another login role (e.g. one created `IN ROLE chorus_app`
    /// to test the production setup); `password: None` keeps the admin URL's.
    pub fn url_as(&self, user: &str, password: Option<&str>) -> String {
        let Ok(mut url) = url::Url::parse(&self.url) else {
            // `create` built this URL with the same parser.
            return self.url.clone();
        };
        let _ = url.set_username(user);
        if password.is_some() {
            let _ = url.set_password(password);
        }
        url.to_string()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A migrated [`PostgresStore`] on this database (queries run as `chorus_app`). Panics
    /// on failure: this is for tests.
    pub async fn open_store(&self) -> PostgresStore {
        match PostgresStore::open(&self.url, true).await {
            Ok(s) => s,
            Err(e) => panic!("cannot open postgres store on {}: {e}", self.name),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async code, maybe on a runtime thread that must not block on
        // itself: drop the database from a helper thread with its own small runtime.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = PgConnection::connect_with(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // Never panic in drop (it may run during a panic); a leftover is only litter.
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: helper panicked",
                self.name
            ),
        }
    }
}

/// `chorus_test_<pid>_<n>_<nanos>`: unique across concurrent test processes and runs.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{DATABASE_PREFIX}{}_{n}_{nanos}", std::process::id())
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable url)".to_owned(),
    }
}

/// Two consecutive edits of one replica (`client`): `first` then `second` appended to text
/// `t`, as v1 updates. Sent in the other order, the second waits for its predecessor: what
/// stores, rooms and nodes must keep while yrs holds it back.
pub fn consecutive_edits(client: u64, first: &str, second: &str) -> (bytes::Bytes, bytes::Bytes) {
    use yrs::{ReadTxn, StateVector, Text, Transact};
    let src = yrs::Doc::with_client_id(client);
    let t = src.get_or_insert_text("t");
    t.insert(&mut src.transact_mut(), 0, first);
    let one = src
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let sv = src.transact().state_vector();
    let len = u32::try_from(first.len()).unwrap_or(u32::MAX);
    t.insert(&mut src.transact_mut(), len, second);
    let two = src.transact().encode_state_as_update_v1(&sv);
    (one.into(), two.into())
}

/// A replica that nests one more Y.Map (key `k`) per update under root map `root`: every
/// update's parent is already in the receiving document, so only its index of depths
/// (`DepthIndex`) can tell how deep the update lands.
pub struct MapChain {
    /// The replica.
    pub doc: yrs::Doc,
    tip: yrs::MapRef,
}

impl MapChain {
    /// An empty chain of replica `client`.
    pub fn new(client: u64) -> MapChain {
        let doc = yrs::Doc::with_client_id(client);
        let tip = doc.get_or_insert_map("root");
        MapChain { doc, tip }
    }

    /// The v1 update that adds one level (the first call makes depth 2: root map 1).
    pub fn deeper(&mut self) -> Vec<u8> {
        use yrs::{Map, MapPrelim, ReadTxn, Transact};
        let before = self.doc.transact().state_vector();
        let next = {
            let mut txn = self.doc.transact_mut();
            self.tip.insert(&mut txn, "k", MapPrelim::default())
        };
        self.tip = next;
        self.doc.transact().encode_state_as_update_v1(&before)
    }
}

/// Environment variable naming a file that every skipped test appends one line to
/// (`name: why`); `.ci/run` sets it and ends with the count and the names.
pub const SKIP_LOG_VAR: &str = "CHORUS_SKIP_LOG";

/// Reports that the calling test skips itself because something outside the repository is
/// missing (a service, a tool). Under `CI` it panics instead: a CI run never passes by
/// skipping. Otherwise it writes to the process's stderr directly (the test harness hides
/// `eprintln!` of passing tests, and a silent skip looks like a pass) and appends the test's
/// name to the file named by [`SKIP_LOG_VAR`], so the runner can list every skip at the end.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed test");
    if std::env::var_os("CI").is_some() {
        panic!("{name}: {why}; CI is set, so this test must not be skipped");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n==== SKIPPED {name}: {why} (set CI=1 to make this fail) ====\n"
    );
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        let line = format!("{name}: {}\n", why.replace('\n', " "));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write of a short line with O_APPEND: lines of parallel tests do not interleave.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Client `client` types `parts` one after another at the end of root text "t": one v1 update
/// per part, each continuing the last (for tests of updates arriving out of order).
pub fn typing(client: u64, parts: &[&str]) -> Vec<Vec<u8>> {
    use yrs::{ReadTxn, Text, Transact};
    let doc = yrs::Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut out = Vec::new();
    for p in parts {
        let before = doc.transact().state_vector();
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, p);
        drop(txn);
        out.push(doc.transact().encode_state_as_update_v1(&before));
    }
    out
}
