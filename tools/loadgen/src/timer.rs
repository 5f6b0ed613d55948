//! A one-shot timerfd registered with the event loop.
//!
//! mio rounds a poll timeout up to whole milliseconds, so a loop pacing
//! requests 20 µs apart would send them in bursts up to a millisecond late,
//! and that lateness would count as latency. A timerfd (CLOCK_MONOTONIC, the
//! clock behind `Instant`) fires with the kernel's timer precision (tens of
//! µs of slack) and shows up as a readable event.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub struct Timer {
    file: File,
    /// The deadline last armed (caller's clock), to skip re-arming for the
    /// same instant.
    armed: Option<u64>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; its result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created, is valid and owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Timer slack (50 µs by default) delays this thread's wake-ups;
        // pacing wants them on time. Best effort.
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument, no pointers.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        Ok(Timer {
            file: File::from(owned),
            armed: None,
        })
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.file.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// Fires once at `deadline_ns`, given that it is `now_ns` (both on the
    /// caller's nanosecond clock). A deadline already past fires at once.
    pub fn arm(&mut self, deadline_ns: u64, now_ns: u64) -> io::Result<()> {
        if self.armed == Some(deadline_ns) {
            return Ok(());
        }
        // At least 1 ns: a zero it_value would disarm the timer instead.
        let after = Duration::from_nanos(deadline_ns.saturating_sub(now_ns).max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the fd is a timerfd we own; `spec` is a valid itimerspec
        // that outlives the call; a null old-value pointer is allowed.
        let rc =
            unsafe { libc::timerfd_settime(self.file.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline_ns);
        Ok(())
    }

    /// Consumes an expiry after the timer's event (harmless if none).
    pub fn clear(&mut self) {
        let mut count = [0u8; 8];
        let _ = self.file.read(&mut count);
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn fires_with_sub_millisecond_precision() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new().unwrap();
        timer.register(poll.registry(), Token(7)).unwrap();
        let mut events = Events::with_capacity(4);
        let mut late = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            timer.arm(200_000, 0).unwrap();
            let deadline = t0 + Duration::from_secs(2);
            loop {
                poll.poll(&mut events, Some(Duration::from_secs(1)))
                    .unwrap();
                if events.iter().any(|e| e.token() == Token(7)) {
                    timer.clear();
                    break;
                }
                assert!(Instant::now() < deadline, "timer never fired");
            }
            late.push(t0.elapsed());
        }
        late.sort();
        assert!(late[0] >= Duration::from_micros(200));
        // The median wake-up is well under mio's 1 ms granularity (generous
        // bound: the machine is shared).
        assert!(late[10] < Duration::from_micros(900), "{late:?}");
    }
}
