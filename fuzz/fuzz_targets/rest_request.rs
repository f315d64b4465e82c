//! libFuzzer entry for the `rest_request` invariants in `src/checks.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::rest_request(data));
