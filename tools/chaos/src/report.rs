//! The run's summary: what the writers did, the faults injected, how the
//! cluster converged, what the check found, and the verdict; as text for
//! a person and as JSON (`--json PATH`, formatted by hand: flat numbers
//! and strings, no serde needed).

use crate::check::{Check, Convergence};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub struct Summary {
    pub seed: u64,
    /// Seconds the writers ran.
    pub write_secs: f64,
    pub workers_start: usize,
    pub workers_end: usize,
    pub attempted: u64,
    pub acked: u64,
    pub unanswered: u64,
    pub errors: BTreeMap<String, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub lb_starts: u32,
    /// Seconds from the start of the run to the last fault.
    pub last_fault_at: Option<f64>,
    /// Seconds from the last fault to the heal at the end of the run.
    pub healed_after_last_fault: Option<f64>,
    pub converge: Convergence,
    pub converge_timeout: f64,
    pub check: Check,
    pub crashes: Vec<String>,
    pub anomalies: Vec<String>,
    pub run_dir: String,
    /// The fault log: (seconds since the start, what happened).
    pub events: Vec<(f64, String)>,
}

fn secs(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

impl Summary {
    /// Seconds from the last fault to identical workers.
    pub fn since_last_fault(&self) -> Option<f64> {
        Some(self.healed_after_last_fault? + self.converge.identical_after?.as_secs_f64())
    }

    /// Why the run fails; empty means PASS.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let c = &self.check;
        if self.acked == 0 {
            f.push("no write was acknowledged".to_string());
        }
        if c.lost > 0 {
            f.push(format!("{} acknowledged writes lost", c.lost));
        }
        if c.divergent > 0 {
            f.push(format!("{} ids differ between workers", c.divergent));
        }
        if c.corrupt > 0 {
            f.push(format!("{} records never written as stored", c.corrupt));
        }
        if self.converge.identical_after.is_none() {
            f.push(format!(
                "not converged within {:.0} s of the heal",
                self.converge_timeout
            ));
        }
        if !self.crashes.is_empty() {
            f.push(format!(
                "{} processes crashed or misbehaved",
                self.crashes.len()
            ));
        }
        if !self.anomalies.is_empty() {
            f.push(format!("{} protocol anomalies", self.anomalies.len()));
        }
        f.extend(c.problems.iter().cloned());
        f
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let c = &self.check;
        let _ = writeln!(s, "== chaos summary (seed {})", self.seed);
        let _ = writeln!(
            s,
            "workers:      {} at start, {} at the end; LB started {} times",
            self.workers_start, self.workers_end, self.lb_starts
        );
        let _ = writeln!(
            s,
            "writes:       {} attempted in {:.1} s, {} acknowledged, {} unanswered",
            self.attempted, self.write_secs, self.acked, self.unanswered
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "errors:       {}", none_if_empty(&errors));
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "faults:       {}", none_if_empty(&faults));
        let cv = &self.converge;
        let _ = writeln!(
            s,
            "converge:     all active {} after the heal, identical {}; {} after the last fault (at {}, healed {} later)",
            fmt_secs(secs(cv.active_after)),
            fmt_secs(secs(cv.identical_after)),
            fmt_secs(self.since_last_fault()),
            fmt_secs(self.last_fault_at),
            fmt_secs(self.healed_after_last_fault),
        );
        let workers: Vec<String> = c.workers.iter().map(|(w, n)| format!("{w}:{n}")).collect();
        let _ = writeln!(
            s,
            "records:      {} (worker:records)",
            none_if_empty(&workers)
        );
        let _ = writeln!(s, "lost:         {}", c.lost);
        for l in &c.lost_examples {
            let _ = writeln!(
                s,
                "  id {:#x} (STORED by worker {}): missing on {:?}, wrong on {:?}",
                l.id, l.stored_by, l.missing_on, l.wrong_on
            );
        }
        let _ = writeln!(s, "divergent:    {}", c.divergent);
        for d in &c.divergent_examples {
            let _ = writeln!(s, "  {d}");
        }
        let _ = writeln!(s, "corrupt:      {}", c.corrupt);
        for d in &c.corrupt_examples {
            let _ = writeln!(s, "  {d}");
        }
        let _ = writeln!(s, "unacked but stored: {}", c.unacked_stored);
        for a in &self.anomalies {
            let _ = writeln!(s, "anomaly: {a}");
        }
        for cr in &self.crashes {
            let _ = writeln!(s, "crash: {cr}");
        }
        if cv.identical_after.is_none() {
            let _ = write!(s, "last verify:\n{}", cv.last_verify);
        }
        let _ = writeln!(s, "run dir:      {}", self.run_dir);
        let failures = self.failures();
        if failures.is_empty() {
            s.push_str("PASS\n");
        } else {
            let _ = writeln!(s, "FAIL: {}", failures.join("; "));
        }
        s
    }

    pub fn json(&self) -> String {
        let c = &self.check;
        let mut j = Json::default();
        j.num("seed", self.seed as f64);
        j.num("write_secs", self.write_secs);
        j.num("workers_start", self.workers_start as f64);
        j.num("workers_end", self.workers_end as f64);
        j.num("lb_starts", f64::from(self.lb_starts));
        j.num("attempted", self.attempted as f64);
        j.num("acknowledged", self.acked as f64);
        j.num("unanswered", self.unanswered as f64);
        j.map("errors", self.errors.iter().map(|(k, v)| (k.as_str(), *v)));
        j.map("faults", self.faults.iter().map(|(k, v)| (*k, *v)));
        j.opt("last_fault_at_secs", self.last_fault_at);
        j.opt("heal_after_last_fault_secs", self.healed_after_last_fault);
        j.opt(
            "all_active_after_heal_secs",
            secs(self.converge.active_after),
        );
        j.opt("converge_secs", secs(self.converge.identical_after));
        j.opt("converge_after_last_fault_secs", self.since_last_fault());
        j.num("lost", c.lost as f64);
        j.num("divergent", c.divergent as f64);
        j.num("corrupt", c.corrupt as f64);
        j.num("unacked_stored", c.unacked_stored as f64);
        j.num("crashes", self.crashes.len() as f64);
        j.num("anomalies", self.anomalies.len() as f64);
        let failures = self.failures();
        j.strs("failures", &failures);
        j.str("run_dir", &self.run_dir);
        j.events("events", &self.events);
        j.str("verdict", if failures.is_empty() { "PASS" } else { "FAIL" });
        j.finish()
    }
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(" ")
    }
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "never".into(), |s| format!("{s:.2} s"))
}

/// A one-level JSON object, one field per line.
#[derive(Default)]
struct Json {
    fields: Vec<String>,
}

impl Json {
    fn num(&mut self, k: &str, v: f64) {
        let v = if v.fract() == 0.0 && v.abs() < 9e15 {
            format!("{}", v as i64)
        } else if v.is_finite() {
            format!("{v:.3}")
        } else {
            "null".into()
        };
        self.fields.push(format!("{}: {v}", quote(k)));
    }

    fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.fields.push(format!("{}: null", quote(k))),
        }
    }

    fn str(&mut self, k: &str, v: &str) {
        self.fields.push(format!("{}: {}", quote(k), quote(v)));
    }

    fn strs(&mut self, k: &str, v: &[String]) {
        let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
        self.fields
            .push(format!("{}: [{}]", quote(k), items.join(", ")));
    }

    fn map<'a>(&mut self, k: &str, v: impl Iterator<Item = (&'a str, u64)>) {
        let items: Vec<String> = v.map(|(k, n)| format!("{}: {n}", quote(k))).collect();
        self.fields
            .push(format!("{}: {{{}}}", quote(k), items.join(", ")));
    }

    fn events(&mut self, k: &str, v: &[(f64, String)]) {
        let items: Vec<String> = v
            .iter()
            .map(|(at, what)| format!("{{\"at\": {at:.3}, \"what\": {}}}", quote(what)))
            .collect();
        self.fields.push(format!(
            "{}: [\n    {}\n  ]",
            quote(k),
            items.join(",\n    ")
        ));
    }

    fn finish(self) -> String {
        format!("{{\n  {}\n}}\n", self.fields.join(",\n  "))
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn json_fields() {
        let mut j = Json::default();
        j.num("n", 3.0);
        j.num("x", 1.5);
        j.opt("none", None);
        j.map("m", [("a", 1u64)].into_iter());
        j.strs("l", &["q".to_string()]);
        assert_eq!(
            j.finish(),
            "{\n  \"n\": 3,\n  \"x\": 1.500,\n  \"none\": null,\n  \"m\": {\"a\": 1},\n  \"l\": [\"q\"]\n}\n"
        );
    }
}
