//! AutoRelay's relay finder (go-libp2p `p2p/host/autorelay`) as one
//! sans-IO machine: it collects relay candidates, reserves slots with the
//! best of them, refreshes each reservation from its own expiry, replaces
//! relays that go away and says which relay addresses the node has.
//!
//! The machine decides; the node (or any caller) executes:
//!
//! | action | the caller | then |
//! |---|---|---|
//! | [`Action::QueryPeerSource`] | asks its peer source for up to `max` peers | [`Finder::handle_peer_source`] per batch, [`Finder::handle_peer_source_exhausted`] |
//! | [`Action::Probe`] | connects, identifies | [`Finder::handle_identified`] or [`Finder::handle_probe_failed`] |
//! | [`Action::Reserve`] / [`Action::Refresh`] | reserves (connecting first for `Reserve`) | [`Finder::handle_reservation`] |
//! | [`Action::Protect`] / [`Action::Unprotect`] | tags the relay's connection [`PROTECT_TAG`] | - |
//!
//! Peers identified over direct connections are fed with
//! [`Finder::handle_identified`] whether probed or not (a peer that speaks
//! the hop protocol becomes a candidate), disconnections with
//! [`Finder::handle_disconnected`], reachability with
//! [`Finder::handle_reachability`]. [`Finder::poll_timeout`] is the one
//! deadline over refreshes, expiries, backoffs, candidate ages, the boot
//! delay and the next allowed peer-source call; it reads the first entry of
//! an ordered timer set, so an idle poll scans nothing.
//!
//! Where it departs from go, on purpose:
//! - A refresh is scheduled from each reservation's own expiry, at
//!   `expire - min(refresh_lead, lifetime / 4)`, so a 30 s reservation is
//!   renewed at 22.5 s and a 1 h one 2 min before its end; go checks on a
//!   1-minute tick for expiries within 2 min. Never earlier than 3/4 of the
//!   lifetime, so a relay's per-peer rate limit (rust-libp2p: about one
//!   reservation per 2 min) is respected whenever the lifetime allows it.
//!   A failed refresh is retried `refresh_retries` times before the relay is
//!   given up.
//! - Only a failed reservation puts a relay into backoff (go PR #3482).
//! - A relay that disconnects is dropped, and reserved again as soon as it
//!   is identified again; a static relay is never dropped: it is retried
//!   with exponential backoff for ever, and at once when it is back.
//! - Candidates are ranked by RTT with a random factor (config), randomly
//!   when no RTT is known.
//! - Nothing is reserved through a relayed connection; a peer identified
//!   only through one is no candidate.
//!
//! A relay bug no client can mend: js-libp2p relays
//! (`@libp2p/circuit-relay-v2` 4.2.13 with `retimeable-signal` 1.0.1)
//! drop a reservation one lifetime after its *first* refresh, whatever
//! later refreshes said (`reset` leaves the previous timer armed), and
//! answer CONNECTs with NO_RESERVATION until the next refresh re-creates
//! it: with a 30 s TTL the node is unreachable through such a relay for
//! about a third of the time. Holding a second relay covers the gap.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::relay::finder::{Action, Finder, FinderConfig, Granted, PeerInfo};
//! use sansp2p::{Instant, Keypair};
//!
//! let relay = Keypair::from_secret_bytes([7; 32]).peer_id();
//! let t0 = Instant::ZERO;
//! let config = FinderConfig::with_static_relays(vec![(relay, vec![])]);
//! let mut finder = Finder::new(t0, config).unwrap();
//! // A static relay is reserved at once.
//! assert_eq!(finder.poll_action(), Some(Action::Reserve { peer: relay, addrs: vec![] }));
//! let expire = t0 + Duration::from_secs(3600);
//! finder.handle_reservation(t0, relay, Ok(Granted { expire, addrs: vec![] }));
//! assert_eq!(finder.relays().count(), 1);
//! // Its refresh is due 2 minutes before it expires.
//! assert_eq!(finder.poll_timeout(), Some(expire - Duration::from_secs(120)));
//! # let _ = PeerInfo { direct: true, supports_hop: true, addrs: vec![], rtt: None };
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use rand_core::{Rng as _, SeedableRng as _};

use super::circuit_addr;
use crate::addr;
use crate::identity::PeerId;
use crate::time::Instant;

/// The tag relays' connections are protected with.
pub const PROTECT_TAG: &str = "autorelay";

/// Whether the node is reachable from the internet, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Not known (the finder runs, as in go).
    Unknown,
    /// Behind a NAT or firewall: the finder runs.
    Private,
    /// Publicly reachable: the finder stops and gives its relays up.
    Public,
}

/// How the next relay is picked among the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayChoice {
    /// Uniformly at random (go-libp2p).
    Random,
    /// The lowest RTT times a random factor of 1 to `1 + jitter_percent/100`,
    /// so close relays are preferred without all clients choosing the same
    /// popular one (why go declined exact RTT ordering, #523). Candidates
    /// without an RTT come after, in random order.
    Rtt {
        /// The spread of the random factor, in percent.
        jitter_percent: u32,
    },
}

/// The finder's configuration: go-libp2p's defaults, plus the refresh
/// and retry rules of this implementation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FinderConfig {
    /// Fixed relays (id and addresses): when given, the only relays, with
    /// min = max = desired = their number, and never given up.
    pub static_relays: Vec<(PeerId, Vec<Vec<u8>>)>,
    /// Candidates wanted before reserving, during the boot delay (go: 4).
    pub min_candidates: usize,
    /// At most this many candidates and probes at once (go: 20).
    pub max_candidates: usize,
    /// How many relays to hold (go: 2).
    pub desired_relays: usize,
    /// From construction, how long fewer than `min_candidates` are waited
    /// for (go: 3 min).
    pub boot_delay: Duration,
    /// A relay that refused a reservation is not tried again for this long
    /// (go: 1 h).
    pub backoff: Duration,
    /// A candidate not reserved with is forgotten after this long (go: 30 min).
    pub max_candidate_age: Duration,
    /// At most one peer-source call per this interval (go: 30 s).
    pub min_interval: Duration,
    /// A probe (connect and identify) not answered by then has failed
    /// (go: 20 s).
    pub probe_timeout: Duration,
    /// The latest a refresh goes out before expiry (go's slack: 2 min); a
    /// shorter lifetime is refreshed at three quarters.
    pub refresh_lead: Duration,
    /// Failed refreshes retried before the relay is given up.
    pub refresh_retries: u32,
    /// The wait before retrying a failed refresh (never past the expiry).
    pub refresh_retry_delay: Duration,
    /// A static relay's first retry after a failure or disconnection; it
    /// doubles on every failure up to `static_retry_max`.
    pub static_retry: Duration,
    /// The longest wait between retries of a static relay.
    pub static_retry_max: Duration,
    /// How the next relay is picked.
    pub choice: RelayChoice,
    /// Only public relay addresses go into our relay addresses (go); off
    /// for tests and private networks.
    pub public_addrs_only: bool,
    /// At most this many relay addresses (go: 100).
    pub max_addrs: usize,
    /// At most this many relays remembered in backoff; beyond, the one
    /// whose backoff ends first is forgotten.
    pub max_backoffs: usize,
    /// The seed of the finder's RNG (relay choice).
    pub rng_seed: [u8; 32],
}

impl Default for FinderConfig {
    fn default() -> Self {
        FinderConfig {
            static_relays: Vec::new(),
            min_candidates: 4,
            max_candidates: 20,
            desired_relays: 2,
            boot_delay: Duration::from_secs(180),
            backoff: Duration::from_secs(3600),
            max_candidate_age: Duration::from_secs(1800),
            min_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(20),
            refresh_lead: Duration::from_secs(120),
            refresh_retries: 3,
            refresh_retry_delay: Duration::from_secs(10),
            static_retry: Duration::from_secs(1),
            static_retry_max: Duration::from_secs(60),
            choice: RelayChoice::Rtt { jitter_percent: 50 },
            public_addrs_only: true,
            max_addrs: 100,
            max_backoffs: 256,
            rng_seed: [1; 32],
        }
    }
}

impl FinderConfig {
    /// The defaults with `relays` as the fixed relays.
    pub fn with_static_relays(relays: Vec<(PeerId, Vec<Vec<u8>>)>) -> Self {
        FinderConfig {
            static_relays: relays,
            ..FinderConfig::default()
        }
    }

    fn validate(&self) -> Result<(), FinderConfigError> {
        if self.static_relays.is_empty() {
            if self.desired_relays == 0 {
                return Err(FinderConfigError::NoRelaysDesired);
            }
            if self.max_candidates == 0 || self.min_candidates > self.max_candidates {
                return Err(FinderConfigError::CandidateBounds);
            }
        }
        let mut ids: Vec<PeerId> = self.static_relays.iter().map(|(p, _)| *p).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(FinderConfigError::DuplicateStaticRelay);
        }
        if self.static_retry.is_zero() || self.static_retry > self.static_retry_max {
            return Err(FinderConfigError::StaticRetry);
        }
        if self.min_interval.is_zero()
            || self.probe_timeout.is_zero()
            || self.refresh_lead.is_zero()
        {
            return Err(FinderConfigError::ZeroInterval);
        }
        Ok(())
    }
}

/// A configuration [`Finder::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FinderConfigError {
    /// `desired_relays` is 0 without static relays: nothing to do.
    #[error("desired_relays must be at least 1")]
    NoRelaysDesired,
    /// `max_candidates` is 0 or below `min_candidates`.
    #[error("max_candidates must be at least 1 and at least min_candidates")]
    CandidateBounds,
    /// A static relay is listed twice.
    #[error("a static relay is listed twice")]
    DuplicateStaticRelay,
    /// `static_retry` is 0 or above `static_retry_max`.
    #[error("static_retry must be above 0 and at most static_retry_max")]
    StaticRetry,
    /// `min_interval`, `probe_timeout` or `refresh_lead` is 0.
    #[error("min_interval, probe_timeout and refresh_lead must be above 0")]
    ZeroInterval,
}

/// What a peer's identify said, over which kind of connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Identified over a direct (not relayed) connection.
    pub direct: bool,
    /// It lists `/libp2p/circuit/relay/0.2.0/hop`.
    pub supports_hop: bool,
    /// Its addresses, to reach it again.
    pub addrs: Vec<Vec<u8>>,
    /// A round-trip time, when measured.
    pub rtt: Option<Duration>,
}

/// A reservation granted or renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// When it ends (our clock).
    pub expire: Instant,
    /// The relay's addresses from the reservation (ending in `/p2p/<relay>`).
    pub addrs: Vec<Vec<u8>>,
}

/// A reservation or refresh that did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveFailure {
    /// The relay refused or answered badly: backoff.
    Refused,
    /// The relay could not be reached or the exchange broke.
    Unreachable,
}

/// What the caller should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the peer source for up to `max` peers.
    QueryPeerSource {
        /// How many are wanted.
        max: usize,
    },
    /// Connect to `peer` and identify it.
    Probe {
        /// The peer.
        peer: PeerId,
        /// Where it was said to be.
        addrs: Vec<Vec<u8>>,
    },
    /// Reserve a slot on `peer`, connecting first if needed.
    Reserve {
        /// The relay.
        peer: PeerId,
        /// Where it is known to be.
        addrs: Vec<Vec<u8>>,
    },
    /// Renew the reservation on `peer` over the existing connection.
    Refresh {
        /// The relay.
        peer: PeerId,
    },
    /// Protect the relay's connection with [`PROTECT_TAG`].
    Protect {
        /// The relay.
        peer: PeerId,
    },
    /// Remove [`PROTECT_TAG`] from the relay's connection.
    Unprotect {
        /// The relay.
        peer: PeerId,
    },
}

/// Why a relay was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovedReason {
    /// Its connection closed.
    Disconnected,
    /// Refreshes failed (after the retries).
    RefreshFailed,
    /// It expired before a refresh succeeded.
    Expired,
    /// We became publicly reachable.
    Public,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A reservation was made with a new relay.
    RelayAdded {
        /// The relay.
        relay: PeerId,
        /// When the reservation ends unless refreshed.
        expire: Instant,
    },
    /// A reservation was renewed.
    Refreshed {
        /// The relay.
        relay: PeerId,
        /// The new end.
        expire: Instant,
    },
    /// A relay was given up.
    RelayRemoved {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: RemovedReason,
    },
    /// Our relay addresses changed: the full new set,
    /// `<relay addr>/p2p/<relay>/p2p-circuit`, sorted.
    AddrsChanged {
        /// The addresses.
        addrs: Vec<Vec<u8>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Boot,
    Source,
    Peer(PeerId),
}

#[derive(Debug)]
struct Held {
    expire: Instant,
    addrs: Vec<Vec<u8>>,
    refresh_at: Instant,
    refreshing: bool,
    failures: u32,
}

#[derive(Debug)]
enum State {
    /// Being connected to and identified; deadline: the probe timeout.
    Probing,
    /// Ready to reserve with; deadline: its age limit (dynamic ones).
    Candidate,
    /// A reservation requested; the caller always answers.
    Reserving,
    /// A reservation held; deadline: the refresh, or the expiry.
    Relay(Held),
    /// Refused a reservation (dynamic); deadline: the backoff's end.
    Backoff,
    /// A static relay between attempts; deadline: the next one.
    Waiting,
}

#[derive(Debug)]
struct Entry {
    is_static: bool,
    addrs: Vec<Vec<u8>>,
    rtt: Option<Duration>,
    state: State,
    deadline: Option<Instant>,
    /// Failed attempts in a row (a static relay's retry grows with it).
    streak: u32,
}

impl Entry {
    fn new(is_static: bool, addrs: Vec<Vec<u8>>, rtt: Option<Duration>, state: State) -> Self {
        Entry {
            is_static,
            addrs,
            rtt,
            state,
            deadline: None,
            streak: 0,
        }
    }
}

/// The relay finder. See the [module documentation](self).
#[derive(Debug)]
pub struct Finder {
    config: FinderConfig,
    desired: usize,
    reachability: Reachability,
    boot_until: Instant,
    peers: BTreeMap<PeerId, Entry>,
    timers: BTreeSet<(Instant, Key)>,
    /// A peer-source query is outstanding.
    querying: bool,
    /// The earliest the next peer-source query may go out.
    next_query: Instant,
    addrs: Vec<Vec<u8>>,
    /// Peers whose Reserve or Refresh the caller has not answered yet, even
    /// one the finder gave up (after `Public`, a disconnection, an expiry):
    /// not reserved with again before that answer, so a late answer is
    /// never taken for a newer request's.
    unanswered: BTreeSet<PeerId>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    rng: rand_chacha::ChaCha20Rng,
}

impl Finder {
    /// A finder started at `now` (the boot delay counts from here), with
    /// reachability [`Unknown`](Reachability::Unknown): it runs.
    pub fn new(now: Instant, config: FinderConfig) -> Result<Self, FinderConfigError> {
        config.validate()?;
        let desired = if config.static_relays.is_empty() {
            config.desired_relays
        } else {
            config.static_relays.len()
        };
        let mut finder = Finder {
            desired,
            reachability: Reachability::Unknown,
            boot_until: now.saturating_add(config.boot_delay),
            peers: BTreeMap::new(),
            timers: BTreeSet::new(),
            querying: false,
            next_query: now,
            addrs: Vec::new(),
            unanswered: BTreeSet::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(config.rng_seed),
            config,
        };
        for (peer, addrs) in finder.config.static_relays.clone() {
            let entry = Entry::new(true, addrs, None, State::Candidate);
            finder.peers.insert(peer, entry);
        }
        finder.step(now);
        Ok(finder)
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &FinderConfig {
        &self.config
    }

    /// The relays we hold a reservation with, and when each ends.
    pub fn relays(&self) -> impl Iterator<Item = (PeerId, Instant)> + '_ {
        self.peers.iter().filter_map(|(p, e)| match &e.state {
            State::Relay(h) => Some((*p, h.expire)),
            _ => None,
        })
    }

    /// The candidates not reserved with yet (probed ones included).
    pub fn candidates(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Candidate))
            .map(|(p, _)| *p)
    }

    /// Whether `peer` is in backoff after a refused reservation.
    pub fn is_backed_off(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| matches!(e.state, State::Backoff))
    }

    /// When a refresh of `relay`'s reservation is due (`None`: no
    /// reservation, or a refresh is under way).
    pub fn refresh_due(&self, relay: &PeerId) -> Option<Instant> {
        match &self.peers.get(relay)?.state {
            State::Relay(h) if !h.refreshing => Some(h.refresh_at),
            _ => None,
        }
    }

    /// Our relay addresses, as last announced.
    pub fn addrs(&self) -> &[Vec<u8>] {
        &self.addrs
    }

    /// How many peers the finder remembers (candidates, probes, relays,
    /// backoffs): bounded by the config.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// The reachability last fed.
    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    // ------------------------------------------------------------ inputs

    /// Reachability changed: `Public` stops the finder and gives its relays
    /// up; `Private` or `Unknown` (re)starts it. The same value again does
    /// nothing.
    pub fn handle_reachability(&mut self, now: Instant, reachability: Reachability) {
        let was = self.active();
        self.reachability = reachability;
        if was && !self.active() {
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            for peer in peers {
                match self.peers.get(&peer).map(|e| &e.state) {
                    Some(State::Relay(_)) => self.give_up(now, peer, RemovedReason::Public, false),
                    // A late answer finds it a candidate and is ignored.
                    Some(State::Reserving) => self.set(peer, State::Candidate, None),
                    _ => {}
                }
            }
            self.update_addrs();
        }
        self.step(now);
    }

    /// `peer` was identified. Over a direct connection and speaking the
    /// hop protocol, it becomes a candidate (a probe's answer, or a peer
    /// met otherwise); a static relay waiting for a retry is tried at once.
    pub fn handle_identified(&mut self, now: Instant, peer: PeerId, info: PeerInfo) {
        let room = self.candidate_count() < self.config.max_candidates;
        let candidate_deadline = now.saturating_add(self.config.max_candidate_age);
        match self.peers.get_mut(&peer) {
            Some(e) => {
                if info.rtt.is_some() {
                    e.rtt = info.rtt;
                }
                if !info.addrs.is_empty() {
                    e.addrs = info.addrs;
                }
                match e.state {
                    State::Probing if info.direct && info.supports_hop => {
                        self.set(peer, State::Candidate, Some(candidate_deadline));
                    }
                    State::Probing if info.direct => self.forget(peer),
                    State::Waiting if info.direct => {
                        self.set(peer, State::Candidate, None);
                    }
                    _ => {}
                }
            }
            None if info.direct
                && info.supports_hop
                && room
                && self.config.static_relays.is_empty() =>
            {
                let entry = Entry::new(false, info.addrs, info.rtt, State::Candidate);
                self.peers.insert(peer, entry);
                self.set_deadline(peer, Some(candidate_deadline));
            }
            None => {}
        }
        self.step(now);
    }

    /// A probe of `peer` failed (unreachable, or identify did not come).
    pub fn handle_probe_failed(&mut self, now: Instant, peer: PeerId) {
        if matches!(
            self.peers.get(&peer).map(|e| &e.state),
            Some(State::Probing)
        ) {
            self.forget(peer);
        }
        self.step(now);
    }

    /// A round-trip time to `peer` was measured (ping).
    pub fn handle_rtt(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.rtt = Some(rtt);
        }
    }

    /// A batch of peers from the peer source; more batches may follow until
    /// [`handle_peer_source_exhausted`](Self::handle_peer_source_exhausted).
    /// Unknown peers are probed, as many as `max_candidates` allows.
    pub fn handle_peer_source(&mut self, now: Instant, peers: Vec<(PeerId, Vec<Vec<u8>>)>) {
        // A late batch (the query went out before `Public`) probes nothing.
        if self.config.static_relays.is_empty() && self.active() {
            for (peer, addrs) in peers {
                if self.candidate_count() >= self.config.max_candidates {
                    break;
                }
                if self.peers.contains_key(&peer) {
                    continue;
                }
                let entry = Entry::new(false, addrs.clone(), None, State::Probing);
                self.peers.insert(peer, entry);
                let deadline = now.saturating_add(self.config.probe_timeout);
                self.set(peer, State::Probing, Some(deadline));
                self.actions.push_back(Action::Probe { peer, addrs });
            }
        }
        self.step(now);
    }

    /// The peer source has nothing more for the outstanding query.
    pub fn handle_peer_source_exhausted(&mut self, now: Instant) {
        self.querying = false;
        self.step(now);
    }

    /// The answer to an [`Action::Reserve`] or [`Action::Refresh`] of `peer`.
    /// An answer nobody waits for (after `Public`, a disconnection) is
    /// ignored.
    pub fn handle_reservation(
        &mut self,
        now: Instant,
        peer: PeerId,
        result: Result<Granted, ReserveFailure>,
    ) {
        self.unanswered.remove(&peer);
        let Some(entry) = self.peers.get_mut(&peer) else {
            return self.step(now);
        };
        match (&mut entry.state, result) {
            (State::Reserving, Ok(granted)) => {
                let expire = granted.expire;
                self.hold(now, peer, granted);
                self.actions.push_back(Action::Protect { peer });
                self.events.push_back(Event::RelayAdded {
                    relay: peer,
                    expire,
                });
                self.update_addrs();
            }
            (State::Reserving, Err(failure)) => self.failed(now, peer, failure),
            (State::Relay(h), Ok(granted)) if h.refreshing => {
                let expire = granted.expire;
                self.hold(now, peer, granted);
                self.events.push_back(Event::Refreshed {
                    relay: peer,
                    expire,
                });
                self.update_addrs();
            }
            (State::Relay(h), Err(failure)) if h.refreshing => {
                h.refreshing = false;
                h.failures += 1;
                let retry = now.saturating_add(self.config.refresh_retry_delay);
                if h.failures > self.config.refresh_retries || retry >= h.expire {
                    // Backoff only if the last refusal was the relay's.
                    let refused = failure == ReserveFailure::Refused;
                    self.give_up(now, peer, RemovedReason::RefreshFailed, refused);
                    self.update_addrs();
                } else {
                    h.refresh_at = retry;
                    self.set_deadline(peer, Some(retry));
                }
            }
            _ => {}
        }
        self.step(now);
    }

    /// `peer`'s last connection closed. A relay is dropped (a static one
    /// waits for its retry); a candidate stays.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerId) {
        if matches!(
            self.peers.get(&peer).map(|e| &e.state),
            Some(State::Relay(_))
        ) {
            self.events.push_back(Event::RelayRemoved {
                relay: peer,
                reason: RemovedReason::Disconnected,
            });
            self.actions.push_back(Action::Unprotect { peer });
            if self.peers[&peer].is_static {
                let at = now.saturating_add(self.config.static_retry);
                self.set(peer, State::Waiting, Some(at));
            } else {
                self.forget(peer);
            }
            self.update_addrs();
        }
        self.step(now);
    }

    /// Deadlines due by `now`: refreshes, expiries, probe timeouts,
    /// candidate ages, backoff ends, static retries, the boot delay and the
    /// peer-source interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, key));
            let Key::Peer(peer) = key else {
                if key == Key::Source {
                    // An unanswered query is over once the interval passed.
                    self.querying = false;
                }
                continue;
            };
            let Some(entry) = self.peers.get_mut(&peer) else {
                continue;
            };
            entry.deadline = None;
            match &mut entry.state {
                State::Probing | State::Backoff => self.forget(peer),
                State::Candidate => {
                    if !entry.is_static {
                        self.forget(peer);
                    }
                }
                State::Waiting => self.set(peer, State::Candidate, None),
                State::Relay(h) => {
                    if now >= h.expire {
                        self.give_up(now, peer, RemovedReason::Expired, false);
                        self.update_addrs();
                    } else if !h.refreshing && now >= h.refresh_at {
                        h.refreshing = true;
                        let expire = h.expire;
                        self.set_deadline(peer, Some(expire));
                        self.unanswered.insert(peer);
                        self.actions.push_back(Action::Refresh { peer });
                    } else {
                        let next = if h.refreshing { h.expire } else { h.refresh_at };
                        self.set_deadline(peer, Some(next));
                    }
                }
                State::Reserving => {}
            }
        }
        self.step(now);
    }

    // ------------------------------------------------------------ outputs

    /// The next action for the caller.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    // ------------------------------------------------------------ internals

    fn active(&self) -> bool {
        self.reachability != Reachability::Public
    }

    /// Dynamic candidates and probes: what `max_candidates` bounds.
    fn candidate_count(&self) -> usize {
        self.peers
            .values()
            .filter(|e| !e.is_static && matches!(e.state, State::Candidate | State::Probing))
            .count()
    }

    fn set(&mut self, peer: PeerId, state: State, deadline: Option<Instant>) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.state = state;
        }
        self.set_deadline(peer, deadline);
    }

    fn set_deadline(&mut self, peer: PeerId, deadline: Option<Instant>) {
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = e.deadline.take() {
            self.timers.remove(&(old, Key::Peer(peer)));
        }
        if let Some(at) = deadline {
            e.deadline = Some(at);
            self.timers.insert((at, Key::Peer(peer)));
        }
    }

    fn forget(&mut self, peer: PeerId) {
        self.set_deadline(peer, None);
        self.peers.remove(&peer);
    }

    fn set_global(&mut self, key: Key, at: Option<Instant>) {
        self.timers.retain(|(_, k)| *k != key);
        if let Some(at) = at {
            self.timers.insert((at, key));
        }
    }

    /// Holds a reservation on `peer` and schedules its refresh.
    fn hold(&mut self, now: Instant, peer: PeerId, granted: Granted) {
        let lifetime = granted.expire.saturating_duration_since(now);
        let lead = self.config.refresh_lead.min(lifetime / 4);
        let refresh_at = granted.expire.saturating_sub(lead);
        let held = Held {
            expire: granted.expire,
            addrs: granted.addrs,
            refresh_at,
            refreshing: false,
            failures: 0,
        };
        if let Some(e) = self.peers.get_mut(&peer) {
            e.streak = 0;
        }
        self.set(peer, State::Relay(held), Some(refresh_at));
    }

    /// A reservation failed: backoff (dynamic, refused), forgotten
    /// (dynamic, unreachable), or the next retry (static).
    fn failed(&mut self, now: Instant, peer: PeerId, failure: ReserveFailure) {
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if entry.is_static {
            let streak = entry.streak;
            let delay = self
                .config
                .static_retry
                .saturating_mul(1u32 << streak.min(16))
                .min(self.config.static_retry_max);
            if let Some(e) = self.peers.get_mut(&peer) {
                e.streak = streak.saturating_add(1);
            }
            self.set(peer, State::Waiting, Some(now.saturating_add(delay)));
            return;
        }
        match failure {
            ReserveFailure::Refused => self.back_off(now, peer),
            ReserveFailure::Unreachable => self.forget(peer),
        }
    }

    fn back_off(&mut self, now: Instant, peer: PeerId) {
        if self.config.max_backoffs == 0 {
            // No backoff may be remembered: the relay is forgotten.
            return self.forget(peer);
        }
        let backoffs: Vec<(Instant, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Backoff))
            .filter_map(|(p, e)| Some((e.deadline?, *p)))
            .collect();
        if backoffs.len() >= self.config.max_backoffs {
            if let Some(&(_, oldest)) = backoffs.iter().min() {
                self.forget(oldest);
            }
        }
        let until = now.saturating_add(self.config.backoff);
        self.set(peer, State::Backoff, Some(until));
    }

    /// Gives a relay up: the event, the unprotect, and then backoff (a
    /// dynamic relay whose refresh was refused), forgetting it (dynamic) or
    /// its retry (static).
    fn give_up(&mut self, now: Instant, peer: PeerId, reason: RemovedReason, refused: bool) {
        self.events.push_back(Event::RelayRemoved {
            relay: peer,
            reason,
        });
        self.actions.push_back(Action::Unprotect { peer });
        let is_static = self.peers.get(&peer).is_some_and(|e| e.is_static);
        if reason == RemovedReason::Public {
            let state = State::Candidate;
            let deadline = (!is_static).then(|| now.saturating_add(self.config.max_candidate_age));
            self.set(peer, state, deadline);
        } else if is_static {
            self.set(peer, State::Reserving, None);
            self.failed(now, peer, ReserveFailure::Refused);
        } else if refused {
            self.back_off(now, peer);
        } else {
            self.forget(peer);
        }
    }

    /// Recomputes the relay addresses; an event when they changed.
    fn update_addrs(&mut self) {
        let public_only = self.config.public_addrs_only;
        let mut addrs: Vec<Vec<u8>> = self
            .peers
            .values()
            .filter_map(|e| match &e.state {
                State::Relay(h) => Some(h.addrs.iter()),
                _ => None,
            })
            .flatten()
            .filter(|a| {
                addr::classify(a).is_ok_and(|i| !i.relayed && (!public_only || i.is_public()))
            })
            .map(|a| circuit_addr(a, None))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs.truncate(self.config.max_addrs);
        if addrs != self.addrs {
            self.addrs = addrs.clone();
            self.events.push_back(Event::AddrsChanged { addrs });
        }
    }

    /// After every input: reserve while relays are missing, ask the peer
    /// source while candidates are, and arm the boot and source timers.
    fn step(&mut self, now: Instant) {
        if !self.active() {
            self.set_global(Key::Boot, None);
            self.set_global(Key::Source, None);
            return;
        }
        let held = self
            .peers
            .values()
            .filter(|e| matches!(e.state, State::Relay(_) | State::Reserving))
            .count();
        let candidates = self.candidate_count();
        let dynamic = self.config.static_relays.is_empty();
        // go: during the boot delay, wait for min_candidates before the
        // first choice; replacing a relay later waits for nothing.
        let booting = dynamic
            && held == 0
            && now < self.boot_until
            && candidates < self.config.min_candidates;
        if booting {
            self.set_global(Key::Boot, Some(self.boot_until));
        } else {
            self.set_global(Key::Boot, None);
            for _ in held..self.desired {
                let Some(peer) = self.best_candidate() else {
                    break;
                };
                let addrs = self.peers[&peer].addrs.clone();
                self.set(peer, State::Reserving, None);
                self.unanswered.insert(peer);
                self.actions.push_back(Action::Reserve { peer, addrs });
            }
        }
        if self.querying && now >= self.next_query {
            // An unanswered query is over once the interval passed (as when
            // the source timer fires; it is not armed while enough
            // candidates were there, or while `Public`).
            self.querying = false;
        }
        if dynamic && candidates < self.config.min_candidates {
            if !self.querying && now >= self.next_query {
                self.querying = true;
                self.next_query = now.saturating_add(self.config.min_interval);
                let max = self.config.max_candidates - candidates;
                self.actions.push_back(Action::QueryPeerSource { max });
            }
            self.set_global(Key::Source, Some(self.next_query));
        } else {
            self.set_global(Key::Source, None);
        }
    }

    /// The candidate to reserve with next, by the configured choice.
    fn best_candidate(&mut self) -> Option<PeerId> {
        let ready: Vec<(PeerId, Option<Duration>)> = self
            .peers
            .iter()
            .filter(|(p, e)| matches!(e.state, State::Candidate) && !self.unanswered.contains(p))
            .map(|(p, e)| (*p, e.rtt))
            .collect();
        let mut best: Option<((u8, u128), PeerId)> = None;
        for (peer, rtt) in ready {
            let noise = u128::from(self.rng.next_u64());
            let score = match (self.config.choice, rtt) {
                (RelayChoice::Rtt { jitter_percent }, Some(rtt)) => {
                    let factor = 1000 + noise % (u128::from(jitter_percent) * 10 + 1);
                    (0, rtt.as_nanos().saturating_mul(factor))
                }
                _ => (1, noise),
            };
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, peer));
            }
        }
        best.map(|(_, p)| p)
    }
}

#[cfg(test)]
mod regressions {
    //! Bugs the model test (`core/tests/finder_model.rs`) found.

    use alloc::vec;
    use alloc::vec::Vec;
    use core::time::Duration;

    use super::*;
    use crate::Keypair;

    const SEC: Duration = Duration::from_secs(1);

    fn peer(n: u8) -> PeerId {
        Keypair::from_secret_bytes([n; 32]).peer_id()
    }

    fn actions(f: &mut Finder) -> Vec<Action> {
        core::iter::from_fn(|| f.poll_action()).collect()
    }

    fn dynamic() -> FinderConfig {
        FinderConfig {
            public_addrs_only: false,
            ..FinderConfig::default()
        }
    }

    /// A peer-source batch answering a query made before `Public` probed
    /// its peers while the finder was stopped.
    #[test]
    fn a_late_peer_source_batch_probes_nothing_while_public() {
        let t0 = Instant::ZERO;
        let mut f = Finder::new(t0, dynamic()).unwrap();
        assert!(matches!(
            actions(&mut f)[..],
            [Action::QueryPeerSource { .. }]
        ));
        f.handle_reachability(t0, Reachability::Public);
        f.handle_peer_source(t0, vec![(peer(1), vec![]), (peer(2), vec![])]);
        assert_eq!(actions(&mut f), vec![]);
        assert_eq!(f.tracked(), 0);
    }

    /// A query still flagged outstanding after its interval, with the
    /// source timer disarmed meanwhile (enough candidates for a while):
    /// the timer was re-armed in the past and no query went out.
    #[test]
    fn a_query_is_over_once_its_interval_passed_without_its_timer() {
        let t0 = Instant::ZERO;
        let mut f = Finder::new(t0, dynamic()).unwrap();
        actions(&mut f);
        // min_candidates (4) probes: the source timer is disarmed.
        f.handle_peer_source(t0, (1..=4).map(|n| (peer(n), vec![])).collect());
        assert_eq!(actions(&mut f).len(), 4);
        // The probes time out (20 s) after the interval (30 s) passed.
        let now = t0 + 40 * SEC;
        f.handle_timeout(now);
        assert!(actions(&mut f).contains(&Action::QueryPeerSource { max: 20 }));
        assert!(f.poll_timeout().is_some_and(|t| t > now));
    }

    /// Back from `Public`, a relay whose reservation was still unanswered
    /// was reserved with again, and the late answer taken for the new one.
    #[test]
    fn no_second_reserve_before_the_first_is_answered() {
        let t0 = Instant::ZERO;
        let relay = peer(7);
        let config = FinderConfig::with_static_relays(vec![(relay, vec![])]);
        let mut f = Finder::new(t0, config).unwrap();
        let reserve = Action::Reserve {
            peer: relay,
            addrs: vec![],
        };
        assert_eq!(actions(&mut f), vec![reserve.clone()]);
        f.handle_reachability(t0, Reachability::Public);
        f.handle_reachability(t0, Reachability::Private);
        assert_eq!(actions(&mut f), vec![], "the first is unanswered");
        // The late answer is ignored, then the relay is reserved again.
        let granted = Granted {
            expire: t0 + 3600 * SEC,
            addrs: vec![],
        };
        f.handle_reservation(t0, relay, Ok(granted));
        assert_eq!(f.relays().count(), 0);
        assert_eq!(f.poll_event(), None);
        assert_eq!(actions(&mut f), vec![reserve]);
    }

    /// A relay dropped (disconnected) while refreshing and identified again
    /// was reserved with at once; the late refresh failure then counted
    /// as the reservation's and the relay was forgotten.
    #[test]
    fn a_late_refresh_answer_is_not_taken_for_a_new_reserve() {
        let t0 = Instant::ZERO;
        let relay = peer(7);
        let mut config = dynamic();
        config.boot_delay = Duration::ZERO;
        config.desired_relays = 1;
        let mut f = Finder::new(t0, config).unwrap();
        let hop = PeerInfo {
            direct: true,
            supports_hop: true,
            addrs: vec![],
            rtt: None,
        };
        f.handle_identified(t0, relay, hop.clone());
        assert!(actions(&mut f).contains(&Action::Reserve {
            peer: relay,
            addrs: vec![]
        }));
        let expire = t0 + 100 * SEC;
        f.handle_reservation(
            t0,
            relay,
            Ok(Granted {
                expire,
                addrs: vec![],
            }),
        );
        let due = f.refresh_due(&relay).unwrap();
        f.handle_timeout(due);
        assert!(actions(&mut f).contains(&Action::Refresh { peer: relay }));
        f.handle_disconnected(due, relay);
        f.handle_identified(due, relay, hop);
        let reserve = Action::Reserve {
            peer: relay,
            addrs: vec![],
        };
        assert!(
            !actions(&mut f).contains(&reserve),
            "the refresh is unanswered"
        );
        // The late failure is ignored (not a forgotten relay): reserved now.
        f.handle_reservation(due, relay, Err(ReserveFailure::Unreachable));
        assert!(actions(&mut f).contains(&reserve));
    }

    /// With `max_backoffs` 0 a refused relay was kept in backoff anyway.
    #[test]
    fn max_backoffs_zero_keeps_no_backoff() {
        let t0 = Instant::ZERO;
        let mut config = dynamic();
        config.boot_delay = Duration::ZERO;
        config.max_backoffs = 0;
        let mut f = Finder::new(t0, config).unwrap();
        let hop = PeerInfo {
            direct: true,
            supports_hop: true,
            addrs: vec![],
            rtt: None,
        };
        f.handle_identified(t0, peer(1), hop);
        f.handle_reservation(t0, peer(1), Err(ReserveFailure::Refused));
        assert!(!f.is_backed_off(&peer(1)));
        assert_eq!(f.tracked(), 0);
    }
}
