//! `--verify`: every PUT used a fresh id and every STORED id was kept; at
//! the end each active worker's dump must hold every one of them with the
//! content derived from its id ([`crate::workload::fill_content`]).
//!
//! Replication is asynchronous (STORED means one worker has it and has
//! queued it to its peers), so the check is repeated until it passes or a
//! deadline expires; only what is still missing then counts as lost.

use crate::workload::content_matches;
use rrstore::auth::Secret;
use rrstore::client;
use rrstore::msg::Status;
use std::time::{Duration, Instant};

/// One worker's dump compared with the acknowledged ids.
pub struct WorkerCheck<'a> {
    acked: &'a [u64],
    value_size: usize,
    /// Per acknowledged id: present with the right content.
    good: Vec<bool>,
    /// Present with other content.
    pub mismatched: u64,
}

impl<'a> WorkerCheck<'a> {
    /// `acked` must be sorted and free of duplicates.
    pub fn new(acked: &'a [u64], value_size: usize) -> WorkerCheck<'a> {
        WorkerCheck {
            acked,
            value_size,
            good: vec![false; acked.len()],
            mismatched: 0,
        }
    }

    /// One record of the dump (any order; ids not acknowledged are ignored).
    pub fn entry(&mut self, id: u64, content: &[u8]) {
        if let Ok(i) = self.acked.binary_search(&id) {
            if content_matches(id, self.value_size, content) {
                self.good[i] = true;
            } else {
                self.mismatched += 1;
            }
        }
    }

    /// Marks in `lost` every acknowledged id this worker lacks or holds
    /// wrongly; returns how many those are.
    pub fn finish(self, lost: &mut [bool]) -> u64 {
        let mut n = 0;
        for (l, g) in lost.iter_mut().zip(&self.good) {
            if !g {
                *l = true;
                n += 1;
            }
        }
        n
    }
}

/// What one worker held at the last check.
#[derive(Debug, Clone)]
pub struct WorkerResult {
    pub id: u32,
    pub addr: String,
    /// Acknowledged ids missing or wrong here, or why it could not be dumped.
    pub result: Result<(u64, u64), String>,
}

#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub acknowledged: u64,
    /// Acknowledged ids missing, or with other content, on any active worker.
    pub lost: u64,
    pub workers: Vec<WorkerResult>,
}

impl VerifyOutcome {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "verified: {} acknowledged, {} lost",
            self.acknowledged, self.lost
        );
        for w in &self.workers {
            match &w.result {
                Ok((0, 0)) => {}
                Ok((bad, mismatched)) => s.push_str(&format!(
                    "\n  worker {} {}: {bad} missing or wrong ({mismatched} with other content)",
                    w.id, w.addr
                )),
                Err(e) => s.push_str(&format!("\n  worker {} {}: {e}", w.id, w.addr)),
            }
        }
        s
    }
}

/// One pass over the active workers.
fn check_once(
    control: &str,
    secret: Option<&Secret>,
    acked: &[u64],
    value_size: usize,
) -> Result<(u64, Vec<WorkerResult>), String> {
    let members =
        client::members(control, secret).map_err(|e| format!("members from {control}: {e}"))?;
    let active: Vec<_> = members
        .into_iter()
        .filter(|m| m.status == Status::Active)
        .collect();
    if active.is_empty() {
        return Err(format!("the LB at {control} has no active worker"));
    }
    let mut lost = vec![false; acked.len()];
    let mut workers = Vec::new();
    for m in active {
        let mut check = WorkerCheck::new(acked, value_size);
        let result = match client::dump(&m.addr, secret, |id, content| check.entry(id, content)) {
            Ok(_) => {
                let mismatched = check.mismatched;
                Ok((check.finish(&mut lost), mismatched))
            }
            Err(e) => {
                lost.iter_mut().for_each(|l| *l = true);
                Err(format!("dump failed: {e}"))
            }
        };
        workers.push(WorkerResult {
            id: m.id,
            addr: m.addr,
            result,
        });
    }
    Ok((lost.iter().filter(|&&l| l).count() as u64, workers))
}

/// Checks `acked` (any order) on every active worker, retrying until none
/// is lost or `wait` has passed. `secret`: the cluster's (`None` for one
/// run with `--insecure`).
pub fn verify(
    control: &str,
    secret: Option<&Secret>,
    mut acked: Vec<u64>,
    value_size: usize,
    wait: Duration,
) -> Result<VerifyOutcome, String> {
    acked.sort_unstable();
    acked.dedup();
    let deadline = Instant::now() + wait;
    loop {
        let pass = check_once(control, secret, &acked, value_size);
        let done = matches!(&pass, Ok((0, _))) || Instant::now() >= deadline;
        if done {
            let (lost, workers) = pass?;
            return Ok(VerifyOutcome {
                acknowledged: acked.len() as u64,
                lost,
                workers,
            });
        }
        // Polling a remote state with a deadline: replication catching up.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fill_content;

    fn content(id: u64) -> Vec<u8> {
        let mut v = vec![0; 16];
        fill_content(id, &mut v);
        v
    }

    #[test]
    fn missing_and_wrong_records_are_lost_on_any_worker() {
        let acked = [3u64, 5, 8, 13];
        let mut lost = vec![false; acked.len()];

        // Worker A: everything, plus ids nobody acknowledged.
        let mut a = WorkerCheck::new(&acked, 16);
        for id in [1u64, 3, 5, 8, 9, 13] {
            a.entry(id, &content(id));
        }
        assert_eq!(a.finish(&mut lost), 0);

        // Worker B: lacks 5, holds 13 with 8's content.
        let mut b = WorkerCheck::new(&acked, 16);
        for (id, c) in [(3u64, content(3)), (8, content(8)), (13, content(8))] {
            b.entry(id, &c);
        }
        assert_eq!(b.mismatched, 1);
        assert_eq!(b.finish(&mut lost), 2);
        assert_eq!(lost, [false, true, false, true]);
    }

    #[test]
    fn summary_line() {
        let v = VerifyOutcome {
            acknowledged: 10,
            lost: 0,
            workers: vec![],
        };
        assert_eq!(v.summary(), "verified: 10 acknowledged, 0 lost");
    }
}
