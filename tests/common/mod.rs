//! Shared helpers for the end-to-end tests: real processes (an LB and
//! workers started from the `rrstore` binary), real loopback sockets, and
//! polling with deadlines instead of sleeps.
//!
//! Every test gets its own temporary directory (test name + pid) holding the
//! LB's processed log, the workers' data dirs and every child's log. The
//! [`TestCluster`] kills its children before the directory is removed; when
//! a test fails, the children's logs are printed first.
#![allow(dead_code)]

use rrstore::admin::{self, Verification};
use rrstore::client::{Client, ClientError, Reply};
use rrstore::cluster::{self, Cluster};
use rrstore::msg::{Member, Status};
use rrstore::wire::{self, Request};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_rrstore");
/// How long a new worker may take to become active.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the workers may take to converge after the last write.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a clean shutdown (SIGTERM) may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `f` until it returns true; panics (at the caller) past `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh directory under the system temp dir, removed on drop. If the
/// test is failing, the `*.log` files in it are printed first.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    #[track_caller]
    pub fn new(test: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("rrstore-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.path);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log") && !p.ends_with("processed.log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!("----- {} (last {} lines)", log.display(), tail.len());
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// A [`Cluster`] of real processes in its own [`TestDir`]. Field order
/// matters: the cluster (and its children) goes before the directory.
pub struct TestCluster {
    cluster: Cluster,
    /// Worker IDs in activation order.
    pub ids: Vec<u32>,
    dir: TestDir,
}

impl TestCluster {
    /// An LB on loopback port 0 and `workers` workers, added one at a time,
    /// each active before the next starts.
    #[track_caller]
    pub fn start(test: &str, workers: usize) -> TestCluster {
        TestCluster::start_with(test, workers, &[])
    }

    #[track_caller]
    pub fn start_with(test: &str, workers: usize, lb_args: &[&str]) -> TestCluster {
        let dir = TestDir::new(test);
        let cluster = Cluster::start(
            Path::new(EXE),
            dir.path(),
            "127.0.0.1:0",
            "127.0.0.1:0",
            lb_args,
        )
        .unwrap_or_else(|e| panic!("LB did not start: {e}"));
        assert!(
            cluster.lb_addr.starts_with("127.0.0.1:"),
            "{}",
            cluster.lb_addr
        );
        assert!(
            cluster.control_addr.starts_with("127.0.0.1:"),
            "{}",
            cluster.control_addr
        );
        let mut c = TestCluster {
            cluster,
            ids: Vec::new(),
            dir,
        };
        for _ in 0..workers {
            c.add_active_worker();
        }
        c
    }

    /// Starts a worker with a fresh data dir and waits until it is active.
    #[track_caller]
    pub fn add_active_worker(&mut self) -> u32 {
        let id = self
            .cluster
            .add_worker()
            .unwrap_or_else(|e| panic!("worker did not start: {e}"));
        assert!(
            !self.ids.contains(&id),
            "a new worker got the ID {id} of another"
        );
        self.cluster
            .wait_active(&[id], ACTIVE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        self.ids.push(id);
        id
    }

    pub fn test_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The LB's stderr so far.
    pub fn lb_log(&self) -> String {
        self.lb_log_of(1)
    }

    /// The log of the LB's `start`th start (after `restart_lb`).
    pub fn lb_log_of(&self, start: u32) -> String {
        std::fs::read_to_string(rrstore::cluster::lb_log_path(self.dir.path(), start))
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn members(&self) -> Vec<Member> {
        self.cluster
            .members()
            .unwrap_or_else(|e| panic!("members: {e}"))
    }

    /// Worker `id`'s status at the LB, `None` if the LB does not know it.
    #[track_caller]
    pub fn status(&self, id: u32) -> Option<Status> {
        self.members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.status)
    }

    #[track_caller]
    pub fn client(&self) -> Client {
        connect(&self.cluster.lb_addr)
    }

    /// The LB's stats as a map.
    #[track_caller]
    pub fn stats(&self) -> HashMap<String, u64> {
        rrstore::client::stats(&self.cluster.control_addr, Some(self.cluster.secret()))
            .unwrap_or_else(|e| panic!("stats: {e}"))
            .into_iter()
            .collect()
    }

    /// Worker `id`'s records, checking they come in strictly ascending id
    /// order.
    #[track_caller]
    pub fn dump(&self, id: u32) -> BTreeMap<u64, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut last: Option<u64> = None;
        let mut order_ok = true;
        let mut bytes = 0;
        let secret = Some(self.cluster.secret());
        let n = admin::dump(&self.cluster.control_addr, secret, id, |rid, content| {
            order_ok &= last.is_none_or(|l| l < rid);
            last = Some(rid);
            bytes += content.len();
            out.insert(rid, content.to_vec());
        })
        .unwrap_or_else(|e| {
            panic!(
                "dump of worker {id} failed after {} entries ({bytes} content bytes): {e}",
                out.len()
            )
        });
        assert!(order_ok, "dump of worker {id} is not in ascending id order");
        assert_eq!(n as usize, out.len(), "dump of worker {id}: entry count");
        out
    }

    /// Waits until `verify` says identical, checks that exactly `expected`
    /// are active and answered, that every record count matches, and that
    /// every active worker's dump is byte-for-byte the same. Returns it.
    #[track_caller]
    pub fn converged(&self, expected: &[u32]) -> BTreeMap<u64, Vec<u8>> {
        let v = admin::verify_wait(
            &self.cluster.control_addr,
            Some(self.cluster.secret()),
            CONVERGE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("verify: {e}"));
        assert!(
            v.identical,
            "workers did not converge within {CONVERGE_TIMEOUT:?}:\n{}",
            v.render()
        );
        let active = active_rows(&v);
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(
            active.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            want,
            "active workers:\n{}",
            v.render()
        );
        let mut first: Option<(u32, BTreeMap<u64, Vec<u8>>)> = None;
        for &(id, records) in &active {
            let d = self.dump(id);
            assert_eq!(
                d.len() as u64,
                records,
                "worker {id}: dump length vs digest record count"
            );
            match &first {
                None => first = Some((id, d)),
                Some((fid, fd)) => assert_same(*fid, fd, id, &d),
            }
        }
        // A message one side does not expect closes the link and is
        // repaired by reconnecting, so it would pass unnoticed otherwise.
        let lb_log = self.lb_log();
        assert!(
            !lb_log.contains("unexpected"),
            "the LB met an unexpected message:\n{lb_log}"
        );
        first.map(|(_, d)| d).unwrap_or_default()
    }
}

impl Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

/// `(id, records)` of every active worker in a verification, by id.
#[track_caller]
/// The bytes of a worker's log segments in its data directory `dir`.
pub fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

pub fn active_rows(v: &Verification) -> Vec<(u32, u64)> {
    let mut rows: Vec<(u32, u64)> = v
        .rows
        .iter()
        .filter(|r| r.member.status == Status::Active)
        .map(|r| match &r.result {
            Ok((records, _)) => (r.member.id, *records),
            Err(e) => panic!("worker {} did not answer verify: {e}", r.member.id),
        })
        .collect();
    rows.sort_unstable();
    rows
}

/// Asserts two dumps are equal, naming the first difference.
#[track_caller]
pub fn assert_same(a_id: u32, a: &BTreeMap<u64, Vec<u8>>, b_id: u32, b: &BTreeMap<u64, Vec<u8>>) {
    if a == b {
        return;
    }
    let diff = a
        .keys()
        .chain(b.keys())
        .find(|k| a.get(k) != b.get(k))
        .copied();
    panic!(
        "dumps of workers {a_id} ({} records) and {b_id} ({} records) differ, first at id {diff:?}: {:?} vs {:?}",
        a.len(),
        b.len(),
        diff.and_then(|k| a.get(&k)),
        diff.and_then(|k| b.get(&k)),
    );
}

/// Asserts that `data` holds exactly `expected`, naming the first difference.
#[track_caller]
pub fn assert_records(data: &BTreeMap<u64, Vec<u8>>, expected: &BTreeMap<u64, Vec<u8>>) {
    if data == expected {
        return;
    }
    let missing = expected.keys().filter(|k| !data.contains_key(k)).count();
    let extra = data.keys().filter(|k| !expected.contains_key(k)).count();
    let wrong = expected
        .iter()
        .find(|(k, v)| data.get(k).is_some_and(|d| d != *v));
    panic!(
        "stored records differ from those written: {missing} missing (first {:?}), {extra} unexpected, first wrong content {:?}",
        expected.keys().find(|k| !data.contains_key(k)),
        wrong.map(|(k, v)| (k, v, &data[k])),
    );
}

/// A protocol v1 client with a 10 s read timeout.
#[track_caller]
pub fn connect(addr: &str) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Deterministic content for `(id, salt)`: 0 to 63 arbitrary bytes
/// (zeros, high bytes, not UTF-8).
pub fn content(id: u64, salt: u64) -> Vec<u8> {
    let mut x = (id ^ 0x5555_5555_5555_5555)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1;
    let len = ((x >> 32) % 64) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends every request with at most `window` in flight and returns the
/// answer to each, in request order (matched by tag). Each tag must be
/// answered exactly once. (`Client::pipeline` does this with a fixed
/// window; the tests choose theirs.)
#[track_caller]
pub fn pipeline(
    client: &mut Client,
    reqs: &[Request<'_>],
    window: usize,
) -> Vec<Result<Reply, ClientError>> {
    let window = window.max(1);
    let mut replies: Vec<Option<Result<Reply, ClientError>>> =
        std::iter::repeat_with(|| None).take(reqs.len()).collect();
    let mut by_tag: HashMap<u32, usize> = HashMap::new();
    let mut sent = 0;
    let mut received = 0;
    while received < reqs.len() {
        // Refill once half the window has drained.
        if sent < reqs.len() && by_tag.len() <= window / 2 {
            while sent < reqs.len() && by_tag.len() < window {
                let tag = client.send(&reqs[sent]);
                assert!(by_tag.insert(tag, sent).is_none(), "tag {tag} reused");
                sent += 1;
            }
            client.flush().unwrap_or_else(|e| panic!("write: {e}"));
        }
        let (tag, reply) = client
            .recv()
            .unwrap_or_else(|e| panic!("after {received} of {} replies: {e}", reqs.len()));
        let i = by_tag
            .remove(&tag)
            .unwrap_or_else(|| panic!("reply {reply:?} with unknown or repeated tag {tag}"));
        replies[i] = Some(reply);
        received += 1;
    }
    replies
        .into_iter()
        .map(|r| r.expect("every reply"))
        .collect()
}

/// A PUT request for each record, borrowing its content.
pub fn puts(records: &[(u64, Vec<u8>)]) -> Vec<Request<'_>> {
    records
        .iter()
        .map(|(id, c)| Request::Put {
            id: *id,
            content: c,
        })
        .collect()
}

/// PUTs every record (pipelined, `window` in flight) and asserts each was
/// STORED under its own id; returns the worker that stored each.
#[track_caller]
pub fn put_all(client: &mut Client, records: &[(u64, Vec<u8>)], window: usize) -> Vec<u32> {
    let reqs = puts(records);
    pipeline(client, &reqs, window)
        .into_iter()
        .zip(records)
        .map(|(reply, (id, _))| match reply {
            Ok(Reply::Stored { id: got, worker }) if got == *id => worker,
            other => panic!("PUT id={id}: expected STORED, got {other:?}"),
        })
        .collect()
}

/// The last write of each id, in order: what a single sequential (or
/// single-connection pipelined) writer must end up with.
pub fn last_writes(records: &[(u64, Vec<u8>)]) -> BTreeMap<u64, Vec<u8>> {
    records.iter().cloned().collect()
}

/// GETs every id (pipelined) and asserts each returns `expected[id]`.
#[track_caller]
pub fn assert_gets(client: &mut Client, expected: &BTreeMap<u64, Vec<u8>>) {
    let reqs: Vec<Request<'_>> = expected.keys().map(|&id| Request::Get { id }).collect();
    for (reply, (id, want)) in pipeline(client, &reqs, 64).into_iter().zip(expected) {
        match reply {
            Ok(Reply::Value { id: got, content }) if got == *id => {
                assert_eq!(&content, want, "GET id={id} returned the wrong content")
            }
            other => panic!("GET id={id}: expected VALUE, got {other:?}"),
        }
    }
}

/// One frame of the shared header with an arbitrary op and body.
pub fn frame(op: u8, tag: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::put_header(&mut v, op, tag, body.len());
    v.extend_from_slice(body);
    v
}

/// Asserts the next reply is ERROR `code` with `tag`.
#[track_caller]
pub fn expect_error(client: &mut Client, code: wire::ErrorCode, tag: u32) {
    match client.recv() {
        Ok((got, Err(ClientError::Server { code: c, message }))) => {
            assert_eq!(
                (got, c),
                (tag, code),
                "expected ERROR {} tag {tag}, got ERROR {} ({message}) tag {got}",
                code.name(),
                c.name()
            );
            assert!(!message.is_empty(), "ERROR {} without a message", c.name());
        }
        other => panic!("expected ERROR {} tag {tag}, got {other:?}", code.name()),
    }
}

/// Asserts the server closed the connection (a clean EOF) with nothing more.
#[track_caller]
pub fn expect_eof(client: &mut Client) {
    match client.recv() {
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        other => panic!("expected the LB to close the connection, got {other:?}"),
    }
}

/// The output of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `rrstore ARGS` to completion (killed and failed past 20 s), with
/// no `RRSTORE_SECRET` in its environment.
#[track_caller]
pub fn run_cli(args: &[&str]) -> Run {
    run_cli_env(args, &[])
}

/// [`run_cli`] with `RRSTORE_SECRET` set to `secret`'s bytes.
#[track_caller]
pub fn run_cli_secret(args: &[&str], secret: &rrstore::auth::Secret) -> Run {
    use std::os::unix::ffi::OsStrExt;
    let value = std::ffi::OsStr::from_bytes(secret.as_bytes());
    run_cli_env(args, &[(rrstore::auth::ENV_VAR, value)])
}

/// [`run_cli`] with these environment variables set.
#[track_caller]
pub fn run_cli_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Run {
    let mut cmd = Command::new(EXE);
    cmd.env_remove(rrstore::auth::ENV_VAR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn rrstore {args:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = cluster::wait_timeout(&mut child, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("wait for rrstore {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
    let Some(status) = status else {
        panic!("rrstore {args:?} did not exit within 20 s; stdout {stdout:?}, stderr {stderr:?}");
    };
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// A client thread that PUTs ids `bounds[0]..bounds[3]` in order (content
/// `content(id, salt)`, `window` in flight), signalling when it reaches
/// `bounds[1]` and waiting at `bounds[2]` until resumed: the shape of a
/// fault injected under load.
pub struct PhasedWriter {
    reached: std::sync::mpsc::Receiver<()>,
    resume: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<Vec<Written>>,
}

/// A record a writer sent, with the answer it got.
pub type Written = ((u64, Vec<u8>), Result<Reply, ClientError>);

impl PhasedWriter {
    pub fn start(lb: &str, bounds: [u64; 4], salt: u64, window: usize) -> PhasedWriter {
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel::<()>();
        let lb = lb.to_string();
        let handle = std::thread::spawn(move || {
            let mut client = connect(&lb);
            let mut results = Vec::new();
            for phase in 0..3 {
                let (start, end) = (bounds[phase], bounds[phase + 1]);
                if phase == 1 {
                    reached_tx.send(()).expect("test thread");
                }
                if phase == 2 {
                    resume_rx
                        .recv_timeout(Duration::from_secs(60))
                        .expect("the test to resume the writer");
                }
                let records: Vec<(u64, Vec<u8>)> =
                    (start..end).map(|id| (id, content(id, salt))).collect();
                let reqs = puts(&records);
                let replies = pipeline(&mut client, &reqs, window);
                results.extend(records.into_iter().zip(replies));
            }
            results
        });
        PhasedWriter {
            reached,
            resume,
            handle,
        }
    }

    /// Waits until the writer has reached its first mark.
    #[track_caller]
    pub fn reached(&self, timeout: Duration) {
        self.reached
            .recv_timeout(timeout)
            .expect("the writer to get going");
    }

    /// Lets the writer finish; every request with its reply, in order.
    #[track_caller]
    pub fn resume_and_join(self) -> Vec<Written> {
        self.resume.send(()).expect("writer thread");
        self.handle.join().expect("writer thread")
    }
}

/// A plain HTTP/1.0 GET of `path` from `addr`: the status code and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
