//! Which pages may open WebSockets here: browsers apply no CORS to WebSockets, so the
//! page's `Origin` and the `Host` it asked for decide (`--allowed-origins`).

use super::*;

/// What the page that opens a WebSocket may do, from its `Origin` and the `Host` it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTrust {
    /// Loopback, listed, or not a browser: anything its token allows, anonymous included.
    Full,
    /// Only with a token (the page is neither loopback nor listed, and no list is set).
    TokenOnly,
    /// Nothing: a list is set and the page is not on it.
    None,
}

/// Judges the page behind an upgrade (see `--allowed-origins`).
pub fn page_trust(config: &crate::config::Config, headers: &HeaderMap) -> PageTrust {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    let origin = header(header::ORIGIN);
    let listed = |o: &str| {
        config
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
    };
    let Some(origin) = origin else {
        // Not a browser (bots, Node's ws, the load tester): no page to protect from.
        return PageTrust::Full;
    };
    let origin_ok = listed(origin) || origin_host(origin).is_some_and(is_loopback_host);
    if !config.allowed_origins.is_empty() && !origin_ok {
        return PageTrust::None;
    }
    // A local page must also have asked for a local name (a rebound name, evil.example ->
    // 127.0.0.1, comes with its own Origin too, refused above).
    let host_ok = header(header::HOST).is_none_or(|h| {
        is_loopback_host(strip_port(h))
            || config
                .allowed_origins
                .iter()
                .filter_map(|a| origin_host(a))
                .any(|a| a.eq_ignore_ascii_case(strip_port(h)))
    });
    if origin_ok && host_ok {
        PageTrust::Full
    } else {
        PageTrust::TokenOnly
    }
}

/// The host of an origin (`scheme://host[:port]`).
pub(super) fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    Some(strip_port(rest.trim_end_matches('/')))
}

pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
