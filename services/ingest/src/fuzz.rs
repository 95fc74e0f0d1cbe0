//! The fuzz targets of ingest's own parsers: PostgreSQL's pgoutput messages and the rows of CSV
//! and NDJSON files. Each is a [`Harness`]: the tests run it under the mutation fuzzer, and
//! `crates/fuzz-afl` under AFL++ (built with the `fuzzing` feature); docs/security.md#fuzzing.

use tributary_fuzz::Harness;

/// Every target of this crate.
pub fn harnesses() -> Vec<Harness> {
    vec![
        crate::postgres::pgoutput::fuzz_target(),
        crate::files::fuzz_target(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_file_rows() {
        crate::files::fuzz_target().fuzz();
    }
}
