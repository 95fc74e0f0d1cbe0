//! The fuzz targets of `tributary-core` and `tributary-ingest` under AFL++, the coverage-guided
//! fuzzer, through cargo-afl on the stable toolchain. The binary (feature `afl`, built by
//! `cargo afl build`) runs one target per process; `integration-tests/fuzz-afl.sh` builds it,
//! writes each target's seeds and dictionary, runs AFL++ for a set time and reports.
