//! Where webhooks may go: never into the operator's internal network unless allowed. IP
//! literals are checked when the webhook is set and before each delivery; names are checked
//! when they resolve, so DNS cannot smuggle a request inside.

/// Whether an address is internal: loopback, private, link-local (cloud metadata lives there),
/// carrier-grade NAT, unique-local, unspecified, multicast or broadcast.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                // IETF protocol assignments (192.0.0.0/24: DS-Lite, NAT64 discovery, ...).
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_internal(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            // Addresses that carry an IPv4 address a gateway would reach: IPv4-compatible
            // (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
            if seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return embedded(seg[6], seg[7]);
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return embedded(seg[6], seg[7]);
            }
            // IPv4-translated (SIIT, ::ffff:0:a.b.c.d).
            if seg[..6] == [0, 0, 0, 0, 0xffff, 0] {
                return embedded(seg[6], seg[7]);
            }
            if seg[0] == 0x2002 {
                return embedded(seg[1], seg[2]);
            }
            let first = seg[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Site-local (deprecated, still routed inside some networks).
                || (first & 0xffc0) == 0xfec0
                // Local-use NAT64 (64:ff9b:1::/48): translated into the operator's network.
                || seg[..3] == [0x64, 0xff9b, 1]
                // Teredo (2001::/32): tunnels to an IPv4 address hidden in the suffix.
                || seg[..2] == [0x2001, 0]
        }
    }
}

/// Checks a webhook URL: http(s) with a host, and (unless `allow_private`) not an internal IP
/// literal. Names are checked when they resolve (`PublicResolver`).
pub fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url must be an http:// or https:// URL".into());
    }
    let ip = match parsed.host() {
        None => return Err("url must name a host".into()),
        Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
    };
    if !allow_private && is_internal(ip) {
        return Err(format!(
            "url points at an internal address ({ip}); the operator can allow that with --webhook-allow-private"
        ));
    }
    Ok(())
}

/// Resolves receiver names with the system resolver and drops internal addresses unless
/// allowed; a name with only internal addresses fails to resolve.
pub(super) struct PublicResolver {
    /// Let internal addresses through.
    pub(super) allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
            "198.18.0.1",
            "240.0.0.1",
            // Issue 13: local-use NAT64, IPv4-translated, site-local, Teredo, IETF assignments.
            "64:ff9b:1::a00:1",
            "::ffff:0:a00:1",
            "fec0::1",
            "2001:0:4136:e378::1",
            "192.0.0.8",
        ] {
            let ip: std::net::IpAddr = internal.parse().expect("ip");
            assert!(super::is_internal(ip), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "192.0.2.1",
            "2001:db8::1",
            "2001:4860::8888",
        ] {
            let ip: std::net::IpAddr = public.parse().expect("ip");
            assert!(!super::is_internal(ip), "{public}");
        }
        assert!(super::check_target("http://169.254.169.254/", false).is_err());
        assert!(super::check_target("http://169.254.169.254/", true).is_ok());
        assert!(super::check_target("https://example.com/hook", false).is_ok());
        assert!(super::check_target("file:///etc/passwd", true).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        use reqwest::dns::Resolve;
        let strict = super::PublicResolver {
            allow_private: false,
        };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(strict.resolve(name).await.is_err());
        let open = super::PublicResolver {
            allow_private: true,
        };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(open.resolve(name).await.is_ok());
    }
}
