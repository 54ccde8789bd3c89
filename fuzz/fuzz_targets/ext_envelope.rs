//! Fuzz target `ext_envelope`: the body is `chorus_hub::fuzzing::ext_envelope`, shared with the replay test of
//! the committed inputs (`cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chorus_hub::fuzzing::panic_hook(),
    |data: &[u8]| chorus_hub::fuzzing::ext_envelope(data)
);
