//! The web client (`web-client/`), served at `/` for a request that is not a WebSocket
//! upgrade (an upgrade at `/` stays the Hocuspocus endpoint), and its assets under
//! `/assets/`.
//!
//! The built files (`web-client/dist`, committed) are compiled into the binary, so the run
//! command serves the editor on a fresh clone with no npm step, and one file is all an
//! operator deploys. CI rebuilds `dist` from the sources and fails if it differs from what is
//! committed (`scripts/web-client-check`): what the hub serves is what the sources build.
//! Assets have content-hashed names and are cached for a year; the page itself never is.
//! Text assets go gzipped to clients that accept it (compressed once, on first request).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::error::ApiError;

#[derive(rust_embed::RustEmbed)]
#[folder = "../web-client/dist/"]
struct Dist;

/// The page's policy: scripts and styles from the hub only (styles may be inline: the
/// editor's carets set them), sockets and REST to the hub, no plugins, no base rewrites.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
     form-action 'self'";

/// Gzipped text assets, by path.
fn gzipped() -> &'static Mutex<HashMap<String, Bytes>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn gzip(path: &str, raw: &[u8]) -> Bytes {
    let mut cache = gzipped().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(z) = cache.get(path) {
        return z.clone();
    }
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let z = match enc.write_all(raw).and_then(|()| enc.finish()) {
        Ok(z) => Bytes::from(z),
        Err(_) => Bytes::copy_from_slice(raw),
    };
    cache.insert(path.to_owned(), z.clone());
    z
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.trim().split(';');
            parts.next() == Some("gzip") && !parts.any(|q| q.trim() == "q=0")
        })
}

fn serve(path: &str, headers: &HeaderMap, cache: &'static str) -> Option<Response> {
    let file = Dist::get(path)?;
    let mime = file.metadata.mimetype().to_owned();
    let text = mime.starts_with("text/") || mime.contains("javascript") || mime.contains("json");
    let (body, encoded) = if text && file.data.len() > 1024 && accepts_gzip(headers) {
        (gzip(path, &file.data), true)
    } else {
        // Embedded files are 'static in a release build: served without a copy.
        let body = match file.data {
            std::borrow::Cow::Borrowed(b) => Bytes::from_static(b),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        (body, false)
    };
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Some(res)
}

/// The page (`index.html`).
pub(crate) fn page(headers: &HeaderMap) -> Response {
    match serve("index.html", headers, "no-cache") {
        Some(mut res) => {
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            res
        }
        None => ApiError::NotFound(
            "this build has no web client (web-client/dist was empty when it was built)".into(),
        )
        .into_response(),
    }
}

/// `GET /assets/{*file}`.
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    // Only the flat, hashed names Vite writes: nothing else is looked up.
    let plain = !file.is_empty()
        && file.len() <= 128
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !file.starts_with('.');
    let found = plain
        .then(|| {
            serve(
                &format!("assets/{file}"),
                &headers,
                "public, max-age=31536000, immutable",
            )
        })
        .flatten();
    found.unwrap_or_else(|| ApiError::NotFound("no such asset".into()).into_response())
}

/// Whether this build carries the web client.
pub fn bundled() -> bool {
    Dist::get("index.html").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzipx"));
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn the_build_carries_the_page() {
        assert!(bundled(), "web-client/dist/index.html is missing");
    }
}
