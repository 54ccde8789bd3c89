//! A hub in the test process, on 127.0.0.1:0, stopped when dropped.

pub(crate) struct Hub {
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a hub with the defaults, a fresh data directory and what `configure` changes.
pub(crate) async fn hub_with(configure: impl FnOnce(&mut chorus_hub::Config)) -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_hub::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..chorus_hub::Config::default()
    };
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(chorus_hub::run(listener, config, async move {
        let _ = rx.await;
    }));
    Hub {
        url: format!("ws://{addr}/ws"),
        stop: Some(stop),
        _dir: dir,
    }
}
