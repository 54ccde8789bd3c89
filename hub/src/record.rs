//! Opt-in session recording (`--record-dir`): every inbound frame of a session, with its time
//! offset, as JSON lines, so the load tester can replay real sessions (`chorus-loadtest
//! replay`). Format (docs/PROTOCOL.md, "Session recordings"):
//!
//! ```text
//! {"v":1,"tenant":"default","room":"notes","started_unix_ms":1764330000000}
//! {"t_ms":12,"binary":"AAABAA=="}
//! {"t_ms":40,"text":"{\"v\":1,\"type\":\"ping\"}"}
//! ```
//!
//! Frames are recorded before validation, so a recording reproduces bad input too. Writing is
//! synchronous and flushed per frame: recording is a diagnostic mode, not the hot path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use chorus_persistence::RoomKey;
use serde_json::json;

use crate::conn::ConnId;

/// One session's recording file.
pub struct Recorder {
    out: BufWriter<File>,
    started: Instant,
}

impl Recorder {
    /// Creates `<dir>/<unix_ms>-<conn>.jsonl` with its header; logs and returns `None` if the
    /// file cannot be written (recording never breaks a session).
    pub fn open(dir: &Path, key: &RoomKey, conn: ConnId) -> Option<Recorder> {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = dir.join(format!("{unix_ms}-{conn}.jsonl"));
        let opened = std::fs::create_dir_all(dir).and_then(|()| File::create(&path));
        let mut out = match opened {
            Ok(f) => BufWriter::new(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot record session");
                return None;
            }
        };
        let header = json!({
            "v": 1,
            "tenant": &*key.tenant,
            "room": &*key.room,
            "started_unix_ms": unix_ms as u64,
        });
        writeln!(out, "{header}").ok()?;
        Some(Recorder {
            out,
            started: Instant::now(),
        })
    }

    /// Records an inbound binary frame.
    pub fn binary(&mut self, frame: &[u8]) {
        let data = base64::engine::general_purpose::STANDARD.encode(frame);
        self.line(json!({ "t_ms": self.offset_ms(), "binary": data }));
    }

    /// Records an inbound text frame.
    pub fn text(&mut self, text: &str) {
        self.line(json!({ "t_ms": self.offset_ms(), "text": text }));
    }

    fn offset_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn line(&mut self, v: serde_json::Value) {
        // Flushed per frame: a recording must be complete as soon as the frame is handled
        // (and survive a crash of the hub), which matters more than syscalls in this mode.
        if let Err(e) = writeln!(self.out, "{v}").and_then(|()| self.out.flush()) {
            tracing::warn!(error = %e, "session recording write failed");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}
