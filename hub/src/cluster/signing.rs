//! `--bus-secret`: every bus message carries an HMAC-SHA256 of its channel and body under
//! the secret, and messages without a valid one are dropped (whoever can publish on Redis
//! cannot speak for a node, nor replay a message into another room).

use bytes::{Bytes, BytesMut};

/// Length of a message's signature (HMAC-SHA256) when `--bus-secret` is set.
const TAG: usize = 32;

fn tag(secret: &[u8], channel: &str, body: &[u8]) -> Option<hmac::Hmac<sha2::Sha256>> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    // The channel is signed too: a message cannot be replayed into another room.
    mac.update(channel.as_bytes());
    mac.update(&[0]);
    mac.update(body);
    Some(mac)
}

/// `body` followed by its signature.
pub fn seal(secret: &[u8], channel: &str, body: Bytes) -> Bytes {
    use hmac::Mac;
    let Some(mac) = tag(secret, channel, &body) else {
        return body;
    };
    let mut out = BytesMut::with_capacity(body.len() + TAG);
    out.extend_from_slice(&body);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out.freeze()
}

/// The body of a sealed message, if its signature is valid (checked in constant time).
pub fn open(secret: &[u8], channel: &str, raw: Bytes) -> Option<Bytes> {
    use hmac::Mac;
    let at = raw.len().checked_sub(TAG)?;
    let body = raw.slice(..at);
    tag(secret, channel, &body)?.verify_slice(&raw[at..]).ok()?;
    Some(body)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    #[test]
    fn sealed_messages_open_only_with_their_secret_and_channel() {
        let secret = b"a-secret-of-at-least-thirty-two-bytes";
        let body = Bytes::from_static(b"envelope");
        let sealed = super::seal(secret, "p:room:t/r", body.clone());
        assert_eq!(
            super::open(secret, "p:room:t/r", sealed.clone()),
            Some(body)
        );
        assert_eq!(
            super::open(
                b"another-secret-another-secret-xx",
                "p:room:t/r",
                sealed.clone()
            ),
            None
        );
        assert_eq!(super::open(secret, "p:room:t/other", sealed.clone()), None);
        let mut tampered = sealed.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            super::open(secret, "p:room:t/r", Bytes::from(tampered)),
            None
        );
        assert_eq!(
            super::open(secret, "p:room:t/r", Bytes::from_static(b"short")),
            None
        );
    }
}
