//! One child process of the harness (the LB or a worker) and the signals
//! the faults send it.
//!
//! A child's stderr is appended to its log file in the run directory (a
//! restarted process appends to the same file, after a marker line); its
//! stdout is read by a thread that hands over the one machine-readable
//! ready line (`listening …` from the LB, `registered …` from a worker)
//! and drains the rest. Waiting for that line never blocks the caller:
//! [`Proc::ready`] polls.
//!
//! Cleanup: dropping a [`Proc`] SIGKILLs and reaps it, so every exit path of
//! the harness, panics included, takes its children down. As a backstop for
//! a harness that is itself killed, each child asks the kernel for SIGKILL
//! when its parent thread dies (`PR_SET_PDEATHSIG`); every child is spawned
//! from the main thread, which lives as long as the harness.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

pub struct Proc {
    child: Child,
    ready: Option<Receiver<String>>,
    line: Option<String>,
    /// Set once the child has been reaped; no signal is sent after that
    /// (the pid may belong to someone else by then).
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd`, stderr appended to `log` after `marker`, and watches
    /// its stdout for a line starting with `prefix`.
    pub fn spawn(
        mut cmd: Command,
        log: &Path,
        marker: &str,
        prefix: &'static str,
    ) -> io::Result<Proc> {
        let mut file = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(file, "===== chaos: {marker}")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed; it makes one prctl(2)
        // call and reads errno, touching no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if !sent && line.starts_with(prefix) {
                        sent = true;
                        let _ = tx.send(line);
                    }
                }
            });
        }
        Ok(Proc {
            child,
            ready: Some(rx),
            line: None,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ready line, once the child has printed it.
    pub fn ready(&mut self) -> Option<&str> {
        if self.line.is_none() {
            if let Some(rx) = &self.ready {
                match rx.try_recv() {
                    Ok(line) => {
                        self.line = Some(line);
                        self.ready = None;
                    }
                    Err(TryRecvError::Disconnected) => self.ready = None,
                    Err(TryRecvError::Empty) => {}
                }
            }
        }
        self.line.as_deref()
    }

    /// The exit status if the child has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Sends `sig` unless the child has already been reaped.
    pub fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| io::Error::other("pid out of range"))?;
        // SAFETY: kill(2) reads no memory of ours; the pid is our own child,
        // not reaped yet (checked just above), so it cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// SIGTERM (after SIGCONT, in case it is stopped); SIGKILL if it has not
    /// exited within `timeout`. Returns the status and whether it exited on
    /// its own.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<(ExitStatus, bool)> {
        self.signal(libc::SIGCONT)?;
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok((status, true));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((self.kill()?, false))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `key=value` from a ready line.
pub fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_ready_lines() {
        let l = "listening clients=127.0.0.1:1234 control=127.0.0.1:99";
        assert_eq!(field(l, "clients").as_deref(), Some("127.0.0.1:1234"));
        assert_eq!(field(l, "control").as_deref(), Some("127.0.0.1:99"));
        assert_eq!(field(l, "id"), None);
        assert_eq!(field("registered id=3 addr=x", "id").as_deref(), Some("3"));
    }
}
