//! libFuzzer entry for the `http_head` invariants in `src/checks.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::http_head(data));
