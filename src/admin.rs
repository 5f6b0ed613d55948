//! The admin commands' logic, shared by the CLI, the demo and the tests:
//! the member table, `verify` (compare every active worker's digest) and
//! `dump` (one worker's records, ascending by id).

use crate::auth::Secret;
use crate::client::{self, hex, ClientError};
use crate::msg::{Member, Status};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One line of `verify`.
#[derive(Debug, Clone)]
pub struct VerifyRow {
    pub member: Member,
    /// Records and digest, or why the worker could not be asked.
    pub result: Result<(u64, [u8; 16]), String>,
}

#[derive(Debug, Clone)]
pub struct Verification {
    pub rows: Vec<VerifyRow>,
    /// Every active worker answered with the same digest (and there is one).
    pub identical: bool,
}

impl Verification {
    /// `worker ID ADDR STATUS records=N digest=HEX` lines, then the verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for r in &self.rows {
            let m = &r.member;
            match &r.result {
                Ok((records, digest)) => {
                    let _ = writeln!(
                        s,
                        "worker {} {} {} records={} digest={}",
                        m.id,
                        m.addr,
                        m.status.name(),
                        records,
                        hex(digest)
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "worker {} {} {} unreachable: {e}",
                        m.id,
                        m.addr,
                        m.status.name()
                    );
                }
            }
        }
        s.push_str(if self.identical {
            "identical\n"
        } else {
            "DIVERGED\n"
        });
        s
    }
}

/// Asks the LB for its members, then every worker that is not inactive for
/// its digest. Only active workers are compared.
/// `secret`: the cluster secret (`None` for a cluster run with `--insecure`).
pub fn verify(control: &str, secret: Option<&Secret>) -> Result<Verification, ClientError> {
    let members = client::members(control, secret)?;
    let mut rows = Vec::new();
    for m in members {
        if m.status == Status::Inactive {
            continue;
        }
        let result = client::digest(&m.addr, secret)
            .map(|d| (d.records, d.digest))
            .map_err(|e| e.to_string());
        rows.push(VerifyRow { member: m, result });
    }
    let active: Vec<&VerifyRow> = rows
        .iter()
        .filter(|r| r.member.status == Status::Active)
        .collect();
    let identical = !active.is_empty()
        && active.iter().all(|r| match (&r.result, &active[0].result) {
            (Ok((_, a)), Ok((_, b))) => a == b,
            _ => false,
        });
    Ok(Verification { rows, identical })
}

/// Retries [`verify`] until identical or `wait` has passed.
pub fn verify_wait(
    control: &str,
    secret: Option<&Secret>,
    wait: Duration,
) -> Result<Verification, ClientError> {
    let deadline = Instant::now() + wait;
    loop {
        let v = verify(control, secret);
        let done = matches!(&v, Ok(v) if v.identical) || Instant::now() >= deadline;
        if done {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Streams worker `id`'s records as `ID<TAB>HEX` lines into `out`.
pub fn dump(
    control: &str,
    secret: Option<&Secret>,
    id: u32,
    mut out: impl FnMut(u64, &[u8]),
) -> Result<u64, ClientError> {
    let members = client::members(control, secret)?;
    let m = members
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ClientError::Protocol(format!("the LB knows no worker {id}")))?;
    client::dump(&m.addr, secret, &mut out)
}

/// The `members` table.
pub fn render_members(members: &[Member]) -> String {
    let mut s = format!(
        "{:<6} {:<22} {:<9} {:>10}\n",
        "ID", "ADDRESS", "STATUS", "RECORDS"
    );
    for m in members {
        let _ = writeln!(
            s,
            "{:<6} {:<22} {:<9} {:>10}",
            m.id,
            m.addr,
            m.status.name(),
            m.records
        );
    }
    s
}
