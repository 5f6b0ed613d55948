//! When each request is meant to be sent.
//!
//! Open loop (`--rate R > 0`): request `i` of the whole run (counting every
//! connection of every thread) is *intended* at `start + i/R`. Requests are
//! dealt round robin over the `C` connections, so connection `c` owns
//! requests `c, c + C, c + 2C, …`, i.e. its `k`-th request is global request
//! `k·C + c`. A connection sends its next request once it is due and it has
//! fewer than `P` in flight; one that is due but blocked stays the next
//! request, keeping its intended time, so the wait shows up in its latency
//! (the coordinated-omission correction, as in wrk2).
//!
//! Closed loop (`--rate 0`): a connection sends whenever it has a free slot,
//! and the intended time is the actual send time.
//!
//! With a limit (`--fill`), only global requests `0..limit` exist: a
//! connection stops once its next index reaches it.
//!
//! Times are nanoseconds since the start of the run; nothing here reads a
//! clock, so the schedule is tested with made-up times.

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Constant rate over the whole run, in requests per second.
    Open { rate: f64 },
    /// As fast as responses come back.
    Closed,
}

/// The global open-loop schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    conns: u64,
}

impl Schedule {
    /// `rate` requests per second over `conns` connections (both > 0).
    pub fn new(rate: f64, conns: u64) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        assert!(conns > 0, "at least one connection");
        Schedule { rate, conns }
    }

    /// Intended send time of global request `i`: `i/R` seconds after the
    /// start, in nanoseconds (rounded to the nearest one).
    pub fn intended_ns(&self, i: u64) -> u64 {
        (i as f64 * 1e9 / self.rate).round() as u64
    }

    /// The global index of connection `conn`'s `k`-th request.
    pub fn global_index(&self, conn: u64, k: u64) -> u64 {
        k * self.conns + conn
    }

    /// The connection that owns global request `i`.
    pub fn conn_of(&self, i: u64) -> u64 {
        i % self.conns
    }
}

/// A request that may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Global request index (unique over the run; fresh ids derive from it).
    pub index: u64,
    /// Intended send time, ns since the start.
    pub intended_ns: u64,
}

/// One connection's position in the schedule and its in-flight count.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// `None` in closed loop.
    sched: Option<Schedule>,
    conns: u64,
    conn: u64,
    /// Requests this connection has sent so far.
    k: u64,
    inflight: u32,
    pipeline: u32,
    /// No request is intended (open) or sent (closed) at or after this time.
    end_ns: u64,
    /// Global requests `limit..` do not exist.
    limit: u64,
}

impl Pacer {
    /// Connection `conn` of `conns`, at most `pipeline` requests in flight.
    pub fn new(mode: Mode, conns: u64, conn: u64, pipeline: u32, end_ns: u64) -> Pacer {
        assert!(conn < conns && pipeline > 0);
        let sched = match mode {
            Mode::Open { rate } => Some(Schedule::new(rate, conns)),
            Mode::Closed => None,
        };
        Pacer {
            sched,
            conns,
            conn,
            k: 0,
            inflight: 0,
            pipeline,
            end_ns,
            limit: u64::MAX,
        }
    }

    /// Only global requests `0..limit` exist (`--fill`).
    pub fn with_limit(mut self, limit: u64) -> Pacer {
        self.limit = limit;
        self
    }

    /// This connection's requests are all sent (the limit is reached).
    fn at_limit(&self) -> bool {
        self.index() >= self.limit
    }

    fn index(&self) -> u64 {
        self.k * self.conns + self.conn
    }

    /// Intended time of this connection's next request (open loop only).
    fn next_intended(&self) -> Option<u64> {
        self.sched.map(|s| s.intended_ns(self.index()))
    }

    /// The next request if it may be sent at `now_ns`: due, before the end,
    /// and a slot free.
    pub fn due(&self, now_ns: u64) -> Option<Due> {
        if self.inflight >= self.pipeline || self.at_limit() {
            return None;
        }
        let intended_ns = match self.next_intended() {
            Some(t) if t < self.end_ns && t <= now_ns => t,
            Some(_) => return None,
            None if now_ns < self.end_ns => now_ns,
            None => return None,
        };
        Some(Due {
            index: self.index(),
            intended_ns,
        })
    }

    /// The request returned by [`Pacer::due`] went out.
    pub fn sent(&mut self) {
        self.k += 1;
        self.inflight += 1;
    }

    /// A request in flight was answered (or lost with its connection).
    pub fn completed(&mut self) {
        debug_assert!(self.inflight > 0);
        self.inflight = self.inflight.saturating_sub(1);
    }

    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// When this connection next needs the loop to wake: its next intended
    /// time, if a slot is free and it is before the end (open loop only; a
    /// closed loop is woken by responses).
    pub fn next_wake(&self) -> Option<u64> {
        if self.inflight >= self.pipeline || self.at_limit() {
            return None;
        }
        self.next_intended().filter(|&t| t < self.end_ns)
    }

    /// No request is left to send: the schedule is past the end (or the
    /// limit).
    pub fn exhausted(&self, now_ns: u64) -> bool {
        if self.at_limit() {
            return true;
        }
        match self.next_intended() {
            Some(t) => t >= self.end_ns,
            None => now_ns >= self.end_ns,
        }
    }

    /// Open loop: how many of this connection's requests intended in
    /// `[from_ns, end)` were never sent (they were due but blocked when the
    /// run stopped). Zero in closed loop.
    pub fn unsent_since(&self, from_ns: u64) -> u64 {
        let Some(s) = self.sched else {
            return 0;
        };
        let mut k = self.k;
        let mut n = 0;
        loop {
            let i = s.global_index(self.conn, k);
            let t = s.intended_ns(i);
            if t >= self.end_ns || i >= self.limit {
                return n;
            }
            if t >= from_ns {
                n += 1;
            }
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_start_plus_i_over_r() {
        let s = Schedule::new(1000.0, 4);
        for i in 0..10_000u64 {
            assert_eq!(s.intended_ns(i), i * 1_000_000);
        }
        let s = Schedule::new(3.0, 1);
        assert_eq!(s.intended_ns(1), 333_333_333);
        assert_eq!(s.intended_ns(2), 666_666_667);
        assert_eq!(s.intended_ns(3), 1_000_000_000);
        // Fractional rates: one request every 2 s.
        assert_eq!(Schedule::new(0.5, 1).intended_ns(7), 14_000_000_000);
    }

    #[test]
    fn requests_are_dealt_round_robin_over_connections() {
        let conns = 3;
        let rate = 300.0;
        let mut pacers: Vec<Pacer> = (0..conns)
            .map(|c| Pacer::new(Mode::Open { rate }, conns, c, 1, u64::MAX))
            .collect();
        // Walk time forward one request period at a time, answering at once:
        // every request i goes out on connection i % 3, exactly at i/R.
        let s = Schedule::new(rate, conns);
        for i in 0..300u64 {
            let now = s.intended_ns(i);
            let mut sent = Vec::new();
            for p in pacers.iter_mut() {
                while let Some(d) = p.due(now) {
                    sent.push(d);
                    p.sent();
                    p.completed();
                }
            }
            assert_eq!(
                sent,
                vec![Due {
                    index: i,
                    intended_ns: now
                }]
            );
            assert_eq!(s.conn_of(i), i % conns);
        }
    }

    #[test]
    fn nothing_is_sent_before_it_is_due() {
        let mut p = Pacer::new(Mode::Open { rate: 100.0 }, 2, 1, 8, u64::MAX);
        // Connection 1's first request is global request 1, at 10 ms.
        assert_eq!(p.due(9_999_999), None);
        assert_eq!(p.next_wake(), Some(10_000_000));
        let d = p.due(10_000_000).unwrap();
        assert_eq!((d.index, d.intended_ns), (1, 10_000_000));
        p.sent();
        // Its next one is global request 3, at 30 ms.
        assert_eq!(p.next_wake(), Some(30_000_000));
        assert_eq!(p.due(29_000_000), None);
    }

    #[test]
    fn a_blocked_request_keeps_its_intended_time() {
        // One connection, pipeline 1, 1000/s: a request every ms.
        let mut p = Pacer::new(Mode::Open { rate: 1000.0 }, 1, 0, 1, u64::MAX);
        let d0 = p.due(0).unwrap();
        p.sent();
        // The server stalls for 50 ms: requests 1.. are due but blocked.
        assert_eq!(p.due(25_000_000), None);
        assert_eq!(p.next_wake(), None, "blocked: only a response wakes it");
        p.completed();
        // At 50 ms the slot frees; request 1 goes out with its own time, 1 ms,
        // so its latency counts the 49 ms it waited.
        let d1 = p.due(50_000_000).unwrap();
        assert_eq!((d0.index, d1.index), (0, 1));
        assert_eq!(d1.intended_ns, 1_000_000);
        p.sent();
        p.completed();
        // The backlog drains in order, each keeping its slot in the schedule.
        let d2 = p.due(50_000_100).unwrap();
        assert_eq!((d2.index, d2.intended_ns), (2, 2_000_000));
    }

    #[test]
    fn pipeline_limits_in_flight() {
        let mut p = Pacer::new(Mode::Open { rate: 1e6 }, 1, 0, 4, u64::MAX);
        let mut n = 0;
        while p.due(1_000_000_000).is_some() {
            p.sent();
            n += 1;
        }
        assert_eq!((n, p.inflight()), (4, 4));
        p.completed();
        assert_eq!(p.due(1_000_000_000).map(|d| d.index), Some(4));
    }

    #[test]
    fn the_schedule_ends() {
        // 10/s, end at 1 s: requests 0..9 exist, request 10 (at 1 s) does not.
        let mut p = Pacer::new(Mode::Open { rate: 10.0 }, 1, 0, 100, 1_000_000_000);
        let mut n = 0;
        while let Some(d) = p.due(5_000_000_000) {
            assert!(d.intended_ns < 1_000_000_000);
            p.sent();
            n += 1;
        }
        assert_eq!(n, 10);
        assert!(p.exhausted(0));
        assert_eq!(p.next_wake(), None);

        let p = Pacer::new(Mode::Open { rate: 10.0 }, 1, 0, 1, 1_000_000_000);
        assert_eq!(p.unsent_since(500_000_000), 5);
        assert_eq!(p.unsent_since(0), 10);
    }

    #[test]
    fn a_limit_ends_the_schedule_early() {
        // 3 connections, requests 0..7 only: connection 1 owns 1 and 4.
        let mut p = Pacer::new(Mode::Closed, 3, 1, 4, u64::MAX).with_limit(7);
        let mut got = Vec::new();
        while let Some(d) = p.due(5) {
            got.push(d.index);
            p.sent();
        }
        assert_eq!(got, vec![1, 4]);
        assert!(p.exhausted(5));
        assert_eq!(p.next_wake(), None);
        // Connection 0 owns 0, 3 and 6.
        let mut p = Pacer::new(Mode::Closed, 3, 0, 8, u64::MAX).with_limit(7);
        let mut n = 0;
        while p.due(5).is_some() {
            p.sent();
            n += 1;
        }
        assert_eq!(n, 3);
        // Open loop: requests past the limit are not unsent, they do not exist.
        let p = Pacer::new(Mode::Open { rate: 10.0 }, 1, 0, 1, 1_000_000_000).with_limit(4);
        assert_eq!(p.unsent_since(0), 4);
    }

    #[test]
    fn closed_loop_sends_now_until_the_end() {
        let mut p = Pacer::new(Mode::Closed, 5, 2, 2, 1_000);
        let d = p.due(10).unwrap();
        assert_eq!((d.index, d.intended_ns), (2, 10));
        p.sent();
        assert_eq!(p.due(11).unwrap().index, 7);
        p.sent();
        assert_eq!(p.due(12), None);
        p.completed();
        assert_eq!(p.due(1_000), None);
        assert!(p.exhausted(1_000) && !p.exhausted(999));
        assert_eq!(p.next_wake(), None);
    }
}
