//! lib0 codecs: unsigned varints (7 bits per byte, little-endian groups, high bit = more),
//! length-prefixed byte arrays and UTF-8 strings.
//!
//! The decoder works on a [`Bytes`] so byte-array payloads are returned as zero-copy slices.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a byte string could not be decoded. Every decoder in this crate returns one of these for
/// malformed input instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// A varint had more than 10 bytes or did not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A length prefix points past the end of the input.
    #[error("length {len} exceeds the {remaining} remaining bytes")]
    LengthOutOfRange {
        /// The declared length.
        len: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A string was not valid UTF-8.
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    /// A message type this protocol does not know.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A sync sub-message type other than step 1, step 2 or update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// An auth sub-message type other than permission-denied.
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    /// A frame with no message in it.
    #[error("empty frame")]
    EmptyFrame,
    /// An awareness state that is not valid JSON.
    #[error("awareness state is not valid json")]
    InvalidAwarenessJson,
    /// An integer beyond what JavaScript clients can represent (2^53 - 1) or a field allows.
    #[error("integer out of range")]
    IntegerOutOfRange,
    /// A declared element count larger than the bytes that could hold it.
    #[error("declared count {0} exceeds the input")]
    CountTooLarge(u64),
}

/// Largest integer a JavaScript number holds exactly; lib0 refuses larger varints.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Reads lib0 values from a frame, front to back.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Bytes,
    pos: usize,
}

impl Decoder {
    /// A decoder positioned at the start of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest of the input (zero-copy), without consuming it.
    pub fn rest(&self) -> Bytes {
        self.buf.slice(self.pos..)
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::UnexpectedEnd)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an unsigned varint.
    pub fn read_var_uint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10u32 {
            let b = self.read_u8()?;
            let bits = u64::from(b & 0x7f);
            let shift = 7 * i;
            // The tenth byte may only carry the single remaining bit of a u64.
            if i == 9 && bits > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// Reads a length-prefixed byte array as a zero-copy slice.
    pub fn read_var_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.read_var_uint()?;
        let remaining = self.remaining();
        let n = usize::try_from(len)
            .ok()
            .filter(|n| *n <= remaining)
            .ok_or(DecodeError::LengthOutOfRange { len, remaining })?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Reads a length-prefixed UTF-8 string, returned as the validated bytes (zero-copy).
    pub fn read_var_string(&mut self) -> Result<Bytes, DecodeError> {
        let bytes = self.read_var_bytes()?;
        std::str::from_utf8(&bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(bytes)
    }
}

/// Appends an unsigned varint.
pub fn write_var_uint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Appends a length-prefixed byte array.
pub fn write_var_bytes(out: &mut BytesMut, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

/// Appends a length-prefixed UTF-8 string.
pub fn write_var_string(out: &mut BytesMut, s: &str) {
    write_var_bytes(out, s.as_bytes());
}

/// Encoded size of a varint, for sizing buffers exactly.
pub fn var_uint_len(value: u64) -> usize {
    let bits = 64 - value.max(1).leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(v: u64) -> u64 {
        let mut out = BytesMut::new();
        write_var_uint(&mut out, v);
        assert_eq!(out.len(), var_uint_len(v));
        let mut d = Decoder::new(out.freeze());
        let got = d.read_var_uint().expect("decodes");
        assert!(d.is_empty());
        got
    }

    #[test]
    fn known_varints_match_lib0() {
        // Values and encodings taken from lib0's encoding.js behaviour.
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u64::from(u32::MAX), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, enc) in cases {
            let mut out = BytesMut::new();
            write_var_uint(&mut out, *v);
            assert_eq!(&out[..], *enc, "encoding {v}");
            assert_eq!(roundtrip(*v), *v);
        }
        assert_eq!(roundtrip(u64::MAX), u64::MAX);
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        let mut d = Decoder::new(Bytes::from_static(&[0x80, 0x80]));
        assert_eq!(d.read_var_uint(), Err(DecodeError::UnexpectedEnd));
        let mut d = Decoder::new(Bytes::from_static(&[0xff; 11]));
        assert_eq!(d.read_var_uint(), Err(DecodeError::VarintOverflow));
        let mut d = Decoder::new(Bytes::from_static(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ]));
        assert_eq!(d.read_var_uint(), Err(DecodeError::VarintOverflow));
    }

    #[test]
    fn byte_array_longer_than_input_is_an_error() {
        let mut d = Decoder::new(Bytes::from_static(&[5, 1, 2]));
        assert_eq!(
            d.read_var_bytes(),
            Err(DecodeError::LengthOutOfRange {
                len: 5,
                remaining: 2
            })
        );
    }

    #[test]
    fn invalid_utf8_string_is_an_error() {
        let mut d = Decoder::new(Bytes::from_static(&[2, 0xff, 0xfe]));
        assert_eq!(d.read_var_string(), Err(DecodeError::InvalidUtf8));
    }

    proptest! {
        #[test]
        fn varint_roundtrips(v in any::<u64>()) {
            prop_assert_eq!(roundtrip(v), v);
        }

        #[test]
        fn bytes_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = BytesMut::new();
            write_var_bytes(&mut out, &data);
            let mut d = Decoder::new(out.freeze());
            prop_assert_eq!(&d.read_var_bytes().expect("decodes")[..], &data[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Decoder::new(Bytes::from(data));
            let _ = d.read_var_uint();
            let _ = d.read_var_bytes();
            let _ = d.read_var_string();
        }
    }
}
