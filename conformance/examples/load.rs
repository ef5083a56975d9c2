//! A load scenario for our node: one listener, many independent clients,
//! figures printed per phase. Run it with
//!
//! ```text
//! cargo run --release -p sansp2p-conformance --example load
//! LISTENER=smol SMOL_THREADS=2 cargo run --release -p sansp2p-conformance --example load
//! ```
//!
//! **The listener** is our node in a child process (this example run again
//! with `--listener`): a `sansp2p-mio` [`MioNode`] with noise (the default
//! [`Config`]) serving `/echo/1.0.0`, echoing each stream as it reads it and
//! closing it after the peer's end of stream. It prints its address on
//! stdout and answers `stats` on stdin with its counters (connections now and
//! at the peak, established, failed upgrades and closes by reason, echoed
//! streams). The parent measures the child from outside: resident memory
//! (`VmRSS` in `/proc/<pid>/status`) and open descriptors (entries of
//! `/proc/<pid>/fd`), before, at the peak of (sampled every 100 ms) and after
//! every phase.
//!
//! **`LISTENER=smol`** runs the listener on `sansp2p-smol` instead (the
//! futures-io binding, whose node sits behind one mutex): a [`Host`] with
//! the same [`Config`], serving `/echo/1.0.0` through the Host API
//! ([`Host::accept`], `Incoming::next`, read, write and close on the
//! futures-io [`Stream`]), one task per stream on smol's global executor
//! (`SMOL_THREADS` threads, 1 if unset). Its counters come from
//! [`Host::events`] (established, closes by reason, failed upgrades; the
//! queue holds 1024 events, and `events_queue_full` counts the times it was
//! seen full, when counts may be short), from the echo tasks (streams,
//! bytes), and from its runtime, smol's wrapped in one that counts the
//! sockets the node has started to use and not yet released (`conns`,
//! `peak`: what the node's `connection_count` counts, seen from the
//! sockets). The mutex cannot be timed from outside the binding, so the
//! listener measures around it:
//! - a probe thread takes the mutex at random times (exponential gaps, 1 ms
//!   on average) through [`Host::identify_info`], which holds it for one
//!   map lookup: how long it waited is what a thread arriving at that
//!   moment waits, and the share of probes that waited over 1 us estimates
//!   the share of time the mutex is held;
//! - every call of the echo tasks into the [`Stream`] is timed (each takes
//!   the mutex and drains the node under it): with one executor thread that
//!   is its hold time, with more it includes the wait;
//! - the sockets' writes (made by the binding with the mutex held) and
//!   reads (without it) are timed.
//!
//! The parent prints these per part of a phase (`listener, ...:` lines,
//! repeated under the summary's PHASE lines), with the CPU time of each of
//! the listener's threads and the time they waited, runnable, for a CPU
//! (`/proc/<pid>/task/*/schedstat`); with the mio listener only the CPU
//! figures.
//!
//! Its limits are set for this scenario:
//! - `max_connections` = [`MAX_CONNECTIONS`] (600): below phase 2's 1000
//!   attempts, so refusals at the connection limit are seen;
//! - `inbound.max_pending` = [`MAX_PENDING`] (256): above phase 1's 200
//!   simultaneous dials (the default 10 would refuse most of them), below
//!   phase 3's 3000 silent sockets (so the pending limit is what bounds
//!   them) and well below `max_connections`;
//! - `upgrade_timeout` = [`UPGRADE_TIMEOUT`] (5 s): silent sockets are
//!   dropped after 5 s, which keeps phase 3 short.
//!
//! **The clients** run in this process on tokio: rust-libp2p 0.57 swarms
//! (tcp, noise, yamux, identify, ping, libp2p-stream), one per connection and
//! each with its own Ed25519 identity, plus raw TCP sockets in phase 3.
//!
//! **The phases**, and what each shows:
//! 1. `echo-200x10`: 200 connections, 10 concurrent echo streams of 64 KiB
//!    on each, every reply compared byte for byte (and by FNV-1a checksum)
//!    with what was sent: many streams and connections multiplexed by one
//!    single-threaded node stay correct, and what it holds goes away when
//!    they close.
//! 2. `flood-1000`: 1000 connection attempts at once (all outstanding
//!    together, their starts spread over [`FLOOD_RAMP`]); no more than
//!    `max_connections` are established, every other attempt ends in a
//!    failed dial (nothing hangs), the established ones stay up, and closing
//!    them all returns the listener to its baseline.
//! 3. `half-open-3000`: 3000 raw TCP connections that never send a byte,
//!    opened at once and held open while one established rust-libp2p client
//!    keeps echoing: the listener admits at most `max_pending` of them,
//!    drops those at the upgrade timeout and refuses the rest at once; the
//!    echo keeps going (latency before and during the phase), and the
//!    descriptors come back to the baseline. The burst overflows the
//!    listen backlog (1024 on both `sansp2p-mio` and `sansp2p-smol`),
//!    so the kernel drops SYNs and answers with SYN cookies; the phase
//!    prints the kernel's counters. A socket that hears nothing for
//!    [`HALF_OPEN_LIMIT`] sends one probe byte: an answer (the listener's
//!    multistream header, a reset or an end of file) means the listener
//!    never had the connection (the kernel dropped the last ACK of a
//!    SYN-cookie handshake; the listener's descriptor count shows it holds
//!    none of them), which is counted and reported; silence means the
//!    listener holds it: a hang.
//! 4. `churn-2000`: 2000 sequential cycles of a fresh rust-libp2p client
//!    connecting, echoing once and disconnecting: cycles per second, and
//!    memory and descriptors at 0, 1000 and 2000 cycles (they must not grow).
//!
//! It is a scenario, not a test: it prints figures and notes what looks
//! wrong. It exits non-zero with a message when something hangs past its
//! deadline (a phase, a dial, an echo; the whole run has a watchdog too),
//! when an echo comes back different, or when a phase cannot run at all.
//!
//! The parent needs about 3100 descriptors at once (phase 3); it raises its
//! soft `RLIMIT_NOFILE` towards the hard limit with the `rlimit` crate (a
//! safe wrapper), and the child inherits it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll as TaskPoll};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, identity, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use mio::{Events, Poll, Token};
use sansp2p::addr::{tcp_multiaddr, tcp_target, TcpTarget};
use sansp2p::node::{Config, Event, StreamError, StreamHandle};
use sansp2p::Keypair;
use sansp2p_conformance::rust_peer::{spawn_driver, Behaviour, Command, TheirEvent};
use sansp2p_futures_io::{BoxFuture, Listener as SocketListener, Runtime, Socket};
use sansp2p_mio::MioNode;
use sansp2p_smol::{Host, Smol, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

const ECHO: &str = "/echo/1.0.0";

// ------------------------------------------------------- listener limits

/// The listener's `max_connections`.
const MAX_CONNECTIONS: usize = 600;
/// The listener's `inbound.max_pending`.
const MAX_PENDING: usize = 256;
/// The listener's `upgrade_timeout`.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);
/// The listener's identity.
const LISTENER_SECRET: [u8; 32] = [0x4c; 32];
/// Longest the listener's loop sleeps, so it sees `stats` on stdin soon.
const LISTENER_TICK: Duration = Duration::from_millis(20);

// ------------------------------------------------------------ the phases

const ECHO_CONNS: usize = 200;
const ECHO_STREAMS: usize = 10;
const ECHO_LEN: usize = 64 * 1024;

const FLOOD_ATTEMPTS: usize = 1000;
/// Phase 2 starts its attempts over this long (1 ms apart), so that they
/// reach `max_connections`: started all within 1 ms instead, only 300 to 450
/// of them got established and the rest met the pending limit (which phase 3
/// covers). Every attempt is still outstanding with all the others.
const FLOOD_RAMP: Duration = Duration::from_secs(1);

const HALF_OPEN: usize = 3000;
/// The size of each echo of phase 3's busy client.
const BUSY_ECHO_LEN: usize = 16 * 1024;
/// Phase 3 measures the busy client's echo this long before the flood.
const BUSY_BASELINE: Duration = Duration::from_secs(1);

const CHURN_CYCLES: usize = 2000;
const CHURN_ECHO_LEN: usize = 4 * 1024;

// -------------------------------------------------------------- deadlines

/// One dial, from start to established or failed.
const DIAL_LIMIT: Duration = Duration::from_secs(30);
/// One echo stream.
const ECHO_LIMIT: Duration = Duration::from_secs(60);
/// One disconnect, until the client sees the connection closed.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);
/// How long the listener may take to close a silent socket after accepting
/// it (the upgrade timeout plus the close linger plus slack).
const HALF_OPEN_LIMIT: Duration = Duration::from_secs(12);
/// How long after a phase the listener's descriptors may take to return.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// Each phase as a whole.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// The whole run.
const WATCHDOG: Duration = Duration::from_secs(300);

/// Descriptors the parent needs at once (phase 3, plus slack), and what it
/// asks for.
const FDS_NEEDED: u64 = 4_000;
const FDS_WANTED: u64 = 16_384;

type Res<T> = Result<T, String>;

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--listener") {
        let result = match args.next().as_deref().map(ListenerKind::parse) {
            Some(Ok(ListenerKind::Mio)) => listener_main(),
            Some(Ok(ListenerKind::Smol)) => smol_listener_main(),
            Some(Err(e)) => Err(io::Error::other(e)),
            None => Err(io::Error::other("--listener needs mio or smol")),
        };
        if let Err(e) = result {
            eprintln!("listener: {e}");
            std::process::exit(1);
        }
        return;
    }
    std::process::exit(parent_main());
}

// ======================================================= the listener side

/// Which adapter runs the listener (`LISTENER` in the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerKind {
    /// `sansp2p-mio`: one thread, the node owned by the loop.
    Mio,
    /// `sansp2p-smol`: the futures-io binding, the node behind one mutex.
    Smol,
}

impl ListenerKind {
    fn parse(name: &str) -> Result<ListenerKind, String> {
        match name {
            "mio" => Ok(ListenerKind::Mio),
            "smol" => Ok(ListenerKind::Smol),
            other => Err(format!("unknown listener {other:?} (mio or smol)")),
        }
    }

    /// From `LISTENER`; mio if it is unset or empty.
    fn from_env() -> Result<ListenerKind, String> {
        match std::env::var("LISTENER") {
            Ok(name) if !name.is_empty() => ListenerKind::parse(&name),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(ListenerKind::Mio),
            Err(e) => Err(format!("LISTENER: {e}")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ListenerKind::Mio => "mio",
            ListenerKind::Smol => "smol",
        }
    }

    /// The listener's listen backlog, as the phase 3 message says it.
    fn backlog(self) -> &'static str {
        match self {
            ListenerKind::Mio => "1024, which sansp2p-mio asks for",
            ListenerKind::Smol => "1024, sansp2p-futures-io's bind_std_listener",
        }
    }
}

/// A command from the parent, one line on stdin.
enum ListenerCommand {
    Stats,
    /// The measurements since the last `window` (and start a new one).
    Window,
    Quit,
}

/// The listener's config, the same on either adapter.
fn listener_config() -> Config {
    let mut config = Config::new(Keypair::from_secret_bytes(LISTENER_SECRET));
    config.max_connections = MAX_CONNECTIONS;
    config.inbound.max_pending = MAX_PENDING;
    config.upgrade_timeout = UPGRADE_TIMEOUT;
    config
}

/// The mio listener's answer to `window`: it has nothing to measure but
/// its threads' CPU, which the parent reads.
const MIO_WINDOW: &str = "no mutex (the mio listener owns the node on one thread)";

/// The listener process: our node, echoing, until stdin says `quit` or ends.
fn listener_main() -> io::Result<()> {
    let mut p2p = MioNode::new(listener_config(), Token(0)).map_err(io::Error::other)?;
    p2p.node()
        .register_protocol(ECHO)
        .map_err(io::Error::other)?;
    p2p.node()
        .listen_on(tcp_multiaddr(SocketAddr::from(([127, 0, 0, 1], 0))));

    let commands = stdin_commands();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut server = EchoServer::default();
    loop {
        let timeout = p2p.step(poll.registry())?;
        let mut handled = false;
        while let Some(event) = p2p.poll_event() {
            handled = true;
            server.handle(&mut p2p, event)?;
        }
        let conns = p2p.node().connection_count();
        server.peak = server.peak.max(conns);
        loop {
            match commands.try_recv() {
                Ok(ListenerCommand::Stats) => server.print_stats(conns),
                Ok(ListenerCommand::Window) => println!("window {MIO_WINDOW}"),
                Ok(ListenerCommand::Quit) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Ok(())
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        if handled {
            // Commands given while handling events need a step first.
            continue;
        }
        let wait = timeout.map_or(LISTENER_TICK, |t| t.min(LISTENER_TICK));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            p2p.handle_event(poll.registry(), event);
        }
    }
}

/// Lines from stdin, read on a thread of their own; the channel closes at
/// the end of stdin (the parent is gone).
fn stdin_commands() -> std::sync::mpsc::Receiver<ListenerCommand> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let command = match line.trim() {
                "stats" => ListenerCommand::Stats,
                "window" => ListenerCommand::Window,
                "quit" => ListenerCommand::Quit,
                _ => continue,
            };
            if tx.send(command).is_err() {
                break;
            }
        }
    };
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(reader)
        .expect("a thread for stdin");
    rx
}

/// One inbound echo stream: bytes read but not yet written back.
#[derive(Default)]
struct EchoStream {
    pending: Vec<u8>,
    written: usize,
    eof: bool,
}

/// The listener's application: echo every `/echo/1.0.0` stream, count.
#[derive(Default)]
struct EchoServer {
    streams: HashMap<StreamHandle, EchoStream>,
    buf: Vec<u8>,
    /// Connections at the peak since the last `stats`.
    peak: usize,
    established: u64,
    streams_done: u64,
    echoed_bytes: u64,
    /// Closes by reason and failed upgrades by error (short Debug names).
    counts: BTreeMap<String, u64>,
}

/// What [`EchoServer::pump`] left of a stream.
enum Pumped {
    Keep,
    Done,
}

impl EchoServer {
    fn handle(&mut self, p2p: &mut MioNode, event: Event) -> io::Result<()> {
        match event {
            Event::Listening { addr, .. } => {
                let Some(TcpTarget::Ip(sa)) = tcp_target(&addr) else {
                    return Err(io::Error::other("listening on a non-IP address"));
                };
                let peer = p2p.node().local_peer_id();
                println!("listening /ip4/{}/tcp/{}/p2p/{peer}", sa.ip(), sa.port());
            }
            Event::ListenFailed { .. } => return Err(io::Error::other("listen failed")),
            Event::ConnectionEstablished { .. } => self.established += 1,
            Event::InboundUpgradeFailed { error, .. } => {
                *self.counts.entry(key("failed", &error)).or_default() += 1;
            }
            Event::ConnectionClosed { conn, reason, .. } => {
                *self.counts.entry(key("closed", &reason)).or_default() += 1;
                self.streams.retain(|s, _| s.connection() != conn);
            }
            Event::InboundStream { stream, .. } => {
                self.streams.insert(stream, EchoStream::default());
                self.pump(p2p, stream);
            }
            Event::StreamReadable { stream } | Event::StreamWritable { stream } => {
                self.pump(p2p, stream);
            }
            Event::StreamClosed { stream } | Event::StreamReset { stream } => {
                self.streams.remove(&stream);
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves a stream on: write back what is pending, then read more, until
    /// the node blocks one way or the other; close after the peer's end.
    fn pump(&mut self, p2p: &mut MioNode, stream: StreamHandle) {
        let Some(mut st) = self.streams.remove(&stream) else {
            return;
        };
        if self.buf.is_empty() {
            self.buf = vec![0; 64 * 1024];
        }
        let now = p2p.now();
        let node = p2p.node();
        let outcome = loop {
            let mut gone = false;
            while st.written < st.pending.len() {
                match node.stream_write(now, stream, &st.pending[st.written..]) {
                    Ok(0) | Err(StreamError::WouldBlock) => break,
                    Ok(n) => st.written += n,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                break Pumped::Done;
            }
            if st.written < st.pending.len() {
                // StreamWritable follows.
                break Pumped::Keep;
            }
            self.echoed_bytes += st.written as u64;
            st.pending.clear();
            st.written = 0;
            if st.eof {
                let _ = node.stream_close(now, stream);
                self.streams_done += 1;
                break Pumped::Done;
            }
            match node.stream_read(now, stream, &mut self.buf) {
                Ok(0) => st.eof = true,
                Ok(n) => st.pending.extend_from_slice(&self.buf[..n]),
                Err(StreamError::WouldBlock) => break Pumped::Keep,
                Err(_) => break Pumped::Done,
            }
        };
        if let Pumped::Keep = outcome {
            self.streams.insert(stream, st);
        }
    }

    fn print_stats(&mut self, conns: usize) {
        let mut line = format!(
            "stats conns={conns} peak={} established={} streams_done={} echoed_bytes={} open_streams={}",
            self.peak,
            self.established,
            self.streams_done,
            self.echoed_bytes,
            self.streams.len()
        );
        for (k, v) in &self.counts {
            line.push_str(&format!(" {k}={v}"));
        }
        println!("{line}");
        self.peak = conns;
    }
}

/// A short counter name from a Debug form: `closed.Eof`, `failed.Upgrade(Timeout)`.
fn key(prefix: &str, what: &dyn std::fmt::Debug) -> String {
    let name: String = format!("{what:?}")
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '=' { ':' } else { c })
        .take(48)
        .collect();
    format!("{prefix}.{name}")
}

// ==================================================== the smol listener

/// Mean gap between two probes of the node's mutex (exponential gaps).
const PROBE_GAP: Duration = Duration::from_millis(1);
/// A probe that took longer than this found the mutex held: taking a free
/// one and looking up a map takes a few hundred nanoseconds at most.
const PROBE_HELD: Duration = Duration::from_micros(1);
/// How often the event counter drains the event queue. It polls rather
/// than blocks, so that the node's events, sent with the mutex held, do not
/// also wake a thread each.
const EVENTS_TICK: Duration = Duration::from_millis(1);
/// Each echo task's buffer: what the mio listener reads at once, and what
/// the adapters' `serve_echo` uses.
const SMOL_ECHO_BUF: usize = 64 * 1024;

/// The smol listener's counters and measurements (one listener a process).
static SMOL: SmolFigures = SmolFigures::new();

struct SmolFigures {
    /// Sockets the node has started to use and not yet released.
    conns: AtomicUsize,
    /// The most `conns` since the last `stats`.
    peak: AtomicUsize,
    established: AtomicU64,
    streams_done: AtomicU64,
    echoed_bytes: AtomicU64,
    /// Echo tasks running.
    open_streams: AtomicU64,
    /// Times the event counter found the event queue full (events may have
    /// been dropped for it, and the counts below be short).
    events_queue_full: AtomicU64,
    /// Closes by reason and failed upgrades by error (as the mio listener).
    counts: Mutex<BTreeMap<String, u64>>,
    /// How long the probe waited for the node's mutex.
    probe: Histogram,
    /// The echo tasks' calls into their streams (each takes the mutex and
    /// drains the node).
    stream_calls: Histogram,
    /// The binding's socket writes, made with the mutex held.
    socket_writes: Histogram,
    /// The binding's socket reads, made without it.
    socket_reads: Histogram,
    /// When the current window started.
    window: Mutex<Option<Instant>>,
}

impl SmolFigures {
    const fn new() -> SmolFigures {
        SmolFigures {
            conns: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            established: AtomicU64::new(0),
            streams_done: AtomicU64::new(0),
            echoed_bytes: AtomicU64::new(0),
            open_streams: AtomicU64::new(0),
            events_queue_full: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
            probe: Histogram::new(),
            stream_calls: Histogram::new(),
            socket_writes: Histogram::new(),
            socket_reads: Histogram::new(),
            window: Mutex::new(None),
        }
    }
}

/// Four buckets per power of two of nanoseconds.
const BUCKETS: usize = 256;

/// Durations, counted by size without a lock.
struct Histogram {
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    /// Longer than [`PROBE_HELD`].
    over: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// What a [`Histogram`] recorded over one window.
struct Recorded {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    over: u64,
    buckets: Vec<u64>,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            over: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        if d > PROBE_HELD {
            self.over.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// What was recorded since the last `take`, which starts afresh.
    fn take(&self) -> Recorded {
        Recorded {
            count: self.count.swap(0, Ordering::Relaxed),
            sum_ns: self.sum_ns.swap(0, Ordering::Relaxed),
            max_ns: self.max_ns.swap(0, Ordering::Relaxed),
            over: self.over.swap(0, Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.swap(0, Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The bucket of `ns`: below 8 one per value, then four per power of two.
fn bucket(ns: u64) -> usize {
    if ns < 8 {
        return ns as usize;
    }
    let octave = 63 - ns.leading_zeros() as usize;
    octave * 4 + ((ns >> (octave - 2)) & 3) as usize
}

/// The middle of bucket `i` (within 12.5% of any value in it).
fn bucket_middle(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let (octave, quarter) = (i / 4, (i % 4) as u64);
    let width = 1u64 << (octave - 2);
    (4 + quarter) * width + width / 2
}

impl Recorded {
    fn quantile(&self, q: f64) -> Duration {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total - 1) as f64 * q).round() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank {
                return Duration::from_nanos(bucket_middle(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    fn mean(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.checked_div(self.count).unwrap_or(0))
    }

    fn total(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Count, mean, p50, p99 and max.
    fn figures(&self) -> String {
        format!(
            "{} x, mean {} p50 {} p99 {} max {}",
            self.count,
            short(self.mean()),
            short(self.quantile(0.5)),
            short(self.quantile(0.99)),
            short(Duration::from_nanos(self.max_ns))
        )
    }
}

/// A duration in ns, us or ms.
fn short(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// smol's runtime ([`Smol`]), its sockets wrapped in [`CountedSocket`]s.
#[derive(Debug, Clone, Copy)]
struct CountingSmol;

impl Runtime for CountingSmol {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        Smol.spawn(task);
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        Smol.sleep_until(at)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Socket>>> {
        let connecting = Smol.connect(addr);
        Box::pin(async move { Ok(CountedSocket::boxed(connecting.await?)) })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn SocketListener>> {
        Ok(Box::new(CountedListener(Smol.bind(addr)?)))
    }
}

struct CountedListener(Box<dyn SocketListener>);

impl SocketListener for CountedListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Socket>, SocketAddr)>> {
        let accepting = self.0.accept();
        Box::pin(async move {
            let (socket, remote) = accepting.await?;
            Ok((CountedSocket::boxed(socket), remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A socket that counts in `conns` from its first read or write (the
/// binding starts a connection's tasks only once the node took it; a
/// socket it refused is dropped unused) until it is dropped (the node
/// released the connection), and times its reads and writes.
struct CountedSocket {
    inner: Box<dyn Socket>,
    used: AtomicBool,
}

impl CountedSocket {
    fn boxed(inner: Box<dyn Socket>) -> Box<dyn Socket> {
        Box::new(CountedSocket {
            inner,
            used: AtomicBool::new(false),
        })
    }

    fn mark_used(&self) {
        if !self.used.swap(true, Ordering::Relaxed) {
            let now = SMOL.conns.fetch_add(1, Ordering::Relaxed) + 1;
            SMOL.peak.fetch_max(now, Ordering::Relaxed);
        }
    }
}

impl Socket for CountedSocket {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> TaskPoll<io::Result<usize>> {
        self.mark_used();
        let t = Instant::now();
        let read = self.inner.poll_read(cx, buf);
        SMOL.socket_reads.record(t.elapsed());
        read
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> TaskPoll<io::Result<usize>> {
        self.mark_used();
        let t = Instant::now();
        let written = self.inner.poll_write(cx, buf);
        SMOL.socket_writes.record(t.elapsed());
        written
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.inner.shutdown_write()
    }
}

impl Drop for CountedSocket {
    fn drop(&mut self) {
        if *self.used.get_mut() {
            SMOL.conns.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A stream whose every call into the node is timed.
struct TimedStream(Stream);

impl futures::io::AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> TaskPoll<io::Result<usize>> {
        let t = Instant::now();
        let read = futures::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, buf);
        SMOL.stream_calls.record(t.elapsed());
        read
    }
}

impl futures::io::AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> TaskPoll<io::Result<usize>> {
        let t = Instant::now();
        let written = futures::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf);
        SMOL.stream_calls.record(t.elapsed());
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        // Does not take the mutex.
        futures::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<io::Result<()>> {
        let t = Instant::now();
        let closed = futures::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx);
        SMOL.stream_calls.record(t.elapsed());
        closed
    }
}

/// The smol listener process: a [`Host`] echoing, until stdin says `quit`
/// or ends.
fn smol_listener_main() -> io::Result<()> {
    let host = Host::new(listener_config(), CountingSmol).map_err(io::Error::other)?;
    let incoming = host.accept(ECHO).map_err(io::Error::other)?;
    let events = host.events();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || count_events(&events))?;
    let any_port = sansp2p_smol::multiaddr_of(SocketAddr::from(([127, 0, 0, 1], 0)));
    let bound = smol::block_on(host.listen(&any_port)).map_err(io::Error::other)?;
    let Some(TcpTarget::Ip(sa)) = tcp_target(&bound.to_vec()) else {
        return Err(io::Error::other("listening on a non-IP address"));
    };
    let spawner = host.clone();
    host.spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            spawner.spawn(smol_echo(stream));
        }
    });
    let prober = host.clone();
    std::thread::Builder::new()
        .name("lock-probe".into())
        .spawn(move || probe_mutex(&prober))?;
    *lock(&SMOL.window) = Some(Instant::now());
    let peer = host.local_peer_id();
    println!("listening /ip4/{}/tcp/{}/p2p/{peer}", sa.ip(), sa.port());

    let commands = stdin_commands();
    while let Ok(command) = commands.recv() {
        match command {
            ListenerCommand::Stats => print_smol_stats(),
            ListenerCommand::Window => println!("window {}", smol_window()),
            ListenerCommand::Quit => break,
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One inbound echo stream: its bytes go back as they come, and it closes
/// after the peer's close.
async fn smol_echo(stream: Stream) {
    SMOL.open_streams.fetch_add(1, Ordering::Relaxed);
    let mut s = TimedStream(stream);
    let mut buf = vec![0u8; SMOL_ECHO_BUF];
    let done = loop {
        match s.read(&mut buf).await {
            Ok(0) => {
                let _ = s.close().await;
                break true;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    break false;
                }
                SMOL.echoed_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => break false,
        }
    };
    if done {
        SMOL.streams_done.fetch_add(1, Ordering::Relaxed);
    }
    SMOL.open_streams.fetch_sub(1, Ordering::Relaxed);
    // Dropping the stream takes the mutex too.
    let TimedStream(stream) = s;
    let t = Instant::now();
    drop(stream);
    SMOL.stream_calls.record(t.elapsed());
}

/// Counts the node's events, draining the queue every [`EVENTS_TICK`].
fn count_events(events: &async_channel::Receiver<Event>) {
    loop {
        // Between two drains the queue only grows: full now means it may
        // have dropped events since the last drain.
        if events.is_full() {
            SMOL.events_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            match events.try_recv() {
                Ok(event) => count_event(&event),
                Err(async_channel::TryRecvError::Empty) => break,
                Err(async_channel::TryRecvError::Closed) => return,
            }
        }
        std::thread::sleep(EVENTS_TICK);
    }
}

fn count_event(event: &Event) {
    let name = match event {
        Event::ConnectionEstablished { .. } => {
            SMOL.established.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Event::InboundUpgradeFailed { error, .. } => key("failed", error),
        Event::ConnectionClosed { reason, .. } => key("closed", reason),
        _ => return,
    };
    *lock(&SMOL.counts).entry(name).or_default() += 1;
}

/// Takes the node's mutex at random times (exponential gaps, [`PROBE_GAP`]
/// on average, so that the probes see the mutex as a thread arriving at any
/// moment would) and records how long each took: `identify_info` of a peer
/// we never met holds it for one map lookup.
fn probe_mutex(host: &Host) {
    let nobody = Keypair::from_secret_bytes([0x9b; 32]).peer_id();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let uniform = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        std::thread::sleep(PROBE_GAP.mul_f64(-uniform.ln()));
        let t = Instant::now();
        let info = host.identify_info(&nobody);
        let waited = t.elapsed();
        SMOL.probe.record(waited);
        drop(info);
    }
}

fn print_smol_stats() {
    let conns = SMOL.conns.load(Ordering::Relaxed);
    let peak = SMOL.peak.swap(conns, Ordering::Relaxed).max(conns);
    let mut line = format!(
        "stats conns={conns} peak={peak} established={} streams_done={} echoed_bytes={} \
         open_streams={} events_queue_full={}",
        SMOL.established.load(Ordering::Relaxed),
        SMOL.streams_done.load(Ordering::Relaxed),
        SMOL.echoed_bytes.load(Ordering::Relaxed),
        SMOL.open_streams.load(Ordering::Relaxed),
        SMOL.events_queue_full.load(Ordering::Relaxed)
    );
    for (k, v) in lock(&SMOL.counts).iter() {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

/// The measurements since the last `window`, on one line; starts a new one.
fn smol_window() -> String {
    let now = Instant::now();
    let started = lock(&SMOL.window).replace(now);
    let secs = started.map_or(0.0, |t| (now - t).as_secs_f64());
    let probe = SMOL.probe.take();
    let calls = SMOL.stream_calls.take();
    let writes = SMOL.socket_writes.take();
    let reads = SMOL.socket_reads.take();
    let share = |d: Duration| {
        if secs > 0.0 {
            100.0 * d.as_secs_f64() / secs
        } else {
            0.0
        }
    };
    let held = if probe.count > 0 {
        100.0 * probe.over as f64 / probe.count as f64
    } else {
        0.0
    };
    format!(
        "over {secs:.2} s: mutex probe {}, {held:.1}% waited over {} (the share of time the \
         mutex is held); stream calls {} ({:.0}/s), {:.2} s in all ({:.0}% of the window); \
         socket writes (mutex held) {}, {:.2} s ({:.0}%); socket reads (mutex free) {}, {:.2} \
         s ({:.0}%)",
        probe.figures(),
        short(PROBE_HELD),
        calls.figures(),
        calls.count as f64 / secs.max(1e-9),
        calls.total().as_secs_f64(),
        share(calls.total()),
        writes.figures(),
        writes.total().as_secs_f64(),
        share(writes.total()),
        reads.figures(),
        reads.total().as_secs_f64(),
        share(reads.total())
    )
}

// ========================================================= the parent side

fn parent_main() -> i32 {
    let started = Instant::now();
    match rlimit::increase_nofile_limit(FDS_WANTED) {
        Ok(limit) if limit >= FDS_NEEDED => println!("load: descriptor limit {limit}"),
        Ok(limit) => {
            eprintln!(
                "load: FAILED: the descriptor limit is {limit} and cannot be raised; \
                 this scenario needs {FDS_NEEDED} (raise the hard limit, e.g. `ulimit -Hn`)"
            );
            return 1;
        }
        Err(e) => {
            eprintln!("load: FAILED: cannot read or raise the descriptor limit: {e}");
            return 1;
        }
    }
    let kind = match ListenerKind::from_env() {
        Ok(kind) => kind,
        Err(e) => {
            eprintln!("load: FAILED: {e}");
            return 1;
        }
    };
    let mut listener = match Listener::spawn(kind) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("load: FAILED to start the listener: {e}");
            return 1;
        }
    };
    let adapter = match kind {
        ListenerKind::Mio => "sansp2p-mio".to_string(),
        ListenerKind::Smol => format!(
            "sansp2p-smol, SMOL_THREADS={}",
            std::env::var("SMOL_THREADS").unwrap_or_else(|_| "unset (1 thread)".into())
        ),
    };
    println!(
        "load: listener ({adapter}) pid {} at {} (max_connections {MAX_CONNECTIONS}, \
         max_pending {MAX_PENDING}, upgrade_timeout {UPGRADE_TIMEOUT:?})",
        listener.pid, listener.addr
    );
    start_watchdog(listener.child.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(run_phases(&mut listener));
    let code = match result {
        Ok(reports) => {
            print_summary(&reports, started.elapsed());
            0
        }
        Err(e) => {
            eprintln!("load: FAILED: {e}");
            1
        }
    };
    listener.stop();
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// Ends the run (and the listener) if it takes longer than [`WATCHDOG`].
fn start_watchdog(child: Arc<Mutex<Child>>) {
    std::thread::spawn(move || {
        std::thread::sleep(WATCHDOG);
        eprintln!("load: FAILED: the run did not finish within {WATCHDOG:?} (hang)");
        if let Ok(mut child) = child.lock() {
            let _ = child.kill();
        }
        std::process::exit(2);
    });
}

async fn run_phases(listener: &mut Listener) -> Res<Vec<PhaseReport>> {
    let mut reports = Vec::new();
    let mut anomalies = Vec::new();
    let initial = listener.sample();
    println!(
        "load: listener at start: rss {}, fds {}",
        mib(initial.rss_kib),
        initial.fds
    );
    reports.push(within_phase("echo-200x10", phase_echo(listener)).await?);
    reports.push(within_phase("flood-1000", phase_flood(listener)).await?);
    reports.push(within_phase("half-open-3000", phase_half_open(listener)).await?);
    reports.push(within_phase("churn-2000", phase_churn(listener)).await?);
    for r in &reports {
        anomalies.extend(r.anomalies.iter().map(|a| format!("{}: {a}", r.name)));
    }
    reports.push(PhaseReport {
        name: "all".into(),
        before: initial,
        peak: initial,
        after: listener.sample(),
        secs: 0.0,
        figures: String::new(),
        anomalies,
        windows: Vec::new(),
    });
    Ok(reports)
}

async fn within_phase(
    name: &str,
    phase: impl std::future::Future<Output = Res<PhaseReport>>,
) -> Res<PhaseReport> {
    println!();
    println!("--- {name}");
    let report = tokio::time::timeout(PHASE_LIMIT, phase)
        .await
        .map_err(|_| format!("phase {name} did not finish within {PHASE_LIMIT:?} (hang)"))?
        .map_err(|e| format!("phase {name}: {e}"))?;
    println!("{}", report.line());
    for a in &report.anomalies {
        println!("  WARNING: {a}");
    }
    Ok(report)
}

// ---------------------------------------------------------------- phase 1

/// 200 connections x 10 concurrent echo streams x 64 KiB, every reply
/// compared with what was sent.
async fn phase_echo(listener: &mut Listener) -> Res<PhaseReport> {
    let before_stats = listener.stats().await?;
    let before = listener.sample();
    let kernel = KernelCounters::read();
    let peak = PeakSampler::start(listener.pid);
    let mut windows = Vec::new();
    listener.window(None).await?;
    let started = Instant::now();

    let mut dials = Vec::new();
    for _ in 0..ECHO_CONNS {
        let addr = listener.addr.clone();
        dials.push(tokio::spawn(async move {
            let mut client = Client::new();
            limit(DIAL_LIMIT, "a dial", client.connect(&addr)).await??;
            Ok::<_, String>(client)
        }));
    }
    let mut clients = Vec::new();
    for (i, dial) in dials.into_iter().enumerate() {
        let client = dial
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("client {i} did not connect: {e}"))?;
        clients.push(client);
    }
    let connected = started.elapsed();
    println!(
        "  {ECHO_CONNS} connections established in {:.2} s",
        connected.as_secs_f64()
    );
    windows.push(listener.window(Some("connects")).await?);

    let echo_start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for s in 0..ECHO_STREAMS {
            let control = client.control.clone();
            let peer = listener.peer;
            tasks.push(tokio::spawn(async move {
                let data = pattern((c * ECHO_STREAMS + s) as u64, ECHO_LEN);
                let reply = limit(ECHO_LIMIT, "an echo", echo(control, peer, &data)).await??;
                compare(&format!("connection {c} stream {s}"), &data, &reply)?;
                Ok::<_, String>(fnv1a(&reply))
            }));
        }
    }
    let mut checksum = 0u64;
    let mut failures = Vec::new();
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok(sum) => checksum ^= sum,
            Err(e) => failures.push(e),
        }
    }
    let echo_secs = echo_start.elapsed().as_secs_f64();
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} echoes failed; first: {}",
            failures.len(),
            ECHO_CONNS * ECHO_STREAMS,
            failures[..failures.len().min(5)].join("; ")
        ));
    }
    let streams = ECHO_CONNS * ECHO_STREAMS;
    let echoed = (streams * ECHO_LEN) as u64;
    println!(
        "  {streams} echoes of {} KiB correct (xor of FNV-1a checksums {checksum:#018x}) in \
         {echo_secs:.2} s: {:.1} MiB/s each way",
        ECHO_LEN / 1024,
        echoed as f64 / MIB / echo_secs
    );
    windows.push(listener.window(Some("echoes")).await?);
    let held = listener.sample();
    println!(
        "  listener with {ECHO_CONNS} connections open: rss {}, fds {}",
        mib(held.rss_kib),
        held.fds
    );

    disconnect_all(clients, listener.peer).await?;
    let mut anomalies = Vec::new();
    let after = settle(listener, before.fds, &mut anomalies).await;
    let peak = peak.finish().await;
    let after_stats = listener.stats().await?;
    println!("  listener: {}", after_stats.delta(&before_stats));
    println!(
        "  kernel (system-wide): {}",
        KernelCounters::read().delta(&kernel)
    );
    Ok(PhaseReport {
        name: "echo-200x10".into(),
        before,
        peak,
        after,
        secs: started.elapsed().as_secs_f64(),
        figures: format!(
            "{ECHO_CONNS} conns, {streams} streams, {:.0} MiB echoed in {echo_secs:.1} s",
            echoed as f64 / MIB
        ),
        anomalies,
        windows,
    })
}

// ---------------------------------------------------------------- phase 2

/// What became of one attempt of phase 2.
enum Attempt {
    Established(Client),
    Refused(String),
}

/// 1000 connection attempts at once: at most `max_connections` succeed,
/// the rest fail cleanly, then all close.
async fn phase_flood(listener: &mut Listener) -> Res<PhaseReport> {
    let before_stats = listener.stats().await?;
    let before = listener.sample();
    let kernel = KernelCounters::read();
    let peak = PeakSampler::start(listener.pid);
    let mut windows = Vec::new();
    listener.window(None).await?;
    let started = Instant::now();
    let gap = FLOOD_RAMP / FLOOD_ATTEMPTS as u32;

    let mut tasks = Vec::new();
    for i in 0..FLOOD_ATTEMPTS {
        let addr = listener.addr.clone();
        let start_at = tokio::time::Instant::now() + gap * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let mut client = Client::new();
            let attempt = match limit(DIAL_LIMIT, "a dial", client.connect(&addr)).await {
                Err(hang) => return Err(hang),
                Ok(Ok(())) => Attempt::Established(client),
                Ok(Err(e)) => Attempt::Refused(e),
            };
            Ok::<_, String>(attempt)
        }));
    }
    let mut clients = Vec::new();
    let mut refusals: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    let mut hangs = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.map_err(|e| e.to_string())? {
            Ok(Attempt::Established(c)) => clients.push(c),
            Ok(Attempt::Refused(e)) => {
                let entry = refusals.entry(refusal_kind(&e)).or_insert((0, e));
                entry.0 += 1;
            }
            Err(e) => hangs.push(format!("attempt {i}: {e}")),
        }
    }
    let attempts_secs = started.elapsed().as_secs_f64();
    if !hangs.is_empty() {
        return Err(format!(
            "{} attempts neither succeeded nor failed: {}",
            hangs.len(),
            hangs[..hangs.len().min(3)].join("; ")
        ));
    }
    windows.push(listener.window(Some("attempts")).await?);
    let established = clients.len();
    let refused: usize = refusals.values().map(|(n, _)| n).sum();
    println!(
        "  {FLOOD_ATTEMPTS} attempts done in {attempts_secs:.2} s: {established} established, \
         {refused} refused"
    );
    for (kind, (n, example)) in &refusals {
        println!("    refused, {kind}: {n} (e.g. {})", shorten(example, 220));
    }
    let mut anomalies = Vec::new();
    if established > MAX_CONNECTIONS {
        anomalies.push(format!(
            "{established} connections established, more than max_connections {MAX_CONNECTIONS}"
        ));
    }
    if established < MAX_CONNECTIONS {
        anomalies.push(format!(
            "only {established} of {MAX_CONNECTIONS} allowed connections were established \
             (refusals below the connection limit: the pending limit or something else)"
        ));
    }
    let mid_stats = listener.stats().await?;
    println!(
        "  listener during the attempts: peak {} connections; {}",
        mid_stats.get("peak"),
        mid_stats.delta(&before_stats)
    );

    // The established connections must still be up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = listener.sample();
    let lost = clients
        .iter_mut()
        .map(Client::saw_close)
        .filter(|&closed| closed)
        .count();
    println!(
        "  holding {established} connections ({lost} closed meanwhile): listener rss {}, fds {}",
        mib(held.rss_kib),
        held.fds
    );
    if lost > 0 {
        anomalies.push(format!(
            "{lost} established connections closed without being asked"
        ));
    }

    disconnect_all(clients, listener.peer).await?;
    let after = settle(listener, before.fds, &mut anomalies).await;
    let peak = peak.finish().await;
    let after_stats = listener.stats().await?;
    println!("  listener: {}", after_stats.delta(&mid_stats));
    println!(
        "  kernel (system-wide): {}",
        KernelCounters::read().delta(&kernel)
    );
    Ok(PhaseReport {
        name: "flood-1000".into(),
        before,
        peak,
        after,
        secs: started.elapsed().as_secs_f64(),
        figures: format!(
            "{FLOOD_ATTEMPTS} attempts, {established} established, {refused} refused, \
             {} hung",
            hangs.len()
        ),
        anomalies,
        windows,
    })
}

/// A short name for how a rust-libp2p dial failed.
fn refusal_kind(error: &str) -> &'static str {
    let e = error.to_lowercase();
    if e.contains("brokenpipe") || e.contains("broken pipe") {
        "closed by the listener (broken pipe on our write)"
    } else if e.contains("reset") {
        "closed by the listener (connection reset)"
    } else if e.contains("eof") || e.contains("end of file") {
        "closed by the listener (end of file)"
    } else if e.contains("refused") {
        "TCP connect refused"
    } else if e.contains("timeout") || e.contains("timed out") {
        "timed out"
    } else {
        "other"
    }
}

// ---------------------------------------------------------------- phase 3

/// What became of one silent socket of phase 3.
enum Silent {
    /// The listener closed it (end of file or reset) this long after the
    /// connect, having sent this many bytes first.
    Closed {
        after: Duration,
        bytes: usize,
        reset: bool,
    },
    ConnectFailed(String),
    /// Nothing came for [`HALF_OPEN_LIMIT`]; then one probe byte got an
    /// answer: the listener's multistream header (`revived`: the kernel
    /// had completed our handshake with a SYN cookie but dropped its last
    /// ACK, so the listener never had the connection until the probe's
    /// segment made the kernel create it), or a reset or end of file.
    Unseen {
        revived: bool,
    },
    /// Nothing came for [`HALF_OPEN_LIMIT`], and the probe got no answer
    /// either: a hang.
    StillOpen {
        bytes: usize,
        port: u16,
    },
}

/// The silent sockets of phase 3, counted by outcome.
#[derive(Default)]
struct SilentCounts {
    /// Closed by the listener within 1 s: refused at once.
    refused: usize,
    bytes_refused: usize,
    /// Closed after 1 s but well before the upgrade timeout: refused once
    /// the kernel retried a handshake it had dropped (listen backlog full).
    refused_late: usize,
    /// Closed around the upgrade timeout.
    timed_out: usize,
    bytes_timed_out: usize,
    /// Closed at any other time (seconds after the connect).
    other: Vec<f64>,
    resets: usize,
    connect_failed: BTreeMap<String, usize>,
    unseen_revived: usize,
    unseen_closed: usize,
    still_open: Vec<(u16, usize)>,
}

impl SilentCounts {
    fn add(&mut self, outcome: &Silent) {
        match outcome {
            Silent::Closed {
                after,
                bytes,
                reset,
            } => {
                self.resets += usize::from(*reset);
                let timeout_from = UPGRADE_TIMEOUT - Duration::from_millis(500);
                let timeout_to = UPGRADE_TIMEOUT + Duration::from_secs(3);
                if *after < Duration::from_secs(1) {
                    self.refused += 1;
                    self.bytes_refused += bytes;
                } else if *after < timeout_from && *bytes == 0 {
                    self.refused_late += 1;
                } else if *after >= timeout_from && *after <= timeout_to {
                    self.timed_out += 1;
                    self.bytes_timed_out += bytes;
                } else {
                    self.other.push(after.as_secs_f64());
                }
            }
            Silent::ConnectFailed(e) => *self.connect_failed.entry(e.clone()).or_default() += 1,
            Silent::Unseen { revived: true } => self.unseen_revived += 1,
            Silent::Unseen { revived: false } => self.unseen_closed += 1,
            Silent::StillOpen { bytes, port } => self.still_open.push((*port, *bytes)),
        }
    }
}

/// 3000 silent TCP connections while one client keeps echoing: the
/// listener refuses or times them out, and returns to its baseline.
async fn phase_half_open(listener: &mut Listener) -> Res<PhaseReport> {
    let mut busy = Client::new();
    limit(
        DIAL_LIMIT,
        "the busy client's dial",
        busy.connect(&listener.addr),
    )
    .await?
    .map_err(|e| format!("the busy client did not connect: {e}"))?;
    let before_stats = listener.stats().await?;
    let before = listener.sample();
    let kernel = KernelCounters::read();
    let peak = PeakSampler::start(listener.pid);
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let mut windows = Vec::new();
    listener.window(None).await?;
    let echo_loop = tokio::spawn(busy_echo(busy.control.clone(), listener.peer, stop.clone()));
    tokio::time::sleep(BUSY_BASELINE).await;
    windows.push(listener.window(Some("busy client alone")).await?);

    let flood_start = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let mut sockets = Vec::new();
    for _ in 0..HALF_OPEN {
        sockets.push(tokio::spawn(silent_socket(listener.socket, open.clone())));
    }
    // While they are held, and once the listener should hold none of them.
    let mut late = (0, 0);
    for at in [2, 9] {
        tokio::time::sleep_until((flood_start + Duration::from_secs(at)).into()).await;
        let s = listener.sample();
        let stats = listener.stats().await?;
        late = (open.load(Ordering::Relaxed), s.fds);
        println!(
            "  {at} s into the flood: {} silent sockets open at our end; listener rss {}, fds {} \
             (baseline {}), {} connections (peak {})",
            open.load(Ordering::Relaxed),
            mib(s.rss_kib),
            s.fds,
            before.fds,
            stats.get("conns"),
            stats.get("peak")
        );
    }

    let mut counts = SilentCounts::default();
    for task in sockets {
        counts.add(&task.await.map_err(|e| e.to_string())??);
    }
    let flood_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    windows.push(listener.window(Some("flood (busy client on)")).await?);
    let samples = echo_loop.await.map_err(|e| e.to_string())??;

    let c = &counts;
    println!(
        "  {HALF_OPEN} silent sockets: {} refused at once ({} bytes received in all), {} refused \
         after a delayed accept (1 s to {:?}), {} closed at the upgrade timeout ({} bytes \
         received in all), {} closed at other times, {} never seen by the listener until a \
         probe byte ({} then got its multistream header, {} a close), {} still open, {} failed to connect; {} of the closes were resets",
        c.refused,
        c.bytes_refused,
        c.refused_late,
        UPGRADE_TIMEOUT - Duration::from_millis(500),
        c.timed_out,
        c.bytes_timed_out,
        c.other.len(),
        c.unseen_revived + c.unseen_closed,
        c.unseen_revived,
        c.unseen_closed,
        c.still_open.len(),
        c.connect_failed.values().sum::<usize>(),
        c.resets
    );
    println!(
        "  kernel (system-wide): {}",
        KernelCounters::read().delta(&kernel)
    );
    let mut anomalies = Vec::new();
    if !c.other.is_empty() {
        let mut other = c.other.clone();
        other.sort_by(f64::total_cmp);
        println!(
            "    closed at other times (s): min {:.2}, median {:.2}, max {:.2}",
            other[0],
            other[other.len() / 2],
            other[other.len() - 1]
        );
        anomalies.push(format!(
            "{} silent sockets were closed neither at once nor at the upgrade timeout",
            other.len()
        ));
    }
    if c.unseen_revived + c.unseen_closed > 0 {
        let (open_late, fds_late) = late;
        let listener_side = if fds_late <= before.fds {
            format!(
                "while the listener held none of them (9 s in: {open_late} open at our end, the \
                 listener at its baseline of {} fds)",
                before.fds
            )
        } else {
            format!(
                "(9 s in: {open_late} open at our end, the listener at {fds_late} fds, baseline \
                 {})",
                before.fds
            )
        };
        anomalies.push(format!(
            "{} silent sockets stayed ESTABLISHED at our end for {HALF_OPEN_LIMIT:?} without a \
             byte, FIN or RST, {listener_side}; a probe byte then reached the listener ({} \
             answered with the multistream header). The burst overflowed the listen backlog \
             ({}): the kernel answered with SYN cookies and dropped the final ACKs it could not \
             queue, so the listener never saw these connections until a segment with data came",
            c.unseen_revived + c.unseen_closed,
            c.unseen_revived,
            listener.kind.backlog()
        ));
    }
    for (e, n) in &c.connect_failed {
        println!("    connect failed: {n} x {e}");
    }
    if !c.connect_failed.is_empty() {
        anomalies.push("some silent sockets could not connect".into());
    }
    if c.timed_out > MAX_PENDING {
        anomalies.push(format!(
            "{} sockets waited for the upgrade timeout, more than max_pending {MAX_PENDING}",
            c.timed_out
        ));
    }
    if !c.still_open.is_empty() {
        let ports: Vec<String> = c
            .still_open
            .iter()
            .take(8)
            .map(|(port, bytes)| format!("{port} ({bytes} bytes received)"))
            .collect();
        let stats = listener.stats().await?;
        return Err(format!(
            "the listener kept {} silent sockets open for more than {HALF_OPEN_LIMIT:?} and \
             did not answer a probe byte (our ports e.g. {}); listener now: {}",
            c.still_open.len(),
            ports.join(", "),
            stats.delta(&before_stats)
        ));
    }

    let baseline: Vec<_> = samples
        .iter()
        .filter(|s| s.at < flood_start)
        .map(|s| s.latency)
        .collect();
    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.at >= flood_start && s.at <= flood_end)
        .map(|s| s.latency)
        .collect();
    println!(
        "  busy client, {} KiB echoes: before the flood {}",
        BUSY_ECHO_LEN / 1024,
        latency_figures(&baseline, BUSY_BASELINE.as_secs_f64())
    );
    println!(
        "  busy client, {} KiB echoes: during the flood {}",
        BUSY_ECHO_LEN / 1024,
        latency_figures(&during, (flood_end - flood_start).as_secs_f64())
    );
    if during.is_empty() {
        anomalies.push("the busy client completed no echo during the flood".into());
    }

    let after = settle(listener, before.fds, &mut anomalies).await;
    let after_stats = listener.stats().await?;
    println!("  listener: {}", after_stats.delta(&before_stats));
    limit(
        CLOSE_LIMIT,
        "the busy client's disconnect",
        busy.disconnect(listener.peer),
    )
    .await??;
    let peak = peak.finish().await;
    Ok(PhaseReport {
        name: "half-open-3000".into(),
        before,
        peak,
        after,
        secs: started.elapsed().as_secs_f64(),
        figures: format!(
            "{HALF_OPEN} silent: {} refused, {} timed out, {} unseen; busy echo p50 {} -> {}",
            c.refused + c.refused_late,
            c.timed_out,
            c.unseen_revived + c.unseen_closed,
            ms(percentile(&baseline, 0.5)),
            ms(percentile(&during, 0.5))
        ),
        anomalies,
        windows,
    })
}

/// One socket that connects and never writes; it reads (and drops) what
/// the listener sends until the listener closes it. If nothing happens for
/// [`HALF_OPEN_LIMIT`], one byte goes out to learn whether the listener
/// still has the connection. `open` counts the sockets open at our end.
async fn silent_socket(target: SocketAddr, open: Arc<AtomicUsize>) -> Res<Silent> {
    let connect = tokio::net::TcpStream::connect(target);
    let mut socket = match tokio::time::timeout(DIAL_LIMIT, connect).await {
        Err(_) => {
            return Err(format!(
                "a silent socket's connect hung past {DIAL_LIMIT:?}"
            ))
        }
        Ok(Err(e)) => return Ok(Silent::ConnectFailed(e.kind().to_string())),
        Ok(Ok(s)) => s,
    };
    open.fetch_add(1, Ordering::Relaxed);
    let connected = Instant::now();
    let port = socket.local_addr().map_or(0, |a| a.port());
    let mut bytes = 0;
    let mut buf = [0u8; 512];
    let outcome = match tokio::time::timeout(
        HALF_OPEN_LIMIT,
        read_to_close(&mut socket, &mut buf, &mut bytes),
    )
    .await
    {
        Ok(reset) => Silent::Closed {
            after: connected.elapsed(),
            bytes,
            reset,
        },
        Err(_) => {
            let probe = async {
                if socket.write_all(b"\n").await.is_err() {
                    return Some(false);
                }
                match tokio::time::timeout(Duration::from_secs(3), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => Some(true),
                    Ok(_) => Some(false),
                    Err(_) => None,
                }
            };
            match probe.await {
                Some(revived) => Silent::Unseen { revived },
                None => Silent::StillOpen { bytes, port },
            }
        }
    };
    open.fetch_sub(1, Ordering::Relaxed);
    Ok(outcome)
}

/// Reads until the end of file (false) or an error such as a reset (true),
/// counting the bytes.
async fn read_to_close(
    socket: &mut tokio::net::TcpStream,
    buf: &mut [u8],
    bytes: &mut usize,
) -> bool {
    loop {
        match socket.read(buf).await {
            Ok(0) => return false,
            Ok(n) => *bytes += n,
            Err(_) => return true,
        }
    }
}

/// One echo of the busy client: when it finished and how long it took.
struct EchoSample {
    at: Instant,
    latency: Duration,
}

/// Echoes [`BUSY_ECHO_LEN`] bytes again and again until `stop`.
async fn busy_echo(
    control: libp2p_stream::Control,
    peer: PeerId,
    stop: Arc<AtomicBool>,
) -> Res<Vec<EchoSample>> {
    let mut samples = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let data = pattern(1_000_000 + n, BUSY_ECHO_LEN);
        let t = Instant::now();
        let reply = limit(
            ECHO_LIMIT,
            "the busy client's echo",
            echo(control.clone(), peer, &data),
        )
        .await?
        .map_err(|e| format!("the busy client's echo {n} failed: {e}"))?;
        compare(&format!("busy echo {n}"), &data, &reply)?;
        samples.push(EchoSample {
            at: Instant::now(),
            latency: t.elapsed(),
        });
        n += 1;
    }
    Ok(samples)
}

fn latency_figures(latencies: &[Duration], secs: f64) -> String {
    if latencies.is_empty() {
        return "no echo completed".into();
    }
    let bytes = (latencies.len() * BUSY_ECHO_LEN) as f64;
    format!(
        "{} echoes in {secs:.1} s ({:.1} MiB/s each way), latency p50 {}, p99 {}, max {}",
        latencies.len(),
        bytes / MIB / secs,
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.99)),
        ms(percentile(latencies, 1.0))
    )
}

// ---------------------------------------------------------------- phase 4

/// 2000 sequential connect / echo / disconnect cycles from fresh clients.
async fn phase_churn(listener: &mut Listener) -> Res<PhaseReport> {
    let before_stats = listener.stats().await?;
    let before = listener.sample();
    let kernel = KernelCounters::read();
    let peak = PeakSampler::start(listener.pid);
    let mut windows = Vec::new();
    listener.window(None).await?;
    let started = Instant::now();
    let checkpoint = |listener: &Listener, cycles: usize, conns: u64| {
        let s = listener.sample();
        println!(
            "  after {cycles:>4} cycles: listener rss {}, fds {}, {conns} connections",
            mib(s.rss_kib),
            s.fds
        );
        s
    };
    let conns = listener.stats().await?.get("conns");
    let mut checkpoints = vec![checkpoint(listener, 0, conns)];
    for cycle in 0..CHURN_CYCLES {
        let mut client = Client::new();
        limit(DIAL_LIMIT, "a churn dial", client.connect(&listener.addr))
            .await?
            .map_err(|e| format!("cycle {cycle}: the dial failed: {e}"))?;
        let data = pattern(2_000_000 + cycle as u64, CHURN_ECHO_LEN);
        let reply = limit(
            ECHO_LIMIT,
            "a churn echo",
            echo(client.control.clone(), listener.peer, &data),
        )
        .await?
        .map_err(|e| format!("cycle {cycle}: the echo failed: {e}"))?;
        compare(&format!("cycle {cycle}"), &data, &reply)?;
        limit(
            CLOSE_LIMIT,
            "a churn disconnect",
            client.disconnect(listener.peer),
        )
        .await?
        .map_err(|e| format!("cycle {cycle}: {e}"))?;
        if (cycle + 1) % 1000 == 0 {
            let conns = listener.stats().await?.get("conns");
            checkpoints.push(checkpoint(listener, cycle + 1, conns));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = CHURN_CYCLES as f64 / secs;
    println!("  {CHURN_CYCLES} cycles in {secs:.2} s: {rate:.0} cycles/s");
    windows.push(listener.window(Some("cycles")).await?);

    let mut anomalies = Vec::new();
    let (first, mid, last) = (checkpoints[0], checkpoints[1], checkpoints[2]);
    if last.fds > first.fds + 2 {
        anomalies.push(format!(
            "descriptors grew over the cycles: {} -> {} -> {}",
            first.fds, mid.fds, last.fds
        ));
    }
    // Allocators keep some memory; growth between 1000 and 2000 cycles is
    // what a leak would show.
    if last.rss_kib > mid.rss_kib + mid.rss_kib / 5 + 2048 {
        anomalies.push(format!(
            "memory grew between 1000 and 2000 cycles: {} -> {}",
            mib(mid.rss_kib),
            mib(last.rss_kib)
        ));
    }
    let after = settle(listener, before.fds, &mut anomalies).await;
    let peak = peak.finish().await;
    let after_stats = listener.stats().await?;
    println!("  listener: {}", after_stats.delta(&before_stats));
    println!(
        "  kernel (system-wide): {}",
        KernelCounters::read().delta(&kernel)
    );
    Ok(PhaseReport {
        name: "churn-2000".into(),
        before,
        peak,
        after,
        secs: started.elapsed().as_secs_f64(),
        figures: format!(
            "{CHURN_CYCLES} cycles, {rate:.0} cycles/s, rss {} / {} / {}, fds {} / {} / {} at \
             0 / 1000 / 2000",
            mib(first.rss_kib),
            mib(mid.rss_kib),
            mib(last.rss_kib),
            first.fds,
            mid.fds,
            last.fds
        ),
        anomalies,
        windows,
    })
}

// ============================================================ the clients

/// Identities handed out to clients, one each.
static NEXT_IDENTITY: AtomicU32 = AtomicU32::new(0);

/// One rust-libp2p swarm with one connection to the listener, driven by
/// its own task (`rust_peer::spawn_driver`).
struct Client {
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<TheirEvent>,
}

impl Client {
    /// A fresh swarm with a new identity. Call it on the tokio runtime.
    fn new() -> Client {
        let swarm = client_swarm(NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed));
        let control = swarm.behaviour().stream.new_control();
        let (commands, events) = spawn_driver(swarm);
        Client {
            control,
            commands,
            events,
        }
    }

    /// Dials `addr`; `Err` with the swarm's reason if the connection was
    /// not established.
    async fn connect(&mut self, addr: &Multiaddr) -> Res<()> {
        let addr = addr.clone();
        let (tx, rx) = oneshot::channel();
        self.run(Box::new(move |swarm| {
            let _ = tx.send(swarm.dial(addr).map_err(|e| format!("{e:?}")));
        }))?;
        rx.await.map_err(|_| "the swarm task ended".to_string())??;
        loop {
            match self.events.recv().await {
                None => return Err("the swarm task ended".into()),
                Some(SwarmEvent::ConnectionEstablished { .. }) => return Ok(()),
                Some(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                    return Err(format!("{error:?}"))
                }
                Some(SwarmEvent::ConnectionClosed { cause, .. }) => {
                    return Err(format!("closed during the dial: {cause:?}"))
                }
                Some(_) => {}
            }
        }
    }

    /// Whether the swarm has reported its connection closed.
    fn saw_close(&mut self) -> bool {
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, SwarmEvent::ConnectionClosed { .. }) {
                return true;
            }
        }
        false
    }

    /// Closes the connection and waits until the swarm says it is closed;
    /// then the swarm is dropped.
    async fn disconnect(mut self, peer: PeerId) -> Res<()> {
        self.run(Box::new(move |swarm| {
            let _ = swarm.disconnect_peer_id(peer);
        }))?;
        loop {
            match self.events.recv().await {
                None => return Err("the swarm task ended before the close".into()),
                Some(SwarmEvent::ConnectionClosed { .. }) => return Ok(()),
                Some(_) => {}
            }
        }
    }

    fn run(&self, command: Command) -> Res<()> {
        self.commands
            .send(command)
            .map_err(|_| "the swarm task ended".to_string())
    }
}

/// The swarm of client `index`: `rust_peer`'s behaviours with an Ed25519
/// key made from the index (distinct for every client of the run).
fn client_swarm(index: u32) -> libp2p::Swarm<Behaviour> {
    let mut secret = [0x5a_u8; 32];
    secret[..4].copy_from_slice(&index.to_le_bytes());
    secret[4..8].copy_from_slice(b"load");
    let key = identity::Keypair::ed25519_from_bytes(secret).expect("any 32 bytes are a key");
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("the TCP transport")
        .with_behaviour(|k| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/sansp2p-load/1.0.0".into(),
                k.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            stream: libp2p_stream::Behaviour::new(),
        })
        .expect("the behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// One echo: open a stream, send everything, half-close, read to the end.
async fn echo(mut control: libp2p_stream::Control, peer: PeerId, data: &[u8]) -> Res<Vec<u8>> {
    let mut stream = control
        .open_stream(peer, StreamProtocol::new(ECHO))
        .await
        .map_err(|e| format!("open_stream: {e}"))?;
    stream
        .write_all(data)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.close().await.map_err(|e| format!("close: {e}"))?;
    let mut reply = Vec::with_capacity(data.len());
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}

/// Disconnects every client at once and waits for all the closes.
async fn disconnect_all(clients: Vec<Client>, peer: PeerId) -> Res<()> {
    let started = Instant::now();
    let n = clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(limit(CLOSE_LIMIT, "a disconnect", c.disconnect(peer))))
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())???;
    }
    println!(
        "  {n} connections closed by the clients in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// =========================================== the listener, seen from here

/// The child process and what the parent knows of it.
struct Listener {
    kind: ListenerKind,
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// Its threads' times at the start of the current window.
    times: ThreadTimes,
    /// This process's (the clients') threads' times, likewise.
    client_times: ThreadTimes,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    addr: Multiaddr,
    peer: PeerId,
    socket: SocketAddr,
}

impl Listener {
    /// Starts this program with `--listener` and waits for its address.
    fn spawn(kind: ListenerKind) -> Res<Listener> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Process::new(exe)
            .arg("--listener")
            .arg(kind.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let pid = child.id();
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            match lines.try_recv() {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening ") {
                        break addr.to_string();
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err("the listener exited before listening".into())
                }
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err("the listener did not listen within 10 s".into());
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
            }
        };
        let addr: Multiaddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let mut peer = None;
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(a),
                Protocol::Tcp(p) => port = Some(p),
                Protocol::P2p(id) => peer = Some(id),
                _ => {}
            }
        }
        let (Some(peer), Some(ip), Some(port)) = (peer, ip, port) else {
            return Err(format!("unexpected listen address {addr}"));
        };
        Ok(Listener {
            kind,
            child: Arc::new(Mutex::new(child)),
            pid,
            times: thread_times(pid),
            client_times: thread_times(std::process::id()),
            stdin,
            lines,
            addr,
            peer,
            socket: SocketAddr::from((ip, port)),
        })
    }

    fn sample(&self) -> Sample {
        sample(self.pid)
    }

    /// The listener's counters, asked on stdin.
    async fn stats(&mut self) -> Res<Stats> {
        writeln!(self.stdin, "stats")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the listener's stdin: {e}"))?;
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if let Some(rest) = line.strip_prefix("stats ") {
                    return Ok(Stats::parse(rest));
                }
            }
            Err("the listener exited".to_string())
        };
        limit(Duration::from_secs(10), "the listener's stats", wait).await?
    }

    /// The listener's measurements since the last call: its answer to
    /// `window` and its threads' times. `what` names the part of the phase
    /// (the line is printed); `None` only starts a new window.
    async fn window(&mut self, what: Option<&str>) -> Res<String> {
        writeln!(self.stdin, "window")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the listener's stdin: {e}"))?;
        let lines = &mut self.lines;
        let wait = async {
            while let Some(line) = lines.recv().await {
                if let Some(rest) = line.strip_prefix("window ") {
                    return Ok(rest.to_string());
                }
            }
            Err("the listener exited".to_string())
        };
        let text = limit(Duration::from_secs(10), "the listener's window", wait).await??;
        let times = thread_times(self.pid);
        let cpu = times.since(&self.times);
        self.times = times;
        let client_times = thread_times(std::process::id());
        let (client_cpu, client_wait) = client_times.totals_since(&self.client_times);
        self.client_times = client_times;
        let line = format!(
            "{}: {cpu}; the clients' process: cpu {client_cpu:.2} s, runnable waiting \
             {client_wait:.2} s; {text}",
            what.unwrap_or("-")
        );
        if what.is_some() {
            println!("  listener, {line}");
        }
        Ok(line)
    }

    /// Asks the listener to quit; kills it if it does not.
    fn stop(&mut self) {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        let Ok(mut child) = self.child.lock() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("load: the listener did not quit; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The listener's counters (`stats` line), by name.
struct Stats(BTreeMap<String, u64>);

impl Stats {
    fn parse(line: &str) -> Stats {
        Stats(
            line.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.rsplit_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// The counters that grew since `earlier`, and the connections now.
    fn delta(&self, earlier: &Stats) -> String {
        let mut parts = vec![format!("{} connections now", self.get("conns"))];
        for (k, v) in &self.0 {
            if matches!(k.as_str(), "conns" | "peak" | "open_streams") {
                continue;
            }
            let d = v.saturating_sub(earlier.get(k));
            if d > 0 {
                parts.push(format!("{k} +{d}"));
            }
        }
        parts.push(format!("{} echo streams open", self.get("open_streams")));
        parts.join(", ")
    }
}

/// The listener's resident memory and open descriptors.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    let mut status = String::new();
    let rss_kib = std::fs::File::open(format!("/proc/{pid}/status"))
        .and_then(|mut f| f.read_to_string(&mut status))
        .ok()
        .and_then(|_| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample { rss_kib, fds }
}

/// The time each of the listener's threads spent on a CPU and runnable
/// waiting for one (`/proc/<pid>/task/<tid>/schedstat`, in ns), by thread.
struct ThreadTimes {
    at: Instant,
    threads: HashMap<u32, (String, u64, u64)>,
}

fn thread_times(pid: u32) -> ThreadTimes {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|f| f.parse().unwrap_or(0));
        let (run, wait) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        threads.insert(tid, (name.trim().to_string(), run, wait));
    }
    ThreadTimes {
        at: Instant::now(),
        threads,
    }
}

impl ThreadTimes {
    /// Each thread's name and its seconds on a CPU and runnable waiting
    /// since `earlier`.
    fn deltas<'a>(&'a self, earlier: &'a ThreadTimes) -> impl Iterator<Item = (&'a str, f64, f64)> {
        self.threads.iter().map(|(tid, (name, run, wait))| {
            let (run0, wait0) = earlier
                .threads
                .get(tid)
                .map_or((0, 0), |(_, r, w)| (*r, *w));
            let secs = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e9;
            (name.as_str(), secs(*run, run0), secs(*wait, wait0))
        })
    }

    /// Seconds on a CPU and runnable waiting since `earlier`, all threads.
    fn totals_since(&self, earlier: &ThreadTimes) -> (f64, f64) {
        self.deltas(earlier)
            .fold((0.0, 0.0), |(r, w), (_, run, wait)| (r + run, w + wait))
    }

    /// CPU time since `earlier`, in all and by thread name, and the time
    /// the threads were runnable but waited for a CPU.
    fn since(&self, earlier: &ThreadTimes) -> String {
        let secs = (self.at - earlier.at).as_secs_f64();
        let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
        let (mut run_all, mut wait_all) = (0.0, 0.0);
        for (name, run, wait) in self.deltas(earlier) {
            *by_name.entry(name).or_default() += run;
            run_all += run;
            wait_all += wait;
        }
        let threads: Vec<String> = by_name
            .iter()
            .filter(|(_, run)| **run >= 0.005)
            .map(|(name, run)| format!("{name} {run:.2}"))
            .collect();
        format!(
            "cpu {run_all:.2} s in {secs:.2} s ({:.2} cores: {}), runnable waiting for a cpu \
             {wait_all:.2} s",
            run_all / secs.max(1e-9),
            threads.join(", ")
        )
    }
}

/// Samples the listener every 100 ms and keeps the highest figures.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Sample>,
}

impl PeakSampler {
    fn start(pid: u32) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = sample(pid);
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = sample(pid);
                peak.rss_kib = peak.rss_kib.max(s.rss_kib);
                peak.fds = peak.fds.max(s.fds);
            }
            peak
        });
        PeakSampler { stop, task }
    }

    async fn finish(self) -> Sample {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the sampler does not panic")
    }
}

/// Waits (up to [`SETTLE_LIMIT`]) until the listener holds no more
/// descriptors than `baseline`; notes it if it does not get there.
async fn settle(listener: &Listener, baseline: usize, anomalies: &mut Vec<String>) -> Sample {
    let started = Instant::now();
    loop {
        let s = listener.sample();
        if s.fds <= baseline {
            println!(
                "  listener back to its baseline of {baseline} fds {:.2} s after the phase \
                 (now {}), rss {}",
                started.elapsed().as_secs_f64(),
                s.fds,
                mib(s.rss_kib)
            );
            return s;
        }
        if started.elapsed() > SETTLE_LIMIT {
            println!(
                "  listener still holds {} fds {SETTLE_LIMIT:?} after the phase (baseline \
                 {baseline})",
                s.fds
            );
            anomalies.push(format!(
                "descriptors did not return to the baseline: {} after {SETTLE_LIMIT:?}, \
                 baseline {baseline}",
                s.fds
            ));
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kernel's TCP counters that tell of listen-queue trouble
/// (`/proc/net/netstat`, `/proc/net/snmp`). They count the whole machine.
struct KernelCounters(BTreeMap<String, u64>);

/// The counters [`KernelCounters`] reports.
const KERNEL_COUNTERS: [&str; 8] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "TcpExt.SyncookiesRecv",
    "TcpExt.SyncookiesFailed",
    "TcpExt.TCPSynRetrans",
    "Tcp.EstabResets",
];

impl KernelCounters {
    fn read() -> KernelCounters {
        let mut all = BTreeMap::new();
        for path in ["/proc/net/netstat", "/proc/net/snmp"] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            // Lines come in pairs: `Group: names...` then `Group: values...`.
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let (Some((group, names)), Some((_, values))) =
                    (names.split_once(':'), values.split_once(':'))
                else {
                    continue;
                };
                for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = value.parse() {
                        all.insert(format!("{group}.{name}"), v);
                    }
                }
            }
        }
        KernelCounters(all)
    }

    /// The reported counters that grew since `earlier`.
    fn delta(&self, earlier: &KernelCounters) -> String {
        let parts: Vec<String> = KERNEL_COUNTERS
            .iter()
            .filter_map(|k| {
                let d = self.0.get(*k)?.saturating_sub(*earlier.0.get(*k)?);
                (d > 0).then(|| format!("{} +{d}", k.split_once('.').map_or(*k, |(_, n)| n)))
            })
            .collect();
        if parts.is_empty() {
            "no listen-queue overflow, no SYN cookies".into()
        } else {
            parts.join(", ")
        }
    }
}

// ============================================================== reporting

/// The figures of one phase.
struct PhaseReport {
    name: String,
    before: Sample,
    peak: Sample,
    after: Sample,
    secs: f64,
    figures: String,
    anomalies: Vec<String>,
    /// The listener's measurements over parts of the phase.
    windows: Vec<String>,
}

impl PhaseReport {
    fn line(&self) -> String {
        format!(
            "PHASE {}: rss {} -> {} (peak {}), fds {} -> {} (peak {}), {}, {:.1} s",
            self.name,
            mib(self.before.rss_kib),
            mib(self.after.rss_kib),
            mib(self.peak.rss_kib),
            self.before.fds,
            self.after.fds,
            self.peak.fds,
            self.figures,
            self.secs
        )
    }
}

fn print_summary(reports: &[PhaseReport], elapsed: Duration) {
    let (phases, total) = reports.split_at(reports.len() - 1);
    let total = &total[0];
    println!();
    println!("===== SUMMARY =====");
    for r in phases {
        println!("{}", r.line());
        for w in &r.windows {
            println!("    listener, {w}");
        }
    }
    println!(
        "listener overall: rss {} -> {}, fds {} -> {}",
        mib(total.before.rss_kib),
        mib(total.after.rss_kib),
        total.before.fds,
        total.after.fds
    );
    if total.anomalies.is_empty() {
        println!("anomalies: none");
    } else {
        println!("anomalies:");
        for a in &total.anomalies {
            println!("  - {a}");
        }
    }
    println!("total time: {:.1} s", elapsed.as_secs_f64());
}

// ================================================================ helpers

const MIB: f64 = 1024.0 * 1024.0;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

/// Fails with `what` if `fut` takes longer than `limit`.
async fn limit<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Res<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("{what} did not finish within {limit:?} (hang)"))
}

/// Pseudo-random bytes, different for every `seed` (xorshift64).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// FNV-1a, 64 bits.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `Err` naming `what` if the echo differs from what was sent.
fn compare(what: &str, sent: &[u8], got: &[u8]) -> Res<()> {
    if sent.len() == got.len() && fnv1a(sent) == fnv1a(got) && sent == got {
        return Ok(());
    }
    let first_difference = sent
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(sent.len().min(got.len()));
    Err(format!(
        "CHECKSUM MISMATCH on {what}: sent {} bytes (FNV-1a {:#018x}), got {} bytes (FNV-1a \
         {:#018x}), first difference at byte {first_difference}",
        sent.len(),
        fnv1a(sent),
        got.len(),
        fnv1a(got)
    ))
}
