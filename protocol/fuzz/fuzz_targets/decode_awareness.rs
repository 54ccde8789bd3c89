//! Awareness payloads: decode to entries or a typed error, never panic.
#![no_main]

use bytes::Bytes;
use chorus_protocol::awareness::{decode_update, encode_update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_update(Bytes::copy_from_slice(data)) {
        let again = decode_update(encode_update(&entries)).expect("re-encoded update decodes");
        assert_eq!(again, entries);
    }
});
