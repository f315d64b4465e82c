//! The fuzz targets' invariants as a library, so the libFuzzer binaries and the stable corpus
//! replay (`gateway/tests/fuzz_corpus.rs`) check exactly the same things.

pub mod checks;
