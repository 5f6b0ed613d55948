#![no_main]
//! See `rrstore::fuzzing::client_frames` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrstore::fuzzing::client_frames(data));
