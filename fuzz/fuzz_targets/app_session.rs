//! libFuzzer entry for the `app_session` invariants in `src/checks.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::app_session(data));
