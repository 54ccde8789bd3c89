//! Fuzz target `hocuspocus_frame`: the body is `chorus_hub::fuzzing::hocuspocus_frame`, shared with the replay test of
//! the committed inputs (`cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chorus_hub::fuzzing::panic_hook(),
    |data: &[u8]| chorus_hub::fuzzing::hocuspocus_frame(data)
);
