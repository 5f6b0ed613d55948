//! loadgen: an open-loop load generator for rrstore (client protocol v1) and
//! Redis (RESP), measuring latency into HdrHistograms with the
//! coordinated-omission correction.
//!
//! # Layout
//! - [`schedule`]: the constant-rate schedule and each connection's cursor
//!   into it (pure, no clock, no I/O).
//! - [`workload`]: which op and id each request gets, and the content derived
//!   from the id.
//! - [`proto`]: the two protocols' request encoders and response parsers
//!   (pure functions over bytes; rrstore reuses `rrstore::wire`).
//! - [`buf`]: reusable read and write buffers.
//! - [`timer`]: a timerfd that wakes the event loop at a precise instant.
//! - [`engine`]: one mio event loop driving a set of connections.
//! - [`run`]: threads, the live line, merging results, verification.
//! - [`report`]: the statistics, the final table, JSON and `.hgrm` output.
//! - [`verify`]: checking acknowledged records against every worker's dump.
//! - [`plot`]: percentile spectra of several runs as one SVG chart.
//! - [`null`]: a server that answers every request at once, to measure the
//!   generator itself.

pub mod buf;
pub mod engine;
pub mod null;
pub mod plot;
pub mod proto;
pub mod report;
pub mod run;
pub mod schedule;
pub mod timer;
pub mod verify;
pub mod workload;
