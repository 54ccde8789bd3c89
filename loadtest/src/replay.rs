//! `replay`: plays sessions recorded by the hub (`chorus --record-dir`) back against a server,
//! N copies at a time, each copy in its own rooms, optionally faster or slower than recorded.
//! Every frame is sent as recorded (the original client ids and updates), so a replayed room
//! ends with the same document as the recorded one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::human::thousands;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenario::Target;

/// One recorded session.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Room it was recorded in (y-websocket); empty for Hocuspocus, whose frames name their
    /// documents.
    pub room: String,
    /// Whether it is a Hocuspocus socket's recording.
    pub hocuspocus: bool,
    /// Frames with their offsets from the session start.
    pub frames: Vec<(Duration, Frame)>,
}

/// A recorded inbound frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A binary (y-sync) frame.
    Binary(Bytes),
    /// A text (extension) frame.
    Text(String),
}

#[derive(Deserialize)]
struct Header {
    v: u32,
    // Absent in recordings made before the Hocuspocus endpoint was recorded.
    dialect: Option<String>,
    room: Option<String>,
}

#[derive(Deserialize)]
struct Line {
    t_ms: u64,
    binary: Option<String>,
    text: Option<String>,
}

impl Recording {
    /// Reads one `.jsonl` recording.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut lines = text.lines();
        let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("{}: bad header: {e}", path.display()))?;
        anyhow::ensure!(
            header.v == 1,
            "{}: unsupported version {}",
            path.display(),
            header.v
        );
        let hocuspocus = match header.dialect.as_deref() {
            None | Some("y-websocket") => false,
            Some("hocuspocus") => true,
            Some(other) => anyhow::bail!("{}: unknown dialect {other:?}", path.display()),
        };
        let room = match (hocuspocus, header.room) {
            (true, _) => String::new(),
            (false, Some(room)) => room,
            (false, None) => anyhow::bail!("{}: the header names no room", path.display()),
        };
        let mut frames = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 2))?;
            let frame = match (l.binary, l.text) {
                (Some(b), None) => Frame::Binary(Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 2))?,
                )),
                (None, Some(t)) => Frame::Text(t),
                _ => anyhow::bail!(
                    "{}:{}: need exactly one of binary/text",
                    path.display(),
                    n + 2
                ),
            };
            frames.push((Duration::from_millis(l.t_ms), frame));
        }
        Ok(Recording {
            room,
            hocuspocus,
            frames,
        })
    }

    /// Every `.jsonl` file in `dir`, sorted by name (= by start time).
    pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Recording>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Recording::load(p)).collect()
    }
}

/// Room names can hold anything; replayed rooms use a URL-safe form.
pub fn safe_room(room: &str) -> String {
    room.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_./".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parameters of the `replay` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayParams {
    /// Directory of recordings.
    pub dir: PathBuf,
    /// Copies of the whole set played at once; copy `c` uses rooms `<prefix>c<c>-<room>`.
    pub copies: usize,
    /// Time scale: 2.0 plays twice as fast as recorded.
    pub speed: f64,
}

/// Runs the `replay` scenario.
pub async fn replay(target: &Target, p: &ReplayParams) -> Report {
    let mut report = Report::of("replay", target, p);
    let recordings = match Recording::load_dir(&p.dir) {
        Ok(r) if !r.is_empty() => std::sync::Arc::new(r),
        Ok(_) => {
            report
                .problems
                .push(format!("no .jsonl recordings in {}", p.dir.display()));
            return report;
        }
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    let started = Instant::now();
    let speed = p.speed.max(0.001);
    let sessions = recordings.len() * p.copies.max(1);
    // Frames sent and sessions finished so far, for the bar.
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let longest = recordings
        .iter()
        .filter_map(|r| r.frames.last().map(|(at, _)| *at))
        .max()
        .unwrap_or_default()
        .div_f64(speed);
    let bar = {
        let counts = counts.clone();
        Progress::timed(target.progress, "replay", longest, move || {
            format!(
                "{} frames sent, {} / {} sessions done",
                thousands(counts.0.load(Ordering::Relaxed)),
                thousands(counts.1.load(Ordering::Relaxed)),
                thousands(sessions as u64)
            )
        })
    };
    let mut tasks = Vec::new();
    for copy in 0..p.copies.max(1) {
        for i in 0..recordings.len() {
            let (target, recs, counts) = (target.clone(), recordings.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let rec = &recs[i];
                let res = replay_one(&target, copy, rec, speed, &counts.0).await;
                counts.1.fetch_add(1, Ordering::Relaxed);
                res
            }));
        }
    }
    let mut sent = 0usize;
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("task: {e}")),
        }
    }
    drop(bar);
    let secs = started.elapsed().as_secs_f64();
    report
        .metrics
        .insert("recordings".into(), recordings.len() as f64);
    report.metrics.insert("sessions".into(), sessions as f64);
    report.metrics.insert("frames_sent".into(), sent as f64);
    report.metrics.insert("elapsed_s".into(), secs);
    report
        .metrics
        .insert("sessions_failed".into(), failures.len() as f64);
    if let Some(advice) = target.refused() {
        report.problems.push(format!(
            "{} sessions failed: {advice}",
            thousands(failures.len() as u64)
        ));
    } else if !failures.is_empty() {
        report.problems.push(format!(
            "{} sessions failed, e.g. {}",
            failures.len(),
            failures[0]
        ));
    }
    report
}

/// Plays one recording as copy `copy`; returns the frames sent.
async fn replay_one(
    target: &Target,
    copy: usize,
    rec: &Recording,
    speed: f64,
    frames_sent: &AtomicU64,
) -> anyhow::Result<usize> {
    if rec.hocuspocus {
        return replay_hocuspocus(target, copy, rec, speed, frames_sent).await;
    }
    let url = format!(
        "{}/{}c{copy}-{}",
        target.url.trim_end_matches('/'),
        target.room_prefix,
        safe_room(&rec.room)
    );
    let opts = chorus_protocol::client::ClientOptions {
        token: target.token.clone(),
        ..Default::default()
    };
    let client = target.connect_url(&url, opts).await?;
    let t0 = tokio::time::Instant::now();
    for (at, frame) in &rec.frames {
        tokio::time::sleep_until(t0 + at.div_f64(speed)).await;
        match frame {
            Frame::Binary(b) => client.send_raw(b.clone())?,
            Frame::Text(t) => client.send_text(t)?,
        }
        frames_sent.fetch_add(1, Ordering::Relaxed);
    }
    let n = rec.frames.len();
    if let Some((code, reason)) = client.closed() {
        anyhow::bail!("{url}: the server closed the session ({code} {reason})");
    }
    client.close().await;
    anyhow::Ok(n)
}

/// The Hocuspocus endpoint to replay to: `--url` itself in that dialect, else `--url` with its
/// path replaced (Chorus serves both dialects on one port).
fn hocuspocus_url(target: &Target) -> String {
    if target.dialect == crate::scenario::Dialect::Hocuspocus {
        return target.url.clone();
    }
    let host_start = target.url.find("://").map_or(0, |i| i + 3);
    let path_start = target.url[host_start..]
        .find('/')
        .map_or(target.url.len(), |i| host_start + i);
    format!("{}/hocuspocus", &target.url[..path_start])
}

/// A recorded Hocuspocus frame for copy `copy`: its document renamed to
/// `<prefix>c<copy>-<name>` (a provider's session suffix kept) and, for an auth message, the
/// replay's token (recordings hold none). Connection-level and undecodable frames go as
/// recorded.
pub fn rename_hocuspocus(frame: &Bytes, prefix: &str, copy: usize, token: Option<&str>) -> Bytes {
    use chorus_protocol::hocuspocus::{self, DocMessage, Incoming};
    let Ok(Incoming::Doc { address, body }) = Incoming::decode(frame.clone()) else {
        return frame.clone();
    };
    let (name, session) = match address.split_once(hocuspocus::SESSION_SEPARATOR) {
        Some((name, session)) => (name, Some(session)),
        None => (address.as_str(), None),
    };
    let mut renamed = format!("{prefix}c{copy}-{}", safe_room(name));
    if let Some(s) = session {
        renamed.push(hocuspocus::SESSION_SEPARATOR);
        renamed.push_str(s);
    }
    let new_prefix = hocuspocus::address_prefix(&renamed);
    match body {
        DocMessage::Auth {
            provider_version, ..
        } => hocuspocus::auth(
            &new_prefix,
            token.unwrap_or(""),
            provider_version.as_deref().unwrap_or(""),
        ),
        _ => {
            let old = hocuspocus::address_prefix(&address).len();
            hocuspocus::wrap(&new_prefix, &frame[old.min(frame.len())..])
        }
    }
}

/// Plays one Hocuspocus socket's recording over one socket; fails if the server closes it
/// with anything but a normal close.
async fn replay_hocuspocus(
    target: &Target,
    copy: usize,
    rec: &Recording,
    speed: f64,
    frames_sent: &AtomicU64,
) -> anyhow::Result<usize> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let url = hocuspocus_url(target);
    let (ws, _) = tokio::time::timeout(target.timeout, tokio_tungstenite::connect_async(&url))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: connect timed out"))?
        .map_err(|e| match crate::auth::Refusal::from_ws_error(&e) {
            Some(r) => target.refuse(&r),
            None => e.into(),
        })?;
    let (mut sink, mut stream) = ws.split();
    // Read everything the server sends (an unread socket would stall it); remember its close.
    let reader = tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            match m {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    });
    let t0 = tokio::time::Instant::now();
    for (at, frame) in &rec.frames {
        tokio::time::sleep_until(t0 + at.div_f64(speed)).await;
        let msg = match frame {
            Frame::Binary(b) => Message::Binary(rename_hocuspocus(
                b,
                &target.room_prefix,
                copy,
                target.token.as_deref(),
            )),
            Frame::Text(t) => Message::Text(t.as_str().into()),
        };
        if sink.send(msg).await.is_err() {
            break;
        }
        frames_sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = sink.send(Message::Close(None)).await;
    let closed = tokio::time::timeout(target.timeout, reader)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no close from the server"))??;
    if let Some((code, reason)) = closed.filter(|(code, _)| *code != 1000) {
        if let Some(r) = crate::auth::Refusal::from_close(code, &reason) {
            return Err(target.refuse(&r));
        }
        anyhow::bail!("{url}: the server closed the session ({code} {reason})");
    }
    Ok(rec.frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Recording> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, text).expect("write");
        Recording::load(&path)
    }

    #[test]
    fn headers_name_the_dialect_and_bad_ones_are_refused() {
        let old = load("{\"v\":1,\"room\":\"notes\"}\n{\"t_ms\":1,\"binary\":\"AAA=\"}\n")
            .expect("a header without dialect is y-websocket");
        assert!(!old.hocuspocus && old.room == "notes" && old.frames.len() == 1);
        let hp = load("{\"v\":1,\"dialect\":\"hocuspocus\",\"started_unix_ms\":1}\n")
            .expect("hocuspocus names no room");
        assert!(hp.hocuspocus && hp.room.is_empty());
        for bad in [
            "{\"v\":1,\"dialect\":\"y-websocket\"}\n",
            "{\"v\":1,\"dialect\":\"socket.io\",\"room\":\"r\"}\n",
            "{\"v\":2,\"room\":\"r\"}\n",
            "{\"v\":1,\"room\":\"r\"}\n{\"t_ms\":1,\"binary\":\"AAA=\",\"text\":\"x\"}\n",
        ] {
            assert!(load(bad).is_err(), "accepted {bad}");
        }
    }
}
