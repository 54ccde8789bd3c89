//! Fuzz target `sync_frame`: the body is `chorus_hub::fuzzing::sync_frame`, shared with the replay test of the
//! committed inputs (`cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // The room catches yrs' panics and restarts from its log (libFuzzer's own hook would
        // abort on them); a panic nothing catches still ends the run as a crash.
        // yrs' own panics are expected here and quiet (FUZZ_VERBOSE=1 shows them).
        let verbose = std::env::var_os("FUZZ_VERBOSE").is_some();
        std::panic::set_hook(Box::new(move |info| {
            let in_yrs = info.location().is_some_and(|l| l.file().contains("/yrs-"));
            if verbose || !in_yrs {
                eprintln!("panic: {info}");
            }
        }));
    },
    |data: &[u8]| chorus_hub::fuzzing::sync_frame(data)
);
