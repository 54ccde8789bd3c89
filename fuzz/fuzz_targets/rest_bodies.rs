//! Fuzz target `rest_bodies`: the body is `chorus_hub::fuzzing::rest_bodies`, shared with the replay test of
//! the committed inputs (`cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chorus_hub::fuzzing::panic_hook(),
    |data: &[u8]| chorus_hub::fuzzing::rest_bodies(data)
);
