//! The end-of-run checks, once writers have stopped and every fault is
//! healed: how long the cluster takes to converge (every live worker
//! active, then `verify` identical), and whether every acknowledged write
//! is on every active worker with its exact content.
//!
//! Each active worker's records are read with `dump` (as `rrstore dump`
//! does) and compared record by record: an acknowledged id missing or
//! different on any worker is *lost*; an id whose record differs between
//! workers is *divergent*; a record whose id no writer ever sent, or whose
//! content is not what its id implies, is *corrupt*. Writes that were sent
//! but never acknowledged may or may not be there; they are only counted.

use crate::cluster::Cluster;
use crate::faults::Nemesis;
use crate::records;
use rrstore::msg::Status;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// How the cluster settled after the last heal.
pub struct Convergence {
    /// From the heal to every live worker active.
    pub active_after: Option<Duration>,
    /// From the heal to `verify` saying identical (with all active).
    pub identical_after: Option<Duration>,
    /// The last `verify` table, or why it could not be had.
    pub last_verify: String,
}

/// Polls until every live worker is active and their digests agree, or
/// `timeout` passes.
/// The nemesis (injecting nothing) keeps watching for crashes meanwhile.
pub fn converge(
    cluster: &mut Cluster,
    nemesis: &mut Nemesis,
    healed_at: Instant,
    timeout: Duration,
) -> Result<Convergence, String> {
    let deadline = Instant::now() + timeout;
    let mut out = Convergence {
        active_after: None,
        identical_after: None,
        last_verify: String::new(),
    };
    loop {
        nemesis.step(cluster, false)?;
        if out.active_after.is_none() && cluster.all_active().unwrap_or(false) {
            out.active_after = Some(healed_at.elapsed());
        }
        if out.active_after.is_some() {
            match rrstore::admin::verify(&cluster.control, Some(&cluster.secret)) {
                Ok(v) => {
                    out.last_verify = v.render();
                    if v.identical && cluster.all_active().unwrap_or(false) {
                        out.identical_after = Some(healed_at.elapsed());
                        return Ok(out);
                    }
                }
                Err(e) => out.last_verify = format!("verify failed: {e}\n"),
            }
        } else {
            out.last_verify = match cluster.members() {
                Ok(m) => format!(
                    "not all active yet:\n{}",
                    rrstore::admin::render_members(&m)
                ),
                Err(e) => format!("members failed: {e}\n"),
            };
        }
        if Instant::now() >= deadline {
            return Ok(out);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One acknowledged write that some worker does not hold as written.
pub struct Lost {
    pub id: u64,
    /// The worker whose STORED acknowledged it.
    pub stored_by: u32,
    pub missing_on: Vec<u32>,
    pub wrong_on: Vec<u32>,
}

#[derive(Default)]
pub struct Check {
    /// (worker id, records) for each active worker dumped.
    pub workers: Vec<(u32, usize)>,
    pub lost: u64,
    pub lost_examples: Vec<Lost>,
    pub divergent: u64,
    pub divergent_examples: Vec<String>,
    pub corrupt: u64,
    pub corrupt_examples: Vec<String>,
    /// Sent, not acknowledged, yet on some worker.
    pub unacked_stored: u64,
    /// Workers that could not be dumped, or other reasons the check is void.
    pub problems: Vec<String>,
}

/// A 64-bit fingerprint of a record's content: dumps are compared by
/// fingerprint, so a check of millions of records stays small in memory.
fn fingerprint(content: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

/// One worker's dump: (id, fingerprint), ascending by id.
type Dump = Vec<(u64, u64)>;

/// Dumps every active worker and compares against what was acknowledged.
/// `acked` is (id, worker that stored it); `attempted[c]` is how many ids
/// writer `c` sent.
pub fn check(cluster: &Cluster, acked: &[(u64, u32)], attempted: &[u64]) -> Check {
    let mut out = Check::default();
    let members = match cluster.members() {
        Ok(m) => m,
        Err(e) => {
            out.problems.push(format!("members failed: {e}"));
            return out;
        }
    };
    let mut dumps: Vec<(u32, Dump)> = Vec::new();
    for m in members.iter().filter(|m| m.status == Status::Active) {
        let mut d: Dump = Vec::new();
        let mut ordered = true;
        let result = rrstore::client::dump(&m.addr, Some(&cluster.secret), |id, content| {
            ordered &= d.last().is_none_or(|&(last, _)| last < id);
            d.push((id, fingerprint(content)));
        });
        match result {
            Ok(_) if ordered => {
                out.workers.push((m.id, d.len()));
                dumps.push((m.id, d));
            }
            Ok(_) => out.problems.push(format!(
                "dump of worker {} is not in strictly ascending id order",
                m.id
            )),
            Err(e) => out
                .problems
                .push(format!("dump of worker {} failed: {e}", m.id)),
        }
    }
    if dumps.is_empty() {
        out.problems.push("no active worker to check".into());
        return out;
    }

    // Lost: acknowledged, but missing or different somewhere.
    let mut acked: Vec<(u64, u32)> = acked.to_vec();
    acked.sort_unstable();
    for &(id, stored_by) in &acked {
        let want = fingerprint(&records::content(id));
        let mut l = Lost {
            id,
            stored_by,
            missing_on: Vec::new(),
            wrong_on: Vec::new(),
        };
        for (wid, d) in &dumps {
            match d.binary_search_by_key(&id, |&(i, _)| i) {
                Err(_) => l.missing_on.push(*wid),
                Ok(i) if d[i].1 != want => l.wrong_on.push(*wid),
                Ok(_) => {}
            }
        }
        if !l.missing_on.is_empty() || !l.wrong_on.is_empty() {
            out.lost += 1;
            if out.lost_examples.len() < 20 {
                out.lost_examples.push(l);
            }
        }
    }

    // Divergent, corrupt, and stored-though-unacknowledged, over every id
    // any worker holds: a merge of the ascending dumps.
    let mut cursor = vec![0usize; dumps.len()];
    loop {
        let next = dumps
            .iter()
            .zip(&cursor)
            .filter_map(|((_, d), &c)| d.get(c).map(|&(id, _)| id))
            .min();
        let Some(id) = next else { break };
        let mut fps: Vec<Option<u64>> = Vec::with_capacity(dumps.len());
        for ((_, d), c) in dumps.iter().zip(cursor.iter_mut()) {
            match d.get(*c) {
                Some(&(i, fp)) if i == id => {
                    fps.push(Some(fp));
                    *c += 1;
                }
                _ => fps.push(None),
            }
        }
        if fps.iter().any(|f| *f != fps[0]) {
            out.divergent += 1;
            if out.divergent_examples.len() < 10 {
                let holders: Vec<String> = dumps
                    .iter()
                    .zip(&fps)
                    .map(|((w, _), f)| match f {
                        None => format!("worker {w}: missing"),
                        Some(f) => format!("worker {w}: {f:016x}"),
                    })
                    .collect();
                out.divergent_examples
                    .push(format!("id {id:#x}: {}", holders.join(", ")));
            }
        }
        let sent =
            records::split(id).is_some_and(|(c, seq)| attempted.get(c).is_some_and(|&n| seq <= n));
        let want = fingerprint(&records::content(id));
        let bad = fps.iter().flatten().any(|f| *f != want);
        if !sent || bad {
            out.corrupt += 1;
            if out.corrupt_examples.len() < 10 {
                out.corrupt_examples.push(format!(
                    "id {id:#x}: {}",
                    if sent {
                        "content is not what was written"
                    } else {
                        "never sent by any writer"
                    }
                ));
            }
        } else if acked.binary_search_by_key(&id, |&(i, _)| i).is_err() {
            out.unacked_stored += 1;
        }
    }
    out
}
