//! Any byte string must decode to messages or a typed error, never panic; whatever decodes must
//! re-encode to bytes that decode to the same messages.
#![no_main]

use bytes::{Bytes, BytesMut};
use chorus_protocol::sync::decode_all;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = decode_all(Bytes::copy_from_slice(data)) {
        let mut out = BytesMut::new();
        for m in &msgs {
            m.encode_into(&mut out);
        }
        let again = decode_all(out.freeze()).expect("re-encoded frame decodes");
        assert_eq!(again, msgs);
    }
});
