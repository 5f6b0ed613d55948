#![no_main]
//! See `rrstore::fuzzing::log_recovery` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrstore::fuzzing::log_recovery(data));
