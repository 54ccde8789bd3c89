//! The services tests share: Redis (the machine's, `CHORUS_TEST_REDIS_URL`, with a key
//! prefix per test; or a `redis-server` of the test's own, alone or as a cluster, for tests
//! that restart it). Postgres is `chorus_persistence::testing::TestDatabase` (a database per
//! test). A missing service skips the test through `chorus_persistence::testing::skip`
//! (listed at the end of `.ci/run`), or fails it under `CI`.

use std::time::Duration;

use fred::prelude::ClientLike;

pub fn redis_url() -> String {
    std::env::var("CHORUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connected client, or `None` (reported) when Redis is unreachable outside CI.
pub async fn redis() -> Option<fred::prelude::Client> {
    let config = fred::prelude::Config::from_url(&redis_url()).expect("CHORUS_TEST_REDIS_URL");
    let client = fred::prelude::Client::new(config, None, None, None);
    client.connect();
    let up = tokio::time::timeout(Duration::from_secs(3), client.wait_for_connect())
        .await
        .is_ok_and(|r| r.is_ok());
    if up {
        return Some(client);
    }
    chorus_persistence::testing::skip(&format!(
        "Redis at {} is unreachable: start Redis or set CHORUS_TEST_REDIS_URL",
        redis_url()
    ));
    None
}

pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("test-{test}-{}-{nanos}", std::process::id())
}

/// A private Redis on a free port, killed on drop (for tests that stop and restart it).
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// `None` (reported) when `redis-server` is not installed, outside CI.
    pub fn start() -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = OwnRedis { port, child: None };
        if !r.spawn() {
            chorus_persistence::testing::skip("redis-server is not installed");
            return None;
        }
        Some(r)
    }

    pub fn spawn(&mut self) -> bool {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(self.port.to_string())
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                self.child = Some(c);
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "redis-server never listened"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                true
            }
            Err(_) => false,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-shard Redis Cluster on free ports, killed on drop.
pub struct OwnRedisCluster {
    pub ports: Vec<u16>,
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl OwnRedisCluster {
    pub fn start() -> Option<OwnRedisCluster> {
        let dir = tempfile::tempdir().expect("dir");
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("port")
                    .port()
            })
            .collect();
        let mut children = Vec::new();
        for port in &ports {
            let child = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .arg("--port")
                .arg(port.to_string())
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(c) => children.push(c),
                Err(_) => {
                    chorus_persistence::testing::skip("redis-server is not installed");
                    return None;
                }
            }
        }
        let cluster = OwnRedisCluster {
            ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server never listened"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let status = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = std::process::Command::new("redis-cli")
                .args(["-p", &cluster.ports[0].to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Redis cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }

    /// Sharded subscribers of `channel`, over every shard.
    pub fn shard_subscribers(&self, channel: &str) -> u64 {
        self.ports
            .iter()
            .map(|p| {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "pubsub", "shardnumsub", channel])
                    .output()
                    .expect("redis-cli");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One `chorus` process of a cluster on the shared Postgres database and Redis, with `extra`
/// flags.
pub async fn spawn_node(
    db: &str,
    prefix: &str,
    id: &str,
    extra: &[&str],
) -> (tokio::process::Child, std::net::SocketAddr) {
    spawn_node_on(&redis_url(), db, prefix, id, extra).await
}

/// [`spawn_node`] with the Redis at `redis`.
pub async fn spawn_node_on(
    redis: &str,
    db: &str,
    prefix: &str,
    id: &str,
    extra: &[&str],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut args = vec![
        "--persist-batch",
        "10ms",
        "--node-ttl",
        "900ms",
        "--allow-anonymous",
        "--node-id",
        id,
        "--redis-prefix",
        prefix,
        "--redis-url",
        redis,
        "--database-url",
        db,
    ];
    args.extend_from_slice(extra);
    super::spawn_chorus(&args).await
}
