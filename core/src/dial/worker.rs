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
//! - **Memory.** Requests are capped ([`DialerConfig::max_requests`]),
//!   addresses per request too, workers live only while a request waits on
//!   them, and attempts only while their worker lives. Deadlines sit in one
//!   binary heap with lazy deletion: an entry counts only while its owner
//!   still holds that deadline; stale entries are popped off the top after
//!   every input (so [`Dialer::poll_timeout`] is exact) and the others at
//!   their own deadline, at most [`DialerConfig::request_timeout`] away.
//!   Idle polls are O(1); each input costs O(log n) in the timers.
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

use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::time::Duration;

use hashbrown::HashMap;
use smallvec::SmallVec;

use super::backoff::{Backoff, BackoffConfig, BackoffConfigError};
use super::black_hole::{BlackHoleConfigError, BlackHoleFilter, BlackHoleFilterConfig};
use super::limiter::{Limiter, LimiterConfig, LimiterConfigError};
use super::rank::{self, Features, RankerConfig, RankerConfigError};
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
pub enum AttemptError {
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
    Attempt(AttemptError),
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

type WorkerId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    Queued,
    InFlight(u64),
    Failed(AddrFailure),
}

#[derive(Debug, Clone)]
struct Tracked {
    addr: Addr,
    features: Features,
    state: TrackState,
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
    requests: SmallVec<[u64; 2]>,
    in_flight: u32,
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
    worker: WorkerId,
    index: u32,
    started: bool,
    deadline: Option<Instant>,
    upgrade_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Request {
    worker: WorkerId,
    peer: PeerId,
    deadline: Instant,
    /// Indices (into the worker's addresses) this request still waits on.
    waiting: SmallVec<[u32; 8]>,
    errors: Vec<(Addr, AddrFailure)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Worker(WorkerId),
    Attempt(u64),
    Request(u64),
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
    workers: HashMap<WorkerId, Worker>,
    by_peer: HashMap<PeerId, WorkerId>,
    requests: HashMap<u64, Request>,
    attempts: HashMap<u64, Attempt>,
    /// Deadlines, lazily deleted: an entry counts only while it matches the
    /// deadline its owner holds; stale entries leave the top at the end of
    /// every input and the rest at their own deadline.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    next_id: u64,
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
            workers: HashMap::new(),
            by_peer: HashMap::new(),
            requests: HashMap::new(),
            attempts: HashMap::new(),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
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
        self.requests.get(&request.0).map(|r| r.deadline)
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
        let a = self.running_attempt(attempt)?;
        let public = self.workers[&a.worker].addrs[a.index as usize]
            .features
            .public;
        if public {
            let until = now + self.config.tcp_upgrade_hold;
            if let Some(a) = self.attempts.get_mut(&attempt.0) {
                a.upgrade_until = Some(until);
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
        let w = &self.workers[&a.worker];
        let peer = w.peer;
        self.backoff.clear(&peer, &w.addrs[a.index as usize].addr);
        for rid in w.requests.clone() {
            self.answer(rid, Ok(connection));
        }
        self.reap(a.worker);
        self.start_ready(now);
        Ok(())
    }

    /// An attempt failed.
    pub fn handle_dial_failed(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        error: AttemptError,
    ) -> Result<(), DialerError> {
        let a = self.end_attempt(attempt, false)?;
        let failure = AddrFailure::Attempt(error);
        self.attempt_failed(now, a, failure, error != AttemptError::Cancelled);
        Ok(())
    }

    /// A connection to `peer` exists (inbound, or dialed elsewhere): it
    /// answers the peer's pending requests and cancels the peer's attempts
    /// (go-libp2p checks `bestAcceptableConnToPeer` before failing a
    /// request). Backoff stays: it says which of *our* dials failed, which an
    /// inbound connection does not disprove (go-libp2p clears it here).
    pub fn handle_peer_connected(&mut self, now: Instant, peer: PeerId, connection: ConnectionRef) {
        if let Some(&wid) = self.by_peer.get(&peer) {
            for rid in self.workers[&wid].requests.clone() {
                self.answer(rid, Ok(connection));
            }
            self.reap(wid);
            self.start_ready(now);
        }
        self.clean_timers();
    }

    /// Fires due timers: batches, attempt timeouts, request deadlines, and
    /// backoff expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.backoff.handle_timeout(now);
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.timer_is_live(at, timer) {
                continue;
            }
            match timer {
                Timer::Worker(wid) => {
                    if let Some(w) = self.workers.get_mut(&wid) {
                        w.wake = None;
                        self.advance(now, wid);
                        self.reap(wid);
                    }
                }
                Timer::Attempt(aid) => {
                    if let Some(a) = self.attempts.get_mut(&aid) {
                        a.deadline = None;
                        self.actions.push_back(Action::CancelAttempt {
                            attempt: AttemptId(aid),
                        });
                        if let Ok(a) = self.end_attempt(AttemptId(aid), false) {
                            self.attempt_failed(now, a, AddrFailure::TimedOut, true);
                        }
                    }
                }
                Timer::Request(rid) => {
                    if let Some(r) = self.requests.get(&rid) {
                        let wid = r.worker;
                        self.answer_err(rid, DialErrorCause::Timeout);
                        self.reap(wid);
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
        let rid = self.next_id();
        let deadline = now + opts.timeout.unwrap_or(self.config.request_timeout);
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
            self.events.push_back(Event::RequestDone {
                request: RequestId(rid),
                peer,
                result: Err(DialError {
                    peer,
                    cause,
                    errors,
                }),
            });
            return Ok(RequestId(rid));
        }
        let ranker = if opts.simultaneous_connect {
            &RankerConfig::NO_DELAY
        } else {
            &self.config.ranker
        };
        let ranked = rank::rank_entries(entries, ranker);

        let wid = match self.by_peer.get(&peer) {
            Some(&wid) => wid,
            None => {
                let wid = self.next_id();
                self.by_peer.insert(peer, wid);
                self.workers.insert(
                    wid,
                    Worker {
                        peer,
                        start: now,
                        addrs: Vec::new(),
                        queue: Vec::new(),
                        requests: SmallVec::new(),
                        in_flight: 0,
                        wake: None,
                    },
                );
                wid
            }
        };
        let w = self
            .workers
            .get_mut(&wid)
            .expect("worker just found or made");
        let mut waiting = SmallVec::new();
        for ((addr, features), delay) in ranked {
            match w.addrs.iter().position(|t| t.addr == addr) {
                None => {
                    let index = w.addrs.len() as u32;
                    w.addrs.push(Tracked {
                        addr,
                        features,
                        state: TrackState::Queued,
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
        self.requests.insert(
            rid,
            Request {
                worker: wid,
                peer,
                deadline,
                waiting,
                errors,
            },
        );
        w.requests.push(rid);
        if done {
            self.answer_err(rid, DialErrorCause::AllDialsFailed);
        } else {
            self.timers.push(Reverse((deadline, Timer::Request(rid))));
            self.advance(now, wid);
        }
        self.reap(wid);
        self.start_ready(now);
        Ok(RequestId(rid))
    }

    /// Gives up a request: it is answered at once with
    /// [`DialErrorCause::Cancelled`]; if nobody else waits on the peer, its
    /// attempts are cancelled.
    pub fn cancel(&mut self, now: Instant, request: RequestId) -> Result<(), DialerError> {
        let wid = self
            .requests
            .get(&request.0)
            .ok_or(DialerError::UnknownRequest(request))?
            .worker;
        self.answer_err(request.0, DialErrorCause::Cancelled);
        self.reap(wid);
        self.start_ready(now);
        Ok(())
    }

    /// Forgets the backoff of `peer` (for a connection made elsewhere).
    pub fn clear_backoff(&mut self, peer: &PeerId) {
        self.backoff.clear_peer(peer);
    }

    // ---- outputs ----

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.peek().map(|&Reverse((at, _))| at);
        match (own, self.backoff.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn running_attempt(&self, attempt: AttemptId) -> Result<Attempt, DialerError> {
        match self.attempts.get(&attempt.0) {
            Some(a) if a.started => Ok(*a),
            _ => Err(DialerError::UnknownAttempt(attempt)),
        }
    }

    /// Removes a running attempt, frees its tokens and timer, and records
    /// its outcome with the black-hole filter.
    fn end_attempt(&mut self, attempt: AttemptId, success: bool) -> Result<Attempt, DialerError> {
        let a = self.running_attempt(attempt)?;
        self.attempts.remove(&attempt.0);
        self.started -= 1;
        let _ = self.limiter.finish(attempt.0);
        if let Some(w) = self.workers.get_mut(&a.worker) {
            w.in_flight -= 1;
            let f = w.addrs[a.index as usize].features;
            self.black_hole.record(&f, success);
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
        let Some(w) = self.workers.get(&a.worker) else {
            return;
        };
        if add_backoff {
            let (peer, addr) = (w.peer, w.addrs[a.index as usize].addr.clone());
            self.backoff.add(now, peer, &addr);
        }
        self.fail_addr(a.worker, a.index, failure);
        self.advance(now, a.worker);
        self.reap(a.worker);
        self.start_ready(now);
    }

    /// Marks an address failed and updates the requests waiting on it.
    fn fail_addr(&mut self, wid: WorkerId, index: u32, failure: AddrFailure) {
        let Some(w) = self.workers.get_mut(&wid) else {
            return;
        };
        let t = &mut w.addrs[index as usize];
        t.state = TrackState::Failed(failure);
        let addr = t.addr.clone();
        let mut done: SmallVec<[u64; 4]> = SmallVec::new();
        for rid in &w.requests {
            if let Some(r) = self.requests.get_mut(rid) {
                if let Some(pos) = r.waiting.iter().position(|i| *i == index) {
                    r.waiting.swap_remove(pos);
                    r.errors.push((addr.clone(), failure));
                    if r.waiting.is_empty() {
                        done.push(*rid);
                    }
                }
            }
        }
        for rid in done {
            self.answer_err(rid, DialErrorCause::AllDialsFailed);
        }
    }

    /// Dials every batch that is due and sets the worker's timer.
    fn advance(&mut self, now: Instant, wid: WorkerId) {
        loop {
            let Some(w) = self.workers.get_mut(&wid) else {
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
                for tr in &w.addrs {
                    if let TrackState::InFlight(aid) = tr.state {
                        if let Some(u) = self.attempts.get(&aid).and_then(|a| a.upgrade_until) {
                            t = t.max(u);
                        }
                    }
                }
                t
            };
            if fire > now {
                if w.wake != Some(fire) {
                    w.wake = Some(fire);
                    self.timers.push(Reverse((fire, Timer::Worker(wid))));
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
                self.next_id += 1;
                let aid = self.next_id;
                if self
                    .limiter
                    .submit(aid, w.peer, t.features.uses_fd())
                    .is_err()
                {
                    refused.push((index, AddrFailure::TooManyDials));
                    continue;
                }
                t.state = TrackState::InFlight(aid);
                w.in_flight += 1;
                self.attempts.insert(
                    aid,
                    Attempt {
                        worker: wid,
                        index,
                        started: false,
                        deadline: None,
                        upgrade_until: None,
                    },
                );
            }
            for (index, failure) in refused {
                self.fail_addr(wid, index, failure);
            }
        }
    }

    fn timer_is_live(&self, at: Instant, timer: Timer) -> bool {
        match timer {
            Timer::Worker(wid) => self.workers.get(&wid).is_some_and(|w| w.wake == Some(at)),
            Timer::Attempt(aid) => self
                .attempts
                .get(&aid)
                .is_some_and(|a| a.deadline == Some(at)),
            Timer::Request(rid) => self.requests.get(&rid).is_some_and(|r| r.deadline == at),
        }
    }

    /// Pops stale timers off the top so `poll_timeout` is exact.
    fn clean_timers(&mut self) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if self.timer_is_live(at, timer) {
                break;
            }
            self.timers.pop();
        }
    }

    /// Announces every attempt the limiter lets run.
    fn start_ready(&mut self, now: Instant) {
        while let Some(aid) = self.limiter.poll_ready() {
            let Some(a) = self.attempts.get_mut(&aid) else {
                let _ = self.limiter.finish(aid);
                continue;
            };
            let Some(w) = self.workers.get(&a.worker) else {
                continue;
            };
            let t = &w.addrs[a.index as usize];
            let timeout = if t.features.private {
                self.config.dial_timeout_local.min(self.config.dial_timeout)
            } else {
                self.config.dial_timeout
            };
            let deadline = now + timeout;
            a.started = true;
            a.deadline = Some(deadline);
            self.started += 1;
            self.timers.push(Reverse((deadline, Timer::Attempt(aid))));
            self.actions.push_back(Action::Dial {
                attempt: AttemptId(aid),
                peer: w.peer,
                addr: t.addr.clone(),
            });
        }
        self.clean_timers();
    }

    fn answer_err(&mut self, rid: u64, cause: DialErrorCause) {
        let (peer, errors) = match self.requests.get_mut(&rid) {
            Some(r) => (r.peer, core::mem::take(&mut r.errors)),
            None => return,
        };
        self.answer(
            rid,
            Err(DialError {
                peer,
                cause,
                errors,
            }),
        );
    }

    fn answer(&mut self, rid: u64, result: Result<ConnectionRef, DialError>) {
        let Some(r) = self.requests.remove(&rid) else {
            return;
        };
        if let Some(w) = self.workers.get_mut(&r.worker) {
            w.requests.retain(|x| *x != rid);
        }
        self.events.push_back(Event::RequestDone {
            request: RequestId(rid),
            peer: r.peer,
            result,
        });
    }

    /// Ends a worker nobody waits on: cancels its attempts.
    fn reap(&mut self, wid: WorkerId) {
        match self.workers.get(&wid) {
            Some(w) if w.requests.is_empty() => {}
            _ => return,
        }
        let w = self.workers.remove(&wid).expect("checked above");
        self.by_peer.remove(&w.peer);
        for t in &w.addrs {
            if let TrackState::InFlight(aid) = t.state {
                if let Some(a) = self.attempts.remove(&aid) {
                    let _ = self.limiter.finish(aid);
                    if a.started {
                        self.started -= 1;
                        // go-libp2p records cancelled dials as failures.
                        self.black_hole.record(&t.features, false);
                        self.actions.push_back(Action::CancelAttempt {
                            attempt: AttemptId(aid),
                        });
                    }
                }
            }
        }
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod tests;
