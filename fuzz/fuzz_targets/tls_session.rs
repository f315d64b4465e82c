//! libFuzzer entry for the `tls_session` invariants in `src/checks.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::tls_session(data));
