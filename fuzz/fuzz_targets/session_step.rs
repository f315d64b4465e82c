//! libFuzzer entry for the `session_step` invariants in `src/checks.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::session_step(data));
