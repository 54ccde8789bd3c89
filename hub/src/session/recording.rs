//! Opt-in session recording (`--record-dir`): every inbound frame of a session, with its time
//! offset, as JSON lines, so the load tester can replay real sessions (`chorus-loadtest
//! replay`). Format (docs/PROTOCOL.md, "Session recordings"):
//!
//! ```text
//! {"v":1,"dialect":"y-websocket","tenant":"default","room":"notes","started_unix_ms":1764330000000}
//! {"t_ms":12,"binary":"AAABAA=="}
//! {"t_ms":40,"text":"{\"v\":1,\"type\":\"ping\"}"}
//! ```
//!
//! A Hocuspocus socket carries any number of documents, so its header names no room
//! (`{"v":1,"dialect":"hocuspocus","started_unix_ms":...}`): every frame carries its document's
//! address. Its auth messages are recorded with the token removed (a recording must never
//! hold credentials; y-websocket tokens travel in the URL and are never recorded either).
//!
//! Frames are recorded before validation, so a recording reproduces bad input too. Writing is
//! synchronous and flushed per frame: recording is a diagnostic mode, not the hot path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use chorus_persistence::RoomKey;
use serde_json::json;

use crate::outbound::ConnId;

/// One session's recording file.
pub struct Recorder {
    out: BufWriter<File>,
    started: Instant,
}

impl Recorder {
    /// Creates `<dir>/<unix_ms>-<conn>.jsonl` with its header; logs and returns `None` if the
    /// file cannot be written (recording never breaks a session).
    pub fn open(dir: &Path, key: &RoomKey, conn: ConnId) -> Option<Recorder> {
        Self::create(dir, conn, |unix_ms| {
            json!({
                "v": 1,
                "dialect": "y-websocket",
                "tenant": &*key.tenant,
                "room": &*key.room,
                "started_unix_ms": unix_ms,
            })
        })
    }

    /// The same for a Hocuspocus socket (its frames name their documents).
    pub fn open_hocuspocus(dir: &Path, conn: ConnId) -> Option<Recorder> {
        Self::create(
            dir,
            conn,
            |unix_ms| json!({ "v": 1, "dialect": "hocuspocus", "started_unix_ms": unix_ms }),
        )
    }

    fn create(
        dir: &Path,
        conn: ConnId,
        header: impl FnOnce(u64) -> serde_json::Value,
    ) -> Option<Recorder> {
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
        let header = header(unix_ms as u64);
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

    /// Records an inbound Hocuspocus frame, an auth message without its token.
    pub fn hocuspocus_binary(&mut self, frame: &Bytes) {
        use chorus_protocol::hocuspocus::{self, DocMessage, Incoming};
        match Incoming::decode(frame.clone()) {
            Ok(Incoming::Doc {
                address,
                body: DocMessage::Auth {
                    provider_version, ..
                },
            }) => {
                let prefix = hocuspocus::address_prefix(&address);
                let redacted =
                    hocuspocus::auth(&prefix, "", provider_version.as_deref().unwrap_or(""));
                self.binary(&redacted);
            }
            _ => self.binary(frame),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::hocuspocus::{self, DocMessage, Incoming};

    #[test]
    fn hocuspocus_recordings_name_their_dialect_and_hold_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = hocuspocus::address_prefix("notes");
        {
            let mut r = Recorder::open_hocuspocus(dir.path(), 7).expect("recorder");
            r.hocuspocus_binary(&hocuspocus::auth(&prefix, "s3cret-token", "4.8.0"));
            r.hocuspocus_binary(&hocuspocus::wrap(&prefix, &[0, 0, 1, 0]));
        }
        let file = std::fs::read_dir(dir.path())
            .expect("dir")
            .next()
            .expect("one file")
            .expect("entry")
            .path();
        let text = std::fs::read_to_string(file).expect("read");
        assert!(!text.contains("s3cret"), "{text}");
        let mut lines = text.lines();
        let header: serde_json::Value =
            serde_json::from_str(lines.next().expect("header")).expect("json");
        assert_eq!(header["dialect"], "hocuspocus");
        assert!(header.get("room").is_none());
        let frame = |line: &str| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let b = base64::engine::general_purpose::STANDARD
                .decode(v["binary"].as_str().expect("binary"))
                .expect("base64");
            Incoming::decode(Bytes::from(b)).expect("decodes")
        };
        let Incoming::Doc { address, body } = frame(lines.next().expect("auth")) else {
            panic!("a document message");
        };
        assert_eq!(address, "notes");
        assert_eq!(
            body,
            DocMessage::Auth {
                token: String::new(),
                provider_version: Some("4.8.0".into()),
            }
        );
        // Other frames are kept as they came.
        assert!(matches!(
            frame(lines.next().expect("sync")),
            Incoming::Doc {
                body: DocMessage::YSync(_),
                ..
            }
        ));
    }
}
