//! Request signatures: `Chorus-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`,
//! what a receiver checks (several signatures during a secret rotation, a timestamp within a
//! tolerance so a captured request cannot be replayed later).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::SCHEME;

/// The `Chorus-Signature` value for a request: `v1=` and the lowercase hex HMAC-SHA256 of
/// `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let Some(mac) = mac(secret, timestamp, body) else {
        return String::new();
    };
    let code = mac.finalize().into_bytes();
    let mut out = String::with_capacity(SCHEME.len() + code.len() * 2);
    out.push_str(SCHEME);
    for byte in code.iter() {
        out.push(hex_digit(byte >> 4));
        out.push(hex_digit(byte & 0x0f));
    }
    out
}

/// Checks a request the way a receiver should: `header` (the `Chorus-Signature` value, which
/// may list several comma-separated signatures, e.g. during a secret rotation) holds a `v1`
/// signature of `timestamp` and `body` under `secret`, and `timestamp` (the `Chorus-Timestamp`
/// value) is within `tolerance` of `now` (Unix seconds), so a captured request cannot be
/// replayed later. The comparison takes constant time.
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance: Duration,
) -> bool {
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    header.split(',').any(|part| {
        let Some(hex) = part.trim().strip_prefix(SCHEME) else {
            return false;
        };
        let Some(code) = decode_hex(hex) else {
            return false;
        };
        mac(secret, timestamp, body).is_some_and(|mac| mac.verify_slice(&code).is_ok())
    })
}

/// The MAC over `"<timestamp>.<body>"`. HMAC takes keys of any length, so `None` never happens
/// in practice; it keeps a library bug from becoming a panic.
fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let [high, low] = pair else { return None };
            let high = char::from(*high).to_digit(16)?;
            let low = char::from(*low).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip() {
        let sig = sign(b"secret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("v1="));
        assert_eq!(sig.len(), 3 + 64);
        let ok = |header: &str, body: &[u8], now: i64| {
            verify(
                b"secret",
                1_700_000_000,
                body,
                header,
                now,
                Duration::from_secs(300),
            )
        };
        assert!(ok(&sig, b"{}", 1_700_000_100));
        assert!(ok(&format!("v1=00, {sig}"), b"{}", 1_700_000_000));
        assert!(!ok(&sig, b"{ }", 1_700_000_000));
        assert!(!ok(&sig, b"{}", 1_700_000_301));
        assert!(!ok(&sig[3..], b"{}", 1_700_000_000));
        assert!(!ok("v1=zz", b"{}", 1_700_000_000));
    }
}
