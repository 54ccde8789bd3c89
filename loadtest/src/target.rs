//! Where load may be sent.

use std::net::IpAddr;

/// Checks that `url` (a `ws://` URL, or several separated by commas: the nodes of a cluster)
/// points at loopback addresses only, unless `allow_remote`.
pub fn check(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    url.split(',')
        .try_for_each(|one| check_one(one, allow_remote))
}

fn check_one(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| anyhow::anyhow!("--url must start with ws:// or wss://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if allow_remote {
        return Ok(());
    }
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        anyhow::bail!(
            "refusing to send load to {host:?}: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed without --allow-remote"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_the_flag() {
        assert!(check("ws://127.0.0.1:8080/ws", false).is_ok());
        assert!(check("ws://127.0.0.9:8080/ws", false).is_ok());
        assert!(check("ws://localhost:1/ws", false).is_ok());
        assert!(check("ws://[::1]:8080/ws", false).is_ok());
        assert!(check("ws://10.0.0.1:8080/ws", false).is_err());
        assert!(check("ws://example.com/ws", false).is_err());
        assert!(check("ws://example.com/ws", true).is_ok());
        assert!(check("http://127.0.0.1/ws", false).is_err());
        assert!(check("ws://127.0.0.1:1/ws,ws://127.0.0.2:2/ws", false).is_ok());
        assert!(check("ws://127.0.0.1:1/ws,ws://10.0.0.1:2/ws", false).is_err());
        assert!(check("ws://127.0.0.1:1/ws,", false).is_err());
    }
}
