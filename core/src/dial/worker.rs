//! The [`Dialer`]: per-peer dial workers with dial sync, over the ranker,
//! the [`Limiter`], the [`Backoff`] table and the [`BlackHoleFilter`].
//!
//! Follows go-libp2p's `dial_worker.go`, `dial_sync.go` and `swarm_dial.go`:
//!
//! - **Dial sync.** All requests for one peer share one worker. Each request
//!   brings its addresses; an address already known to the worker is joined
//!   (in flight or queued), one that failed before counts as failed for the
//!   new request at once, a new one is queued. The first connection answers
//!   **every** waiting request of the peer (go-libp2p answers the requests
//!   that listed the successful address and the others when their own
//!   addresses run out, through `bestAcceptableConnToPeer`: the same
//!   connection in the end).
//! - **Filtering per request** (go's `addrsForDial`): duplicates removed,
//!   relayed addresses dropped under [`DialOpts::force_direct`], the
//!   low-priority filter, then the black-hole filter (refused addresses are
//!   listed in the final error as [`AddrFailure::BlackHoled`]), then ranking
//!   ([`RankerConfig::NO_DELAY`] for [`DialOpts::simultaneous_connect`]).
//! - **The worker's schedule.** Addresses wait in a queue sorted by delay
//!   (measured from the worker's start). The next batch is every queued
//!   address with the head's delay. The batch is due at once when nothing is
//!   in flight; otherwise at `start + head delay`, pushed back to the latest
//!   expected end of a TCP upgrade: [`Dialer::handle_dial_connected`] on a
//!   public address holds new dials for [`DialerConfig::tcp_upgrade_hold`]
//!   (250 ms). A success ends the worker; a failure reschedules (new dials
//!   only ever follow a failure, a timer or a new request).
//! - **Backoff** is checked when an address's batch comes up (go's
//!   `dialNextAddr`); a backed-off address fails with [`AddrFailure::Backoff`]
//!   without a dial, and a later request may queue it again (go deletes the
//!   tracked dial for that reason). [`DialOpts::force_direct`] ignores
//!   backoff. Failures add backoff except cancellations; successes clear the
//!   peer's backoff.
//! - **Limits.** Each dial goes through the [`Limiter`]; the per-attempt
//!   timeout ([`DialerConfig::dial_timeout`], 15 s, or
//!   [`DialerConfig::dial_timeout_local`], 5 s, for private addresses) starts
//!   when the limiter lets it run, as in go-libp2p's `executeDial`.
//! - **Deadlines.** Each request is answered exactly once, at the latest at
//!   its deadline ([`DialerConfig::request_timeout`], 60 s, go's
//!   `DialPeerTimeout`). When no request waits on a worker any more, its
//!   attempts are cancelled ([`Action::CancelAttempt`]) and the worker ends.
//! - **Black holes.** Every finished dial that was started is recorded,
//!   including dials cancelled because another one won (go-libp2p's
//!   `dialAddr` records every error, cancellations included).
//!
//! - **Memory and cost.** Requests are capped ([`DialerConfig::max_requests`]),
//!   addresses per request too, workers live only while a request waits on
//!   them, and attempts only while their worker lives. Workers, requests and
//!   attempts sit in generational slabs: [`RequestId`] and [`AttemptId`] are
//!   slab keys, so every input finds its state by index, and a stale id is
//!   refused ([`DialerError::UnknownAttempt`]) even after its slot is reused.
//!   Deadlines are lazily deleted (an entry counts only while its owner still
//!   holds that deadline): request and attempt deadlines, being `now` plus a
//!   fixed timeout, go to FIFOs that stay sorted by themselves (O(1)); batch
//!   timers and odd timeouts to a heap. Stale entries leave the fronts after
//!   every input (so [`Dialer::poll_timeout`] is exact) and the rest at their
//!   own deadline. Nothing scans all peers: each input costs O(1) amortized
//!   plus O(log n) for a batch timer. `cargo bench -p sansp2p --bench dial`
//!   prints the cost per event at 1k, 10k and 100k peers.
//!
//! **When to call again:** after any input or command, drain
//! [`Dialer::poll_action`] and [`Dialer::poll_event`] until both return
//! `None`, then sleep until [`Dialer::poll_timeout`] (or the next input) and
//! call [`Dialer::handle_timeout`]; spurious calls are harmless.
//!
//! ```
//! use sansp2p::dial::{Action, Addr, ConnectionRef, DialOpts, Dialer, DialerConfig, Event};
//! use sansp2p::{Instant, Keypair};
//!
//! let local = Keypair::from_secret_bytes([1; 32]).peer_id();
//! let remote = Keypair::from_secret_bytes([2; 32]).peer_id();
//! let addr = Addr::from_bytes(vec![0x04, 1, 2, 3, 4, 0x06, 0, 1]).unwrap(); // /ip4/1.2.3.4/tcp/1
//! let mut dialer = Dialer::new(local, DialerConfig::default()).unwrap();
//! let now = Instant::ZERO;
//! let request = dialer.dial(now, remote, [addr], DialOpts::default()).unwrap();
//! let Some(Action::Dial { attempt, .. }) = dialer.poll_action() else { panic!() };
//! dialer.handle_dial_succeeded(now, attempt, ConnectionRef(7)).unwrap();
//! match dialer.poll_event() {
//!     Some(Event::RequestDone { request: r, result: Ok(ConnectionRef(7)), .. }) => assert_eq!(r, request),
//!     other => panic!("{other:?}"),
//! }
//! ```

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::collections::HashMap;
use slotmap::{Key, KeyData, SlotMap};
use smallvec::SmallVec;

use super::backoff::{Backoff, BackoffConfig, BackoffConfigError};
use super::black_hole::{BlackHoleConfigError, BlackHoleFilter, BlackHoleFilterConfig};
use super::limiter::{Limiter, LimiterConfig, LimiterConfigError};
use super::rank::{self, Features, RankerConfig, RankerConfigError};
use super::timers::Deadlines;
use super::{dedup_addrs, Addr};
use crate::identity::PeerId;
use crate::time::Instant;

/// Identifies a dial request ([`Dialer::dial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies one dial of one address ([`Action::Dial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

/// The caller's handle of an established connection, passed in
/// [`Dialer::handle_dial_succeeded`] and handed back to every request it
/// answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionRef(pub u64);

/// Options of one [`Dialer::dial`] request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DialOpts {
    /// Skip relayed addresses and ignore backoff (go-libp2p's
    /// `WithForceDirectDial`).
    pub force_direct: bool,
    /// Dial every address at once (go-libp2p's simultaneous connect, used by
    /// hole punching: the no-delay ranker).
    pub simultaneous_connect: bool,
    /// This request's deadline instead of [`DialerConfig::request_timeout`].
    pub timeout: Option<Duration>,
}

impl DialOpts {
    /// Sets [`DialOpts::force_direct`].
    pub fn force_direct(mut self) -> Self {
        self.force_direct = true;
        self
    }

    /// Sets [`DialOpts::simultaneous_connect`].
    pub fn simultaneous_connect(mut self) -> Self {
        self.simultaneous_connect = true;
        self
    }

    /// Sets [`DialOpts::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How a dial attempt failed, as the caller reports it in
/// [`Dialer::handle_dial_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FailureClass {
    /// The remote refused the connection.
    #[error("connection refused")]
    Refused,
    /// No route, host unreachable, or the like.
    #[error("unreachable")]
    Unreachable,
    /// The transport gave up waiting.
    #[error("timed out")]
    Timeout,
    /// The security or muxer upgrade failed.
    #[error("upgrade failed")]
    Upgrade,
    /// The remote proved to be another peer.
    #[error("wrong peer")]
    WrongPeer,
    /// No transport can dial this address.
    #[error("no transport for address")]
    NoTransport,
    /// The attempt was cancelled (adds no backoff).
    #[error("cancelled")]
    Cancelled,
    /// Any other failure.
    #[error("dial failed")]
    Other,
}

/// Why one address did not give a connection, in [`DialError::errors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AddrFailure {
    /// The dial failed as reported.
    #[error("{0}")]
    Attempt(FailureClass),
    /// No result within the per-attempt timeout.
    #[error("attempt timed out")]
    TimedOut,
    /// In dial backoff; not dialed (go-libp2p `ErrDialBackoff`).
    #[error("dial backoff")]
    Backoff,
    /// Refused by black-hole detection (go-libp2p `ErrDialRefusedBlackHole`).
    #[error("dial refused because of black hole")]
    BlackHoled,
    /// The limiter held too many jobs to take this one.
    #[error("too many dials")]
    TooManyDials,
}

/// The overall reason in a [`DialError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialErrorCause {
    /// Every address failed (go-libp2p `ErrAllDialsFailed`).
    AllDialsFailed,
    /// The request had no address (go-libp2p `ErrNoAddresses`).
    NoAddresses,
    /// Every address was filtered out (go-libp2p `ErrNoGoodAddresses`).
    NoGoodAddresses,
    /// The request's deadline passed.
    Timeout,
    /// [`Dialer::cancel`].
    Cancelled,
}

impl fmt::Display for DialErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DialErrorCause::AllDialsFailed => "all dials failed",
            DialErrorCause::NoAddresses => "no addresses",
            DialErrorCause::NoGoodAddresses => "no good addresses",
            DialErrorCause::Timeout => "dial request timed out",
            DialErrorCause::Cancelled => "dial request cancelled",
        })
    }
}

/// A failed dial request: the cause and what happened to each address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dialing {peer:?}: {cause} ({n} address errors)", n = errors.len())]
pub struct DialError {
    /// The peer dialed.
    pub peer: PeerId,
    /// The overall reason.
    pub cause: DialErrorCause,
    /// Each address that failed, in the order it failed.
    pub errors: Vec<(Addr, AddrFailure)>,
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Dial `addr` of `peer`; report with `handle_dial_*(attempt, …)`.
    Dial {
        /// The attempt.
        attempt: AttemptId,
        /// The peer.
        peer: PeerId,
        /// The address.
        addr: Addr,
    },
    /// Abort the attempt; the dialer has forgotten it, later results for it
    /// are refused with [`DialerError::UnknownAttempt`] (a connection that
    /// still comes up is the caller's to keep or close).
    CancelAttempt {
        /// The attempt.
        attempt: AttemptId,
    },
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The answer to a request; exactly one per [`RequestId`].
    RequestDone {
        /// The request.
        request: RequestId,
        /// Its peer.
        peer: PeerId,
        /// The connection, or why there is none.
        result: Result<ConnectionRef, DialError>,
    },
}

/// Why a [`Dialer`] command or input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialerError {
    /// The peer is the local peer (go-libp2p `ErrDialToSelf`).
    #[error("dial to self attempted")]
    DialToSelf,
    /// [`DialerConfig::max_requests`] requests are pending.
    #[error("too many pending dial requests")]
    TooManyRequests,
    /// No such pending request.
    #[error("unknown dial request {0:?}")]
    UnknownRequest(RequestId),
    /// No such running attempt (finished, cancelled, or never started).
    #[error("unknown dial attempt {0:?}")]
    UnknownAttempt(AttemptId),
}

/// Limits and delays of a [`Dialer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialerConfig {
    /// Delays of the default ranker.
    pub ranker: RankerConfig,
    /// fd and per-peer limits.
    pub limiter: LimiterConfig,
    /// Backoff after failed dials.
    pub backoff: BackoffConfig,
    /// UDP and IPv6 black-hole detection.
    pub black_hole: BlackHoleFilterConfig,
    /// Per-attempt timeout (go-libp2p `defaultDialTimeout`, 15 s).
    pub dial_timeout: Duration,
    /// Per-attempt timeout for private addresses when shorter (go-libp2p
    /// `defaultDialTimeoutLocal`, 5 s).
    pub dial_timeout_local: Duration,
    /// Default deadline of a request (go-libp2p `DialPeerTimeout`, 60 s).
    pub request_timeout: Duration,
    /// How long a public TCP dial that completed its handshake holds new
    /// dials while it upgrades (go-libp2p `PublicTCPDelay`, 250 ms).
    pub tcp_upgrade_hold: Duration,
    /// Pending requests at once (ours: 100 000).
    pub max_requests: usize,
    /// Addresses taken from one request; later ones are ignored (go-libp2p's
    /// `maximumResolvedAddresses`, 100).
    pub max_addrs_per_request: usize,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            ranker: RankerConfig::default(),
            limiter: LimiterConfig::default(),
            backoff: BackoffConfig::default(),
            black_hole: BlackHoleFilterConfig::default(),
            dial_timeout: Duration::from_secs(15),
            dial_timeout_local: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            tcp_upgrade_hold: Duration::from_millis(250),
            max_requests: 100_000,
            max_addrs_per_request: 100,
        }
    }
}

/// A [`DialerConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialerConfigError {
    /// The ranker's delays.
    #[error(transparent)]
    Ranker(#[from] RankerConfigError),
    /// The limiter's limits.
    #[error(transparent)]
    Limiter(#[from] LimiterConfigError),
    /// The backoff table.
    #[error(transparent)]
    Backoff(#[from] BackoffConfigError),
    /// A black-hole counter.
    #[error(transparent)]
    BlackHole(#[from] BlackHoleConfigError),
    /// A timeout of zero (named by field).
    #[error("dialer timeout `{0}` must not be zero")]
    ZeroTimeout(&'static str),
    /// A limit of zero (named by field).
    #[error("dialer limit `{0}` must be at least 1")]
    ZeroLimit(&'static str),
}

impl DialerConfig {
    /// Checks this configuration and the ones it holds.
    pub fn validate(&self) -> Result<(), DialerConfigError> {
        self.ranker.validate()?;
        self.limiter.validate()?;
        self.backoff.validate()?;
        if let Some(c) = self.black_hole.udp {
            c.validate()?;
        }
        if let Some(c) = self.black_hole.ipv6 {
            c.validate()?;
        }
        for (name, d) in [
            ("dial_timeout", self.dial_timeout),
            ("dial_timeout_local", self.dial_timeout_local),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(DialerConfigError::ZeroTimeout(name));
            }
        }
        if self.max_requests == 0 {
            return Err(DialerConfigError::ZeroLimit("max_requests"));
        }
        if self.max_addrs_per_request == 0 {
            return Err(DialerConfigError::ZeroLimit("max_addrs_per_request"));
        }
        Ok(())
    }
}

slotmap::new_key_type! {
    struct WorkerKey;
    struct AttemptKey;
    struct RequestKey;
}

fn attempt_id(key: AttemptKey) -> AttemptId {
    AttemptId(key.data().as_ffi())
}

fn attempt_key(id: AttemptId) -> AttemptKey {
    slab_key(id.0).into()
}

fn request_id(key: RequestKey) -> RequestId {
    RequestId(key.data().as_ffi())
}

fn request_key(id: RequestId) -> RequestKey {
    slab_key(id.0).into()
}

/// The slab key an id was made from, or the null key (found nowhere) for a
/// number no key gives: several numbers decode to the same key, and only
/// the one we handed out may name it.
fn slab_key(id: u64) -> KeyData {
    let key = KeyData::from_ffi(id);
    if key.as_ffi() == id {
        key
    } else {
        KeyData::default()
    }
}

/// What the dialer keeps of an address's [`Features`] once it is ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Traits(u8);

impl Traits {
    const PUBLIC: u8 = 1;
    const PRIVATE: u8 = 2;
    const USES_FD: u8 = 4;
    const UDP: u8 = 8;
    const IP6: u8 = 16;

    fn of(f: &Features) -> Self {
        let mut bits = 0;
        for (on, bit) in [
            (f.public, Self::PUBLIC),
            (f.private, Self::PRIVATE),
            (f.uses_fd(), Self::USES_FD),
            (f.udp, Self::UDP),
            (f.ip6, Self::IP6),
        ] {
            if on {
                bits |= bit;
            }
        }
        Traits(bits)
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn record_with(self, filter: &mut BlackHoleFilter, success: bool) {
        filter.record_kind(
            self.has(Self::PUBLIC),
            self.has(Self::UDP),
            self.has(Self::IP6),
            success,
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    Queued,
    InFlight(AttemptKey),
    Failed(AddrFailure),
}

/// One address of a worker.
#[derive(Debug, Clone)]
struct Tracked {
    addr: Addr,
    state: TrackState,
    traits: Traits,
    /// Ignore backoff (set by a `force_direct` request).
    force: bool,
}

#[derive(Debug, Clone)]
struct Worker {
    peer: PeerId,
    start: Instant,
    addrs: Vec<Tracked>,
    /// (delay from `start`, index into `addrs`), sorted by delay, stable.
    queue: Vec<(Duration, u32)>,
    requests: SmallVec<[RequestKey; 2]>,
    in_flight: u32,
    /// In-flight attempts upgrading a TCP connection (holding new dials).
    holds: u32,
    wake: Option<Instant>,
}

impl Worker {
    fn enqueue(&mut self, delay: Duration, index: u32) {
        let at = self.queue.partition_point(|(d, _)| *d <= delay);
        self.queue.insert(at, (delay, index));
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    worker: WorkerKey,
    index: u32,
    started: bool,
    deadline: Option<Instant>,
    upgrade_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Request {
    /// Outlives the request: a worker ends only when none waits on it.
    worker: WorkerKey,
    deadline: Instant,
    /// Indices (into the worker's addresses) this request still waits on.
    waiting: SmallVec<[u32; 8]>,
    errors: Vec<(Addr, AddrFailure)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Worker(WorkerKey),
    Attempt(AttemptKey),
    Request(RequestKey),
}

/// Whether a deadline entry still counts: its owner lives and holds exactly
/// that deadline.
fn timer_is_live(
    workers: &SlotMap<WorkerKey, Worker>,
    attempts: &SlotMap<AttemptKey, Attempt>,
    requests: &SlotMap<RequestKey, Request>,
    at: Instant,
    timer: Timer,
) -> bool {
    match timer {
        Timer::Worker(k) => workers.get(k).is_some_and(|w| w.wake == Some(at)),
        Timer::Attempt(k) => attempts.get(k).is_some_and(|a| a.deadline == Some(at)),
        Timer::Request(k) => requests.get(k).is_some_and(|r| r.deadline == at),
    }
}

/// Dials peers: workers, limiter, backoff and black-hole filters in one
/// machine; see the [module docs](self).
///
/// **When to call again:** after any input or command, drain
/// [`poll_action`](Self::poll_action) and [`poll_event`](Self::poll_event)
/// until `None`, then sleep until [`poll_timeout`](Self::poll_timeout) and
/// call [`handle_timeout`](Self::handle_timeout).
#[derive(Debug, Clone)]
pub struct Dialer {
    local: PeerId,
    config: DialerConfig,
    limiter: Limiter,
    backoff: Backoff,
    black_hole: BlackHoleFilter,
    workers: SlotMap<WorkerKey, Worker>,
    by_peer: HashMap<PeerId, WorkerKey>,
    requests: SlotMap<RequestKey, Request>,
    attempts: SlotMap<AttemptKey, Attempt>,
    /// Deadlines, lazily deleted: an entry counts only while it matches the
    /// deadline its owner holds (see [`timers`](super::timers)).
    timers: Deadlines<Timer>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    started: usize,
}

impl Dialer {
    /// A dialer for the local peer `local`.
    pub fn new(local: PeerId, config: DialerConfig) -> Result<Self, DialerConfigError> {
        config.validate()?;
        Ok(Dialer {
            local,
            limiter: Limiter::new(config.limiter)?,
            backoff: Backoff::new(config.backoff)?,
            black_hole: BlackHoleFilter::new(config.black_hole)?,
            config,
            workers: SlotMap::with_key(),
            by_peer: HashMap::default(),
            requests: SlotMap::with_key(),
            attempts: SlotMap::with_key(),
            timers: Deadlines::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            started: 0,
        })
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &DialerConfig {
        &self.config
    }

    /// The local peer.
    pub fn local_peer(&self) -> PeerId {
        self.local
    }

    /// Requests not answered yet.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Peers being dialed (one worker each).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Whether a worker dials `peer`.
    pub fn is_dialing(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Attempts announced with [`Action::Dial`] and not finished.
    pub fn attempts_running(&self) -> usize {
        self.started
    }

    /// Attempts created, running or waiting in the limiter.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    /// The deadline of a pending request.
    pub fn request_deadline(&self, request: RequestId) -> Option<Instant> {
        self.requests.get(request_key(request)).map(|r| r.deadline)
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The backoff table.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The black-hole filter.
    pub fn black_hole(&self) -> &BlackHoleFilter {
        &self.black_hole
    }

    // ---- inputs ----

    /// A TCP dial completed its handshake and is upgrading: on a public
    /// address, new dials to the peer wait [`DialerConfig::tcp_upgrade_hold`]
    /// (go-libp2p's `UpdateKindHandshakeProgressed`).
    pub fn handle_dial_connected(
        &mut self,
        now: Instant,
        attempt: AttemptId,
    ) -> Result<(), DialerError> {
        let key = attempt_key(attempt);
        let a = self.running_attempt(attempt)?;
        let Some(w) = self.workers.get_mut(a.worker) else {
            return Ok(());
        };
        if w.addrs[a.index as usize].traits.has(Traits::PUBLIC) {
            let until = now + self.config.tcp_upgrade_hold;
            if let Some(a) = self.attempts.get_mut(key) {
                if a.upgrade_until.replace(until).is_none() {
                    w.holds += 1;
                }
            }
            self.advance(now, a.worker);
            self.clean_timers();
        }
        Ok(())
    }

    /// An attempt gave a connection: every request of the peer gets it, the
    /// peer's other attempts are cancelled, and the backoff of the address
    /// that worked is cleared (only that one: see [`Backoff::clear`]).
    pub fn handle_dial_succeeded(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        connection: ConnectionRef,
    ) -> Result<(), DialerError> {
        let a = self.end_attempt(attempt, true)?;
        if let Some(w) = self.workers.get(a.worker) {
            self.backoff.clear(&w.peer, &w.addrs[a.index as usize].addr);
            self.answer_all(a.worker, connection);
        }
        self.start_ready(now);
        Ok(())
    }

    /// An attempt failed.
    pub fn handle_dial_failed(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        error: FailureClass,
    ) -> Result<(), DialerError> {
        let a = self.end_attempt(attempt, false)?;
        let failure = AddrFailure::Attempt(error);
        self.attempt_failed(now, a, failure, error != FailureClass::Cancelled);
        Ok(())
    }

    /// A connection to `peer` exists (inbound, or dialed elsewhere): it
    /// answers the peer's pending requests and cancels the peer's attempts
    /// (go-libp2p checks `bestAcceptableConnToPeer` before failing a
    /// request). Backoff stays: it says which of *our* dials failed, which an
    /// inbound connection does not disprove (go-libp2p clears it here).
    pub fn handle_peer_connected(&mut self, now: Instant, peer: PeerId, connection: ConnectionRef) {
        if let Some(&wk) = self.by_peer.get(&peer) {
            self.answer_all(wk, connection);
            self.start_ready(now);
        }
        self.clean_timers();
    }

    /// Fires due timers: batches, attempt timeouts, request deadlines, and
    /// backoff expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.backoff.handle_timeout(now);
        loop {
            let (workers, attempts, requests) = (&self.workers, &self.attempts, &self.requests);
            let Some((_, timer)) = self.timers.pop_due(now, |at, t| {
                timer_is_live(workers, attempts, requests, at, t)
            }) else {
                break;
            };
            match timer {
                Timer::Worker(wk) => {
                    if let Some(w) = self.workers.get_mut(wk) {
                        w.wake = None;
                        self.advance(now, wk);
                        self.reap(wk);
                    }
                }
                Timer::Attempt(ak) => {
                    let id = attempt_id(ak);
                    if let Ok(a) = self.end_attempt(id, false) {
                        self.actions
                            .push_back(Action::CancelAttempt { attempt: id });
                        self.attempt_failed(now, a, AddrFailure::TimedOut, true);
                    }
                }
                Timer::Request(rk) => {
                    if let Some(r) = self.requests.get(rk) {
                        let wk = r.worker;
                        self.answer_err(rk, DialErrorCause::Timeout);
                        self.reap(wk);
                    }
                }
            }
        }
        self.start_ready(now);
    }

    // ---- commands ----

    /// Asks for a connection to `peer` over `addrs` (at most
    /// [`DialerConfig::max_addrs_per_request`] of them). The answer comes as
    /// one [`Event::RequestDone`], possibly already queued when this returns.
    pub fn dial(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Addr>,
        opts: DialOpts,
    ) -> Result<RequestId, DialerError> {
        if peer == self.local {
            return Err(DialerError::DialToSelf);
        }
        if self.requests.len() >= self.config.max_requests {
            return Err(DialerError::TooManyRequests);
        }
        let timeout = opts.timeout.unwrap_or(self.config.request_timeout);
        let mut list: Vec<Addr> = addrs
            .into_iter()
            .take(self.config.max_addrs_per_request)
            .collect();
        dedup_addrs(&mut list);
        let had_addrs = !list.is_empty();
        let mut entries: Vec<(Addr, Features)> = list
            .into_iter()
            .map(|a| {
                let f = Features::of(&a);
                (a, f)
            })
            .filter(|(_, f)| !(opts.force_direct && f.relayed))
            .collect();
        rank::filter_low_priority_entries(&mut entries);
        let mut errors = Vec::new();
        if !entries.is_empty() {
            let refused = self.black_hole.filter_entries(&mut entries);
            errors.extend(
                refused
                    .into_iter()
                    .map(|(a, _)| (a, AddrFailure::BlackHoled)),
            );
        }
        if entries.is_empty() {
            let cause = if had_addrs {
                DialErrorCause::NoGoodAddresses
            } else {
                DialErrorCause::NoAddresses
            };
            // A request that never waits still gets an id of its own.
            let rk = self.requests.insert(Request {
                worker: WorkerKey::null(),
                deadline: now,
                waiting: SmallVec::new(),
                errors: Vec::new(),
            });
            self.requests.remove(rk);
            self.events.push_back(Event::RequestDone {
                request: request_id(rk),
                peer,
                result: Err(DialError {
                    peer,
                    cause,
                    errors,
                }),
            });
            return Ok(request_id(rk));
        }
        let ranker = if opts.simultaneous_connect {
            &RankerConfig::NO_DELAY
        } else {
            &self.config.ranker
        };
        let ranked = rank::rank_entries(entries, ranker);

        let wk = match self.by_peer.get(&peer) {
            Some(&wk) => wk,
            None => {
                let wk = self.workers.insert(Worker {
                    peer,
                    start: now,
                    addrs: Vec::with_capacity(ranked.len()),
                    queue: Vec::with_capacity(ranked.len()),
                    requests: SmallVec::new(),
                    in_flight: 0,
                    holds: 0,
                    wake: None,
                });
                self.by_peer.insert(peer, wk);
                wk
            }
        };
        let w = &mut self.workers[wk];
        let mut waiting = SmallVec::new();
        for ((addr, features), delay) in ranked {
            match w.addrs.iter().position(|t| t.addr == addr) {
                None => {
                    let index = w.addrs.len() as u32;
                    w.addrs.push(Tracked {
                        addr,
                        state: TrackState::Queued,
                        traits: Traits::of(&features),
                        force: opts.force_direct,
                    });
                    w.enqueue(delay, index);
                    waiting.push(index);
                }
                Some(i) => {
                    let index = i as u32;
                    let t = &mut w.addrs[i];
                    match t.state {
                        TrackState::Queued => {
                            t.force |= opts.force_direct;
                            waiting.push(index);
                            if opts.simultaneous_connect {
                                // go's `UpdateOrAdd`: take the no-delay rank.
                                w.queue.retain(|(_, q)| *q != index);
                                w.enqueue(delay, index);
                            }
                        }
                        TrackState::InFlight(_) => waiting.push(index),
                        TrackState::Failed(AddrFailure::Backoff) => {
                            t.state = TrackState::Queued;
                            t.force = opts.force_direct;
                            w.enqueue(delay, index);
                            waiting.push(index);
                        }
                        TrackState::Failed(failure) => errors.push((addr, failure)),
                    }
                }
            }
        }
        let done = waiting.is_empty();
        let rk = self.requests.insert(Request {
            worker: wk,
            deadline: now,
            waiting,
            errors,
        });
        self.workers[wk].requests.push(rk);
        if done {
            self.answer_err(rk, DialErrorCause::AllDialsFailed);
        } else {
            let deadline = self.timers.push_after(now, timeout, Timer::Request(rk));
            self.requests[rk].deadline = deadline;
            self.advance(now, wk);
        }
        self.reap(wk);
        self.start_ready(now);
        Ok(request_id(rk))
    }

    /// Gives up a request: it is answered at once with
    /// [`DialErrorCause::Cancelled`]; if nobody else waits on the peer, its
    /// attempts are cancelled.
    pub fn cancel(&mut self, now: Instant, request: RequestId) -> Result<(), DialerError> {
        let rk = request_key(request);
        let wk = self
            .requests
            .get(rk)
            .ok_or(DialerError::UnknownRequest(request))?
            .worker;
        self.answer_err(rk, DialErrorCause::Cancelled);
        self.reap(wk);
        self.start_ready(now);
        Ok(())
    }

    /// Forgets the backoff of `peer` (for a connection made elsewhere).
    pub fn clear_backoff(&mut self, peer: &PeerId) {
        self.backoff.clear_peer(peer);
    }

    // ---- outputs ----

    /// The next thing to do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.next_deadline();
        match (own, self.backoff.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    fn running_attempt(&self, attempt: AttemptId) -> Result<Attempt, DialerError> {
        match self.attempts.get(attempt_key(attempt)) {
            Some(a) if a.started => Ok(*a),
            _ => Err(DialerError::UnknownAttempt(attempt)),
        }
    }

    /// Removes a running attempt, frees its tokens and timer, and records
    /// its outcome with the black-hole filter.
    fn end_attempt(&mut self, attempt: AttemptId, success: bool) -> Result<Attempt, DialerError> {
        let a = self.running_attempt(attempt)?;
        self.attempts.remove(attempt_key(attempt));
        self.started -= 1;
        let _ = self.limiter.finish(attempt.0);
        if let Some(w) = self.workers.get_mut(a.worker) {
            w.in_flight -= 1;
            if a.upgrade_until.is_some() {
                w.holds -= 1;
            }
            w.addrs[a.index as usize]
                .traits
                .record_with(&mut self.black_hole, success);
        }
        Ok(a)
    }

    fn attempt_failed(
        &mut self,
        now: Instant,
        a: Attempt,
        failure: AddrFailure,
        add_backoff: bool,
    ) {
        let Some(w) = self.workers.get(a.worker) else {
            return;
        };
        if add_backoff {
            self.backoff
                .add(now, w.peer, &w.addrs[a.index as usize].addr);
        }
        self.fail_addr(a.worker, a.index, failure);
        self.advance(now, a.worker);
        self.reap(a.worker);
        self.start_ready(now);
    }

    /// Marks an address failed and updates the requests waiting on it.
    fn fail_addr(&mut self, wk: WorkerKey, index: u32, failure: AddrFailure) {
        let Some(w) = self.workers.get_mut(wk) else {
            return;
        };
        let t = &mut w.addrs[index as usize];
        t.state = TrackState::Failed(failure);
        let mut done: SmallVec<[RequestKey; 4]> = SmallVec::new();
        for &rk in &w.requests {
            if let Some(r) = self.requests.get_mut(rk) {
                if let Some(pos) = r.waiting.iter().position(|i| *i == index) {
                    r.waiting.swap_remove(pos);
                    r.errors.push((t.addr.clone(), failure));
                    if r.waiting.is_empty() {
                        done.push(rk);
                    }
                }
            }
        }
        for rk in done {
            self.answer_err(rk, DialErrorCause::AllDialsFailed);
        }
    }

    /// Dials every batch that is due and sets the worker's timer.
    fn advance(&mut self, now: Instant, wk: WorkerKey) {
        loop {
            let Some(w) = self.workers.get_mut(wk) else {
                return;
            };
            if w.requests.is_empty() || w.queue.is_empty() {
                w.wake = None;
                return;
            }
            let fire = if w.in_flight == 0 {
                now
            } else {
                let mut t = w.start + w.queue[0].0;
                if w.holds > 0 {
                    for tr in &w.addrs {
                        if let TrackState::InFlight(ak) = tr.state {
                            if let Some(u) = self.attempts.get(ak).and_then(|a| a.upgrade_until) {
                                t = t.max(u);
                            }
                        }
                    }
                }
                t
            };
            if fire > now {
                if w.wake != Some(fire) {
                    w.wake = Some(fire);
                    self.timers.push_at(fire, Timer::Worker(wk));
                }
                return;
            }
            w.wake = None;
            let head = w.queue[0].0;
            let n = w.queue.partition_point(|(d, _)| *d <= head);
            let batch: SmallVec<[u32; 8]> = w.queue.drain(..n).map(|(_, i)| i).collect();
            let mut refused: SmallVec<[(u32, AddrFailure); 4]> = SmallVec::new();
            for index in batch {
                let t = &mut w.addrs[index as usize];
                if !t.force && self.backoff.is_backed_off(now, &w.peer, &t.addr) {
                    refused.push((index, AddrFailure::Backoff));
                    continue;
                }
                let ak = self.attempts.insert(Attempt {
                    worker: wk,
                    index,
                    started: false,
                    deadline: None,
                    upgrade_until: None,
                });
                let uses_fd = t.traits.has(Traits::USES_FD);
                if self
                    .limiter
                    .submit(attempt_id(ak).0, w.peer, uses_fd)
                    .is_err()
                {
                    self.attempts.remove(ak);
                    refused.push((index, AddrFailure::TooManyDials));
                    continue;
                }
                t.state = TrackState::InFlight(ak);
                w.in_flight += 1;
            }
            for (index, failure) in refused {
                self.fail_addr(wk, index, failure);
            }
        }
    }

    /// Pops stale timers off the fronts so `poll_timeout` is exact.
    fn clean_timers(&mut self) {
        let (workers, attempts, requests) = (&self.workers, &self.attempts, &self.requests);
        self.timers
            .clean(|at, t| timer_is_live(workers, attempts, requests, at, t));
    }

    /// Announces every attempt the limiter lets run.
    fn start_ready(&mut self, now: Instant) {
        while let Some(job) = self.limiter.poll_action() {
            let id = AttemptId(job);
            let ak = attempt_key(id);
            let Some(a) = self.attempts.get_mut(ak) else {
                let _ = self.limiter.finish(job);
                continue;
            };
            let Some(w) = self.workers.get(a.worker) else {
                continue;
            };
            let t = &w.addrs[a.index as usize];
            let timeout = if t.traits.has(Traits::PRIVATE) {
                self.config.dial_timeout_local.min(self.config.dial_timeout)
            } else {
                self.config.dial_timeout
            };
            a.started = true;
            a.deadline = Some(self.timers.push_after(now, timeout, Timer::Attempt(ak)));
            self.started += 1;
            self.actions.push_back(Action::Dial {
                attempt: id,
                peer: w.peer,
                addr: t.addr.clone(),
            });
        }
        self.clean_timers();
    }

    /// Answers every request of the worker with `connection`, and ends it.
    fn answer_all(&mut self, wk: WorkerKey, connection: ConnectionRef) {
        while let Some(&rk) = self.workers.get(wk).and_then(|w| w.requests.first()) {
            self.answer(rk, Ok(connection));
        }
        self.reap(wk);
    }

    fn answer_err(&mut self, rk: RequestKey, cause: DialErrorCause) {
        let Some(r) = self.requests.get_mut(rk) else {
            return;
        };
        let errors = core::mem::take(&mut r.errors);
        self.answer_with(rk, |peer| {
            Err(DialError {
                peer,
                cause,
                errors,
            })
        });
    }

    fn answer(&mut self, rk: RequestKey, result: Result<ConnectionRef, DialError>) {
        self.answer_with(rk, |_| result);
    }

    /// Removes the request and queues its answer, made from its peer.
    fn answer_with(
        &mut self,
        rk: RequestKey,
        result: impl FnOnce(PeerId) -> Result<ConnectionRef, DialError>,
    ) {
        let Some(r) = self.requests.remove(rk) else {
            return;
        };
        let Some(w) = self.workers.get_mut(r.worker) else {
            debug_assert!(false, "a request outlived its worker");
            return;
        };
        w.requests.retain(|x| *x != rk);
        let peer = w.peer;
        self.events.push_back(Event::RequestDone {
            request: request_id(rk),
            peer,
            result: result(peer),
        });
    }

    /// Ends a worker nobody waits on: cancels its attempts.
    fn reap(&mut self, wk: WorkerKey) {
        match self.workers.get(wk) {
            Some(w) if w.requests.is_empty() => {}
            _ => return,
        }
        let w = self.workers.remove(wk).expect("checked above");
        self.by_peer.remove(&w.peer);
        for t in &w.addrs {
            let TrackState::InFlight(ak) = t.state else {
                continue;
            };
            let Some(a) = self.attempts.remove(ak) else {
                continue;
            };
            let id = attempt_id(ak);
            let _ = self.limiter.finish(id.0);
            if a.started {
                self.started -= 1;
                // go-libp2p records cancelled dials as failures.
                t.traits.record_with(&mut self.black_hole, false);
                self.actions
                    .push_back(Action::CancelAttempt { attempt: id });
            }
        }
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod tests;
