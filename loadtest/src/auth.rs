//! Telling a refusal of the load tester's credentials apart from other failures, and saying
//! what to do about it. A hub that requires tokens refuses a WebSocket upgrade either with an
//! HTTP 401/403 or by accepting it and closing at once with 4401 (unauthenticated) or 4403
//! (forbidden) and a reason; in the Hocuspocus dialect it answers `permission-denied`.

use chorus_protocol::client::ClientError;
use tokio_tungstenite::tungstenite;

/// What kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No token, or a bad one (HTTP 401, close 4401).
    Unauthenticated,
    /// A token that does not grant this room or action (HTTP 403, close 4403), or a
    /// Hocuspocus `permission-denied`.
    Forbidden,
}

/// The server refused the credentials: how (`HTTP 401 Unauthorized: missing token`, `close
/// 4401 "token expired"`) and of which kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind.
    pub kind: Kind,
    /// How the server said it, for the message.
    pub how: String,
}

impl Refusal {
    /// An HTTP refusal of the upgrade (401 or 403), with the body's detail if it has one.
    pub fn from_error(e: &ClientError) -> Option<Refusal> {
        match e {
            ClientError::Ws(e) => Refusal::from_ws_error(e),
            _ => None,
        }
    }

    /// [`Refusal::from_error`] for a raw tungstenite error.
    pub fn from_ws_error(e: &tungstenite::Error) -> Option<Refusal> {
        let tungstenite::Error::Http(resp) = e else {
            return None;
        };
        let status = resp.status();
        let kind = match status.as_u16() {
            401 => Kind::Unauthenticated,
            403 => Kind::Forbidden,
            _ => return None,
        };
        let mut how = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        if let Some(detail) = resp.body().as_deref().and_then(body_detail) {
            how.push_str(&format!(": {detail}"));
        }
        Some(Refusal { kind, how })
    }

    /// A close with 4401 or 4403 (before the session synced).
    pub fn from_close(code: u16, reason: &str) -> Option<Refusal> {
        let kind = match code {
            4401 => Kind::Unauthenticated,
            4403 => Kind::Forbidden,
            _ => return None,
        };
        let how = if reason.is_empty() {
            format!("close {code}")
        } else {
            format!("close {code} \"{reason}\"")
        };
        Some(Refusal { kind, how })
    }

    /// A Hocuspocus `permission-denied` answer to the auth message.
    pub fn from_hocuspocus_denied(reason: &str) -> Refusal {
        Refusal {
            kind: Kind::Forbidden,
            how: format!("Hocuspocus permission-denied \"{reason}\""),
        }
    }

    /// The message for people: what happened and what to pass. `token_given`: whether the run
    /// had `--token`; `room_prefix`: the rooms it uses.
    pub fn advice(&self, token_given: bool, room_prefix: &str) -> String {
        let what = format!("the hub refused the connection ({})", self.how);
        let pattern = room_pattern(room_prefix);
        match (self.kind, token_given) {
            (_, false) => format!(
                "{what}: it requires a token. Pass one with --token TOKEN (or the environment \
                 variable CHORUS_LOADTEST_TOKEN). For a hub started with --jwt-secret, `chorus token --room '{pattern}' --jwt-secret SECRET` prints one"
            ),
            (Kind::Unauthenticated, true) => format!(
                "{what}: the token given with --token (or CHORUS_LOADTEST_TOKEN) is malformed, \
                 expired or not signed with the hub's key; pass a valid one"
            ),
            (Kind::Forbidden, true) => format!(
                "{what}: the token given with --token (or CHORUS_LOADTEST_TOKEN) does not grant \
                 the rooms this run uses ({room_prefix}...) with write access; pass a token for \
                 '{pattern}' (role write), or --room-prefix with rooms the token grants"
            ),
        }
    }
}

/// The room pattern a token for this run (and the next) needs: the default prefix
/// `lt-<pid>-` changes every run, so it becomes `lt-*`; a chosen prefix `p` becomes `p*`.
fn room_pattern(prefix: &str) -> String {
    let default = prefix
        .strip_prefix("lt-")
        .and_then(|r| r.strip_suffix('-'))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    if default {
        "lt-*".to_string()
    } else {
        format!("{prefix}*")
    }
}

/// The message of a JSON error body (the hub's `{"error":{"message":..}}`, or a problem's
/// `detail`), or a short plain-text body.
fn body_detail(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return [
            &v["error"]["message"],
            &v["detail"],
            &v["message"],
            &v["error"],
        ]
        .into_iter()
        .find_map(|d| d.as_str().map(str::to_string));
    }
    (!text.is_empty() && text.len() <= 200 && !text.contains('<')).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> tungstenite::Error {
        let resp = tungstenite::http::Response::builder()
            .status(status)
            .body(Some(body.as_bytes().to_vec()))
            .expect("response");
        tungstenite::Error::Http(Box::new(resp))
    }

    #[test]
    fn http_401_and_403_are_refusals_other_statuses_are_not() {
        let r = Refusal::from_ws_error(&http(
            401,
            r#"{"error":{"code":"unauthenticated","message":"missing token"}}"#,
        ))
        .expect("a refusal");
        assert_eq!(r.kind, Kind::Unauthenticated);
        assert_eq!(r.how, "HTTP 401 Unauthorized: missing token");
        let r = Refusal::from_ws_error(&http(403, "")).expect("a refusal");
        assert_eq!(
            (r.kind, r.how.as_str()),
            (Kind::Forbidden, "HTTP 403 Forbidden")
        );
        let r = Refusal::from_ws_error(&http(403, r#"{"detail":"room not granted"}"#));
        assert_eq!(
            r.map(|r| r.how),
            Some("HTTP 403 Forbidden: room not granted".into())
        );
        assert!(Refusal::from_ws_error(&http(503, "busy")).is_none());
        assert!(Refusal::from_error(&ClientError::Closed).is_none());
    }

    #[test]
    fn closes_4401_and_4403_are_refusals() {
        let r = Refusal::from_close(4401, "missing token").expect("a refusal");
        assert_eq!(r.kind, Kind::Unauthenticated);
        assert_eq!(r.how, "close 4401 \"missing token\"");
        assert_eq!(
            Refusal::from_close(4403, "").map(|r| r.kind),
            Some(Kind::Forbidden)
        );
        assert!(Refusal::from_close(1000, "bye").is_none());
        assert!(Refusal::from_close(4429, "quota").is_none());
    }

    #[test]
    fn the_advice_names_the_flag() {
        let r = Refusal::from_close(4401, "missing token").expect("a refusal");
        let none = r.advice(false, "lt-7-");
        assert!(none.contains("--token"), "{none}");
        assert!(none.contains("CHORUS_LOADTEST_TOKEN"), "{none}");
        assert!(none.contains("--room 'lt-*'"), "{none}");
        assert_eq!(room_pattern("lt-123-"), "lt-*");
        assert_eq!(room_pattern("bench-"), "bench-*");
        assert_eq!(room_pattern("lt--"), "lt--*");
        assert!(r.advice(true, "lt-7-").contains("expired"));
        let f = Refusal::from_close(4403, "room not granted").expect("a refusal");
        assert!(f.advice(true, "lt-7-").contains("does not grant"));
    }
}
