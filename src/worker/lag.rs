//! Replication lag in seconds: how long ago we wrote the oldest of our own
//! records that a peer has not acknowledged yet.
//!
//! The replica counts lag in records (our sequence minus the peer's
//! cumulative ack) and keeps no clock. This keeps a timeline beside it:
//! samples `(seq, when)` meaning "by `when`, our own sequence had reached
//! `seq`", taken at most every [`SAMPLE_EVERY`] at the end of a loop turn.
//! For a peer that has acknowledged up to `acked`, the record `acked + 1`
//! was written no later than the first sample with `seq > acked`, so the
//! lag is at least `now` minus that sample's time (and at most
//! [`SAMPLE_EVERY`] more).
//!
//! Invariants: samples are in increasing `seq` and time order; there are
//! at most [`MAX_SAMPLES`]. When full, every other sample is dropped: the
//! timeline keeps its whole span at half the resolution, so a long lag is
//! never under-reported by more than the spacing between samples.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The finest spacing between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The most samples kept (about 40 s at the finest spacing).
pub const MAX_SAMPLES: usize = 4096;

#[derive(Debug, Default)]
pub struct LagClock {
    samples: VecDeque<(u64, Instant)>,
}

impl LagClock {
    /// Our own sequence is `seq` at `now` (called once per loop turn).
    pub fn note(&mut self, seq: u64, now: Instant) {
        match self.samples.back() {
            Some(&(last, _)) if seq <= last => return,
            Some(&(_, at)) if now.duration_since(at) < SAMPLE_EVERY => return,
            _ => {}
        }
        if self.samples.len() == MAX_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
        self.samples.push_back((seq, now));
    }

    /// How long a peer that acknowledged our records up to `acked` has
    /// been behind; zero when it holds everything sampled so far.
    pub fn lag(&self, acked: u64, now: Instant) -> Duration {
        let first_unacked = self.samples.partition_point(|&(seq, _)| seq <= acked);
        match self.samples.get(first_unacked) {
            Some(&(_, at)) => now.saturating_duration_since(at),
            None => Duration::ZERO,
        }
    }

    /// Forgets samples every peer has acknowledged, keeping the newest
    /// of them (`min_acked`: the least ack over our peers).
    pub fn trim(&mut self, min_acked: u64) {
        while self.samples.len() > 1 && self.samples[1].0 <= min_acked {
            self.samples.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn lag_is_the_age_of_the_first_unacknowledged_sample() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        c.note(10, t0);
        c.note(20, t0 + ms(100));
        c.note(30, t0 + ms(200));
        let now = t0 + ms(1000);
        assert_eq!(c.lag(30, now), Duration::ZERO, "holds everything");
        assert_eq!(c.lag(25, now), ms(800), "misses 26..=30, sampled at 200 ms");
        assert_eq!(c.lag(20, now), ms(800));
        assert_eq!(c.lag(19, now), ms(900));
        assert_eq!(c.lag(0, now), ms(1000));
    }

    #[test]
    fn samples_are_spaced_and_only_taken_on_progress() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        c.note(1, t0);
        c.note(2, t0 + ms(5)); // too soon
        c.note(2, t0 + ms(20));
        c.note(2, t0 + ms(40)); // no progress
        assert_eq!(c.len(), 2);
        assert_eq!(c.lag(1, t0 + ms(40)), ms(20));
    }

    #[test]
    fn trim_keeps_what_a_peer_still_lacks() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        for i in 0..10 {
            c.note(i * 10 + 10, t0 + ms(i * 10));
        }
        c.trim(55);
        assert_eq!(c.len(), 6, "keeps 50 (the newest acked) and 60..=100");
        assert_eq!(c.lag(55, t0 + ms(100)), ms(50));
        c.trim(1000);
        assert_eq!(c.len(), 1);
        assert_eq!(c.lag(100, t0 + ms(100)), Duration::ZERO);
    }

    #[test]
    fn a_full_timeline_halves_its_resolution_and_keeps_its_span() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        let n = MAX_SAMPLES as u64 + 1;
        for i in 0..n {
            c.note(i + 1, t0 + ms(i * 10));
        }
        assert!(c.len() <= MAX_SAMPLES / 2 + 1, "{}", c.len());
        let now = t0 + ms(n * 10);
        // The oldest lag is under-reported by at most one (doubled) spacing.
        let lag = c.lag(0, now);
        assert!(lag <= ms(n * 10) && lag >= ms(n * 10 - 20), "{lag:?}");
    }
}
