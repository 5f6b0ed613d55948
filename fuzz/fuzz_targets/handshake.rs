#![no_main]
//! See `rrstore::fuzzing::handshake` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrstore::fuzzing::handshake(data));
