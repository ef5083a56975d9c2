//! Whom to dial: an Ethereum-style dial scheduler, after go-ethereum's
//! `p2p/dial.go` (`dialScheduler`) and, for the bootnode fallback, its older
//! `dialstate` (removed in go-ethereum PR #20592).
//!
//! The scheduler decides *which peers* to dial; *how* (addresses, ranking,
//! limits) is the [`Dialer`](super::Dialer)'s business. It emits
//! [`Action::Dial`] and takes connected / disconnected / dial-done inputs.
//!
//! - **Quota.** At most `max_dialed_peers` = `max_peers / dial_ratio` (at
//!   least 1; 0 when `max_peers` is 0) peers connected by our own dials.
//!   Free dial slots = `min((max_dialed - dialed) * 2, max_active_dials) -
//!   dialing`, as go-ethereum's `freeDialSlots` (the factor 2 over-dials to
//!   make up for failures). go-ethereum lets the extra successes in while the
//!   total stays under `MaxPeers`; here [`Scheduler::handle_connected`]
//!   refuses an outbound connection beyond the quota
//!   ([`ConnectError::DialQuotaFull`]: the caller closes it), so the dialed
//!   count never exceeds the quota.
//! - **Order.** Static nodes first (random pick from the pool of static nodes
//!   that pass [`Scheduler::check_dial`], seeded, as go-ethereum's
//!   `startStaticDials`); they are re-dialed whenever they are disconnected
//!   and out of the history. Unlike go-ethereum, a static node's dial does
//!   not wait for a free slot (only for `max_active_dials`), and once it
//!   connects with the quota full, a dynamically dialed peer gives up its
//!   slot ([`Action::Disconnect`]): a static node that comes back is
//!   reconnected even when dynamic peers fill the quota. Then, when nobody at all has been connected for
//!   `fallback_interval` (20 s), one bootnode per scheduling pass,
//!   round-robin. Then dynamic candidates fed by the application
//!   ([`Scheduler::add_candidates`]); when fewer are buffered than there are
//!   free slots, one [`Action::FindCandidates`] (a discovery lookup) is asked
//!   for until [`Scheduler::handle_lookup_done`]. A lookup that brought no
//!   candidate `check_dial` accepts holds the next one for `lookup_hold`
//!   (1 s): a caller answering at once with nothing new would otherwise be
//!   asked again at the same instant, forever (go-ethereum's lookups block
//!   on the network; an in-memory answer does not).
//! - **`check_dial`** refuses, with a typed [`SkipReason`]: ourselves, peers
//!   being dialed, connected, or with a pending inbound connection, IPs
//!   outside the `net_restrict` allow-list, and peers dialed within
//!   `history_expiration` (35 s = go-ethereum's `inboundThrottleTime` + 5 s).
//! - **Static node resolution.** When a static node's dial fails, the
//!   scheduler asks for its current address ([`Action::Resolve`]), at most
//!   once per resolve delay: 60 s, doubling after each failed lookup up to
//!   1 h, back to 60 s after a successful one; a resolved address is dialed
//!   again at once (go-ethereum's `dialTask.resolve`). A static node with no
//!   IP is dialed anyway (the caller may know it by other addresses),
//!   unless `net_restrict` is set.
//!
//! Memory is bounded by `max_candidates`, `max_static`, `max_history` (new
//! dials wait while the history is full) and the connected peers the caller
//! reports.
//!
//! **When to call again:** after any input or command, drain
//! [`Scheduler::poll_action`] and [`Scheduler::poll_event`] until `None`,
//! then sleep until [`Scheduler::poll_timeout`] and call
//! [`Scheduler::handle_timeout`] (spurious calls are harmless).
//!
//! ```
//! use sansp2p::dial::scheduler::{Action, Candidate, ConnDirection, Scheduler, SchedulerConfig};
//! use sansp2p::{Instant, Keypair};
//!
//! let me = Keypair::from_secret_bytes([1; 32]).peer_id();
//! let other = Keypair::from_secret_bytes([2; 32]).peer_id();
//! let now = Instant::ZERO;
//! let mut s = Scheduler::new(me, SchedulerConfig::default(), now).unwrap();
//! // Nothing buffered: it asks for a discovery lookup first.
//! assert_eq!(s.poll_action(), Some(Action::FindCandidates { want: 32 }));
//! s.add_candidates(now, [Candidate::new(other)]);
//! assert!(matches!(s.poll_action(), Some(Action::Dial { peer, .. }) if peer == other));
//! s.handle_connected(now, other, ConnDirection::Outbound).unwrap();
//! s.handle_dial_done(now, other, true).unwrap();
//! assert_eq!(s.dialed_peers(), 1);
//! ```

use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::IpAddr;
use core::time::Duration;

use crate::collections::{HashMap, HashSet};

use crate::identity::PeerId;
use crate::time::Instant;

/// A peer the scheduler may dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Its IP, if known (checked against `net_restrict`).
    pub ip: Option<IpAddr>,
}

impl Candidate {
    /// A candidate with no known IP.
    pub fn new(peer: PeerId) -> Self {
        Candidate { peer, ip: None }
    }

    /// A candidate at `ip`.
    pub fn with_ip(peer: PeerId, ip: IpAddr) -> Self {
        Candidate { peer, ip: Some(ip) }
    }
}

/// A CIDR allow-list (go-ethereum's `netutil.Netlist`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetRestrict {
    nets: Vec<(IpAddr, u8)>,
}

/// A network that cannot be added to a [`NetRestrict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetRestrictError {
    /// The prefix is longer than the address (32 for IPv4, 128 for IPv6).
    #[error("prefix length {0} too long for the address family")]
    PrefixTooLong(u8),
}

impl NetRestrict {
    /// An empty list (allows nothing).
    pub fn new() -> Self {
        NetRestrict::default()
    }

    /// Allows `ip/prefix`.
    pub fn add(&mut self, ip: IpAddr, prefix: u8) -> Result<(), NetRestrictError> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(NetRestrictError::PrefixTooLong(prefix));
        }
        self.nets.push((ip, prefix));
        Ok(())
    }

    /// Whether `ip` is in one of the networks (IPv4-mapped IPv6 addresses
    /// match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|&(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

/// Limits, delays and lists of a [`Scheduler`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Peers in total (go-ethereum `MaxPeers`; 50 as in its node defaults).
    pub max_peers: usize,
    /// One dialed peer per `dial_ratio` peers (go-ethereum `defaultDialRatio`, 3).
    pub dial_ratio: usize,
    /// Dials at once (go-ethereum `defaultMaxPendingPeers`, 50).
    pub max_active_dials: usize,
    /// How long a dialed peer is not dialed again (go-ethereum
    /// `dialHistoryExpiration`, 35 s).
    pub history_expiration: Duration,
    /// No peers for this long: dial bootnodes (go-ethereum's old
    /// `fallbackInterval`, 20 s).
    pub fallback_interval: Duration,
    /// First delay between lookups of a static node (go-ethereum
    /// `initialResolveDelay`, 60 s).
    pub initial_resolve_delay: Duration,
    /// Longest delay between lookups of a static node (go-ethereum
    /// `maxResolveDelay`, 1 h).
    pub max_resolve_delay: Duration,
    /// Ask for lookups of static nodes whose dial failed (go-ethereum does
    /// when it has a resolver, i.e. discovery; default on).
    pub resolve_static: bool,
    /// A lookup not answered within this long counts as not found, so a
    /// caller that never answers [`Action::Resolve`] delays the static
    /// node's redial by this much, not forever (ours: 30 s).
    pub resolve_timeout: Duration,
    /// How long a lookup that brought no dialable candidate holds the next
    /// one (ours: 1 s). Without it, a caller that answers
    /// [`Action::FindCandidates`] at once with peers already connected,
    /// being dialed, recently dialed or ourselves is asked again at the
    /// same instant, forever: a busy loop. A lookup that brought one
    /// lets the next start at once. The hold delays only lookups:
    /// candidates added meanwhile and freed slots are used as usual.
    pub lookup_hold: Duration,
    /// IP allow-list (go-ethereum `NetRestrict`); `None` allows all.
    pub net_restrict: Option<NetRestrict>,
    /// Bootnodes, dialed round-robin by the fallback.
    pub bootnodes: Vec<Candidate>,
    /// Buffered dynamic candidates (ours: 256).
    pub max_candidates: usize,
    /// Static nodes (ours: 1 024).
    pub max_static: usize,
    /// Peers in the dial history (ours: 16 384; new dials wait when full).
    pub max_history: usize,
    /// Seed of the static-node pick.
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_peers: 50,
            dial_ratio: 3,
            max_active_dials: 50,
            history_expiration: Duration::from_secs(35),
            fallback_interval: Duration::from_secs(20),
            initial_resolve_delay: Duration::from_secs(60),
            max_resolve_delay: Duration::from_secs(3600),
            resolve_static: true,
            resolve_timeout: Duration::from_secs(30),
            lookup_hold: Duration::from_secs(1),
            net_restrict: None,
            bootnodes: Vec::new(),
            max_candidates: 256,
            max_static: 1024,
            max_history: 16_384,
            seed: 0,
        }
    }
}

/// A [`SchedulerConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerConfigError {
    /// `dial_ratio` is zero.
    #[error("dial ratio must be at least 1")]
    ZeroDialRatio,
    /// A limit of zero (named by field).
    #[error("scheduler limit `{0}` must be at least 1")]
    ZeroLimit(&'static str),
    /// `initial_resolve_delay` is zero or above `max_resolve_delay`.
    #[error("resolve delays must satisfy 0 < initial <= max")]
    BadResolveDelay,
    /// `resolve_timeout` is zero.
    #[error("resolve_timeout must be above zero")]
    ZeroResolveTimeout,
    /// `lookup_hold` is zero (it would not stop the busy loop it is for).
    #[error("lookup_hold must be above zero")]
    ZeroLookupHold,
}

impl SchedulerConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), SchedulerConfigError> {
        if self.dial_ratio == 0 {
            return Err(SchedulerConfigError::ZeroDialRatio);
        }
        if self.resolve_timeout.is_zero() {
            return Err(SchedulerConfigError::ZeroResolveTimeout);
        }
        if self.lookup_hold.is_zero() {
            return Err(SchedulerConfigError::ZeroLookupHold);
        }
        for (name, v) in [
            ("max_active_dials", self.max_active_dials),
            ("max_candidates", self.max_candidates),
            ("max_static", self.max_static),
            ("max_history", self.max_history),
        ] {
            if v == 0 {
                return Err(SchedulerConfigError::ZeroLimit(name));
            }
        }
        if self.initial_resolve_delay.is_zero()
            || self.initial_resolve_delay > self.max_resolve_delay
        {
            return Err(SchedulerConfigError::BadResolveDelay);
        }
        Ok(())
    }

    /// `max_peers / dial_ratio`, at least 1 unless `max_peers` is 0
    /// (go-ethereum's `maxDialedConns`).
    pub fn max_dialed_peers(&self) -> usize {
        if self.max_peers == 0 {
            0
        } else {
            (self.max_peers / self.dial_ratio.max(1)).max(1)
        }
    }
}

/// Why [`Scheduler::check_dial`] refuses a peer (go-ethereum's `checkDial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// It is the local peer.
    #[error("is self")]
    SelfPeer,
    /// A dial to it runs.
    #[error("already dialing")]
    AlreadyDialing,
    /// It is connected.
    #[error("already connected")]
    AlreadyConnected,
    /// It has an inbound connection being set up.
    #[error("peer has pending inbound connection")]
    PendingInbound,
    /// Its IP is not in the allow-list (or unknown while a list is set).
    #[error("not contained in netrestrict list")]
    NetRestrict,
    /// It was dialed less than `history_expiration` ago.
    #[error("recently dialed")]
    RecentlyDialed,
}

/// Why a scheduler command or input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// `max_static` static nodes are configured.
    #[error("too many static nodes")]
    TooManyStatic,
    /// The local peer cannot be a static node.
    #[error("static node is self")]
    StaticIsSelf,
    /// No dial or lookup of this peer runs.
    #[error("no dial task for this peer")]
    UnknownTask,
}

/// Why [`Scheduler::handle_connected`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer is already connected; nothing changed.
    #[error("peer already connected")]
    AlreadyConnected,
    /// An outbound connection beyond the dialed-peer quota: close it.
    #[error("dialed-peer quota full")]
    DialQuotaFull,
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnDirection {
    /// We dialed it (counts against the dialed-peer quota).
    Outbound,
    /// The peer dialed us.
    Inbound,
}

/// What kind of dial an [`Action::Dial`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialKind {
    /// A static node.
    Static,
    /// A bootnode, by the no-peers fallback.
    Bootnode,
    /// A dynamic candidate.
    Dynamic,
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Connect to `peer`, then report [`Scheduler::handle_dial_done`].
    Dial {
        /// The peer.
        peer: PeerId,
        /// Its IP as known here.
        ip: Option<IpAddr>,
        /// Why it is dialed.
        kind: DialKind,
    },
    /// Look up the current address of a static node, then report
    /// [`Scheduler::handle_resolved`].
    Resolve {
        /// The peer.
        peer: PeerId,
    },
    /// Find about `want` more candidates (a discovery lookup), feed them
    /// with [`Scheduler::add_candidates`], then report
    /// [`Scheduler::handle_lookup_done`].
    FindCandidates {
        /// How many would fill the free slots.
        want: usize,
    },
    /// Close the connections to `peer`, a dynamically dialed peer: a static
    /// node took its dial slot. The scheduler has already stopped counting
    /// it; report its disconnection as usual.
    Disconnect {
        /// The peer.
        peer: PeerId,
    },
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A dynamic candidate or bootnode was not dialed.
    Skipped {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: SkipReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Dialing,
    Resolving,
    Redialing,
}

#[derive(Debug, Clone, Copy)]
struct Task {
    kind: DialKind,
    phase: Phase,
    /// While resolving: when the lookup counts as not found.
    deadline: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Static {
    candidate: Candidate,
    pool_index: Option<usize>,
    resolve_delay: Duration,
    last_resolved: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// Peers are connected, or there are no bootnodes.
    Off,
    /// No peers since; dial bootnodes from this instant.
    Waiting(Instant),
    /// Dial bootnodes.
    Active,
}

/// The dial scheduler; see the [module docs](self).
///
/// **When to call again:** after any input or command, drain
/// [`poll_action`](Self::poll_action) and [`poll_event`](Self::poll_event)
/// until `None`, then sleep until [`poll_timeout`](Self::poll_timeout).
#[derive(Debug, Clone)]
pub struct Scheduler {
    local: PeerId,
    config: SchedulerConfig,
    max_dialed: usize,
    peers: HashMap<PeerId, ConnDirection>,
    dialed: usize,
    pending_inbound: HashSet<PeerId>,
    dialing: HashMap<PeerId, Task>,
    statics: HashMap<PeerId, Static>,
    pool: Vec<PeerId>,
    history: HashMap<PeerId, Instant>,
    history_expiry: BTreeSet<(Instant, PeerId)>,
    /// Static lookups under way, by the moment they count as not found.
    resolve_deadlines: BTreeSet<(Instant, PeerId)>,
    candidates: VecDeque<Candidate>,
    bootnodes: VecDeque<Candidate>,
    fallback: Fallback,
    lookup_running: bool,
    /// The running lookup brought a candidate `check_dial` accepted.
    lookup_fed: bool,
    /// No lookup starts before this instant (set by a lookup that brought
    /// no dialable candidate).
    lookup_hold: Option<Instant>,
    rng: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Scheduler {
    /// A scheduler for the local peer `local`, started at `now`.
    pub fn new(
        local: PeerId,
        config: SchedulerConfig,
        now: Instant,
    ) -> Result<Self, SchedulerConfigError> {
        config.validate()?;
        let bootnodes: VecDeque<Candidate> = config.bootnodes.iter().copied().collect();
        let fallback = if bootnodes.is_empty() {
            Fallback::Off
        } else {
            Fallback::Waiting(now + config.fallback_interval)
        };
        let mut s = Scheduler {
            local,
            max_dialed: config.max_dialed_peers(),
            rng: config.seed,
            config,
            peers: HashMap::default(),
            dialed: 0,
            pending_inbound: HashSet::default(),
            dialing: HashMap::default(),
            statics: HashMap::default(),
            pool: Vec::new(),
            history: HashMap::default(),
            history_expiry: BTreeSet::new(),
            resolve_deadlines: BTreeSet::new(),
            candidates: VecDeque::new(),
            bootnodes,
            fallback,
            lookup_running: false,
            lookup_fed: false,
            lookup_hold: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.fill(now);
        Ok(s)
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The dialed-peer quota.
    pub fn max_dialed_peers(&self) -> usize {
        self.max_dialed
    }

    /// Peers connected by our dials.
    pub fn dialed_peers(&self) -> usize {
        self.dialed
    }

    /// Peers connected.
    pub fn connected_peers(&self) -> usize {
        self.peers.len()
    }

    /// The connected peers, each with the direction it is counted in.
    pub fn connected(&self) -> impl Iterator<Item = (PeerId, ConnDirection)> + '_ {
        self.peers.iter().map(|(p, d)| (*p, *d))
    }

    /// Dial (and static lookup) tasks running.
    pub fn dialing(&self) -> usize {
        self.dialing.len()
    }

    /// Whether `peer` is being dialed.
    pub fn is_dialing(&self, peer: &PeerId) -> bool {
        self.dialing.contains_key(peer)
    }

    /// Whether `peer` is in the dial history at `now`.
    pub fn in_history(&self, now: Instant, peer: &PeerId) -> bool {
        self.history.get(peer).is_some_and(|&until| now < until)
    }

    /// Buffered dynamic candidates.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// Peers in the dial history.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// go-ethereum's `freeDialSlots` (may be negative), or 0 while the
    /// history is full.
    pub fn free_slots(&self) -> isize {
        if self.history.len() >= self.config.max_history {
            return 0;
        }
        let slots = (self.max_dialed.saturating_sub(self.dialed))
            .saturating_mul(2)
            .min(self.config.max_active_dials);
        slots as isize - self.dialing.len() as isize
    }

    /// Whether a static node's dial may start: fewer than
    /// `max_active_dials` dials run and the history has room.
    fn static_room(&self) -> bool {
        self.history.len() < self.config.max_history
            && self.dialing.len() < self.config.max_active_dials
    }

    /// Whether `c` may be dialed now (go-ethereum's `checkDial`).
    pub fn check_dial(&self, c: &Candidate) -> Result<(), SkipReason> {
        if c.peer == self.local {
            return Err(SkipReason::SelfPeer);
        }
        if self.dialing.contains_key(&c.peer) {
            return Err(SkipReason::AlreadyDialing);
        }
        if self.peers.contains_key(&c.peer) {
            return Err(SkipReason::AlreadyConnected);
        }
        if self.pending_inbound.contains(&c.peer) {
            return Err(SkipReason::PendingInbound);
        }
        if let Some(nr) = &self.config.net_restrict {
            if !c.ip.is_some_and(|ip| nr.contains(ip)) {
                return Err(SkipReason::NetRestrict);
            }
        }
        if self.history.contains_key(&c.peer) {
            return Err(SkipReason::RecentlyDialed);
        }
        Ok(())
    }

    // ---- inputs ----

    /// A first connection to `peer` is up.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        direction: ConnDirection,
    ) -> Result<(), ConnectError> {
        if self.peers.contains_key(&peer) {
            return Err(ConnectError::AlreadyConnected);
        }
        if direction == ConnDirection::Outbound {
            if self.dialed >= self.max_dialed && !self.make_room_for(&peer) {
                return Err(ConnectError::DialQuotaFull);
            }
            self.dialed += 1;
        }
        self.peers.insert(peer, direction);
        self.remove_from_pool(&peer);
        self.fallback = Fallback::Off;
        self.fill(now);
        Ok(())
    }

    /// The last connection to `peer` is gone.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerId) {
        if let Some(dir) = self.peers.remove(&peer) {
            if dir == ConnDirection::Outbound {
                self.dialed -= 1;
            }
            if self.peers.is_empty() && !self.bootnodes.is_empty() {
                self.fallback = Fallback::Waiting(now + self.config.fallback_interval);
            }
            self.update_pool(&peer);
            self.fill(now);
        }
    }

    /// An inbound connection from `peer` is being set up.
    pub fn handle_inbound_pending(&mut self, now: Instant, peer: PeerId) {
        self.pending_inbound.insert(peer);
        self.remove_from_pool(&peer);
        self.fill(now);
    }

    /// The inbound connection from `peer` is set up or failed (report
    /// [`handle_connected`](Self::handle_connected) first if it is up).
    pub fn handle_inbound_done(&mut self, now: Instant, peer: PeerId) {
        if self.pending_inbound.remove(&peer) {
            self.update_pool(&peer);
            self.fill(now);
        }
    }

    /// The dial of `peer` ended (report
    /// [`handle_connected`](Self::handle_connected) first if it connected).
    pub fn handle_dial_done(
        &mut self,
        now: Instant,
        peer: PeerId,
        connected: bool,
    ) -> Result<(), SchedulerError> {
        let task = *self.dialing.get(&peer).ok_or(SchedulerError::UnknownTask)?;
        if task.phase == Phase::Resolving {
            return Err(SchedulerError::UnknownTask);
        }
        let resolve = !connected
            && task.kind == DialKind::Static
            && task.phase == Phase::Dialing
            && self.config.resolve_static
            && self.statics.get(&peer).is_some_and(|s| {
                s.last_resolved
                    .is_none_or(|at| now.saturating_duration_since(at) >= s.resolve_delay)
            });
        if resolve {
            let deadline = now + self.config.resolve_timeout;
            if let Some(t) = self.dialing.get_mut(&peer) {
                t.phase = Phase::Resolving;
                t.deadline = Some(deadline);
            }
            self.resolve_deadlines.insert((deadline, peer));
            self.actions.push_back(Action::Resolve { peer });
        } else {
            self.dialing.remove(&peer);
            self.update_pool(&peer);
        }
        self.fill(now);
        Ok(())
    }

    /// The lookup of a static node ended: `Some(ip)` is its current address
    /// (dialed again at once), `None` means not found.
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        peer: PeerId,
        ip: Option<IpAddr>,
    ) -> Result<(), SchedulerError> {
        match self.dialing.get_mut(&peer) {
            Some(t) if t.phase == Phase::Resolving => {
                if let Some(at) = t.deadline.take() {
                    self.resolve_deadlines.remove(&(at, peer));
                }
            }
            _ => return Err(SchedulerError::UnknownTask),
        }
        let max = self.config.max_resolve_delay;
        let initial = self.config.initial_resolve_delay;
        let Some(s) = self.statics.get_mut(&peer) else {
            // Removed while resolving.
            self.dialing.remove(&peer);
            self.fill(now);
            return Ok(());
        };
        s.last_resolved = Some(now);
        match ip {
            Some(ip) => {
                s.resolve_delay = initial;
                s.candidate.ip = Some(ip);
                if let Some(t) = self.dialing.get_mut(&peer) {
                    t.phase = Phase::Redialing;
                }
                self.actions.push_back(Action::Dial {
                    peer,
                    ip: Some(ip),
                    kind: DialKind::Static,
                });
            }
            None => {
                s.resolve_delay = s.resolve_delay.saturating_mul(2).min(max);
                self.dialing.remove(&peer);
                self.update_pool(&peer);
            }
        }
        self.fill(now);
        Ok(())
    }

    /// The discovery lookup asked by [`Action::FindCandidates`] ended. If
    /// it brought no candidate that [`check_dial`](Self::check_dial)
    /// accepted, the next lookup waits `lookup_hold`.
    pub fn handle_lookup_done(&mut self, now: Instant) {
        if self.lookup_running && !self.lookup_fed {
            self.lookup_hold = Some(now + self.config.lookup_hold);
        }
        self.lookup_running = false;
        self.lookup_fed = false;
        self.fill(now);
    }

    /// Whether a lookup is asked for and not done yet.
    pub fn lookup_running(&self) -> bool {
        self.lookup_running
    }

    /// Expires the history and starts the bootnode fallback when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.history_expiry.first() {
            if at > now {
                break;
            }
            self.history_expiry.pop_first();
            self.history.remove(&peer);
            self.update_pool(&peer);
        }
        while let Some(&(at, peer)) = self.resolve_deadlines.first() {
            if at > now {
                break;
            }
            self.resolve_deadlines.pop_first();
            // Unanswered: not found.
            let _ = self.handle_resolved(now, peer, None);
        }
        if let Fallback::Waiting(at) = self.fallback {
            if at <= now {
                self.fallback = Fallback::Active;
            }
        }
        if self.lookup_hold.is_some_and(|at| at <= now) {
            self.lookup_hold = None;
        }
        self.fill(now);
    }

    // ---- commands ----

    /// Adds a static node: kept connected, dialed before anything else.
    pub fn add_static(&mut self, now: Instant, c: Candidate) -> Result<(), SchedulerError> {
        if c.peer == self.local {
            return Err(SchedulerError::StaticIsSelf);
        }
        if self.statics.contains_key(&c.peer) {
            return Ok(());
        }
        if self.statics.len() >= self.config.max_static {
            return Err(SchedulerError::TooManyStatic);
        }
        self.statics.insert(
            c.peer,
            Static {
                candidate: c,
                pool_index: None,
                resolve_delay: self.config.initial_resolve_delay,
                last_resolved: None,
            },
        );
        self.update_pool(&c.peer);
        self.fill(now);
        Ok(())
    }

    /// Removes a static node; returns whether it was one. A running dial
    /// to it is not cancelled.
    pub fn remove_static(&mut self, now: Instant, peer: &PeerId) -> bool {
        self.remove_from_pool(peer);
        let was = self.statics.remove(peer).is_some();
        self.fill(now);
        was
    }

    /// Buffers dynamic candidates (beyond `max_candidates` they are
    /// dropped); returns how many were taken. One that
    /// [`check_dial`](Self::check_dial) accepts, taken while a lookup runs,
    /// lets the next lookup start without `lookup_hold`.
    pub fn add_candidates(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = Candidate>,
    ) -> usize {
        let mut taken = 0;
        for c in candidates {
            if self.candidates.len() >= self.config.max_candidates {
                break;
            }
            if self.lookup_running && !self.lookup_fed && self.check_dial(&c).is_ok() {
                self.lookup_fed = true;
            }
            self.candidates.push_back(c);
            taken += 1;
        }
        self.fill(now);
        taken
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
        let history = self.history_expiry.first().map(|&(at, _)| at);
        let fallback = match self.fallback {
            Fallback::Waiting(at) => Some(at),
            _ => None,
        };
        let resolve = self.resolve_deadlines.first().map(|&(at, _)| at);
        [history, fallback, resolve, self.lookup_hold]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- internals ----

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A static node connected by our dial while the dialed quota is full:
    /// the dynamically dialed peer with the lowest id gives up its slot
    /// ([`Action::Disconnect`]). Returns whether one did.
    fn make_room_for(&mut self, peer: &PeerId) -> bool {
        if !self.statics.contains_key(peer) {
            return false;
        }
        let victim = self
            .peers
            .iter()
            .filter(|(p, d)| **d == ConnDirection::Outbound && !self.statics.contains_key(*p))
            .map(|(p, _)| *p)
            .min_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let Some(victim) = victim else {
            return false;
        };
        self.peers.remove(&victim);
        self.dialed -= 1;
        self.actions.push_back(Action::Disconnect { peer: victim });
        true
    }

    /// Starts what the free slots allow (go-ethereum's loop head). Static
    /// nodes are dialed whenever a dial may start at all, free slots or not
    /// (go-ethereum waits for a free slot, so a static node that comes back
    /// while dynamic peers fill the quota stays unconnected until one
    /// leaves); [`make_room_for`](Self::make_room_for) keeps the quota.
    fn fill(&mut self, now: Instant) {
        while self.static_room() && !self.pool.is_empty() {
            let idx = (self.next_random() % self.pool.len() as u64) as usize;
            let peer = self.pool[idx];
            self.remove_from_pool(&peer);
            let c = self.statics[&peer].candidate;
            self.start_dial(now, c, DialKind::Static);
        }
        let mut slots = self.free_slots();
        if slots > 0 && self.fallback == Fallback::Active {
            if let Some(b) = self.bootnodes.pop_front() {
                self.bootnodes.push_back(b);
                match self.check_dial(&b) {
                    Ok(()) => self.start_dial(now, b, DialKind::Bootnode),
                    Err(reason) => self.events.push_back(Event::Skipped {
                        peer: b.peer,
                        reason,
                    }),
                }
                slots = self.free_slots();
            }
        }
        while slots > 0 {
            let Some(c) = self.candidates.pop_front() else {
                break;
            };
            match self.check_dial(&c) {
                Ok(()) => {
                    self.start_dial(now, c, DialKind::Dynamic);
                    slots = self.free_slots();
                }
                Err(reason) => self.events.push_back(Event::Skipped {
                    peer: c.peer,
                    reason,
                }),
            }
        }
        if self.lookup_hold.is_some_and(|at| at <= now) {
            self.lookup_hold = None;
        }
        if slots > 0
            && (self.candidates.len() as isize) < slots
            && !self.lookup_running
            && self.lookup_hold.is_none()
        {
            self.lookup_running = true;
            self.actions.push_back(Action::FindCandidates {
                want: slots as usize - self.candidates.len(),
            });
        }
    }

    fn start_dial(&mut self, now: Instant, c: Candidate, kind: DialKind) {
        let until = now + self.config.history_expiration;
        if let Some(old) = self.history.insert(c.peer, until) {
            self.history_expiry.remove(&(old, c.peer));
        }
        self.history_expiry.insert((until, c.peer));
        self.dialing.insert(
            c.peer,
            Task {
                kind,
                phase: Phase::Dialing,
                deadline: None,
            },
        );
        self.actions.push_back(Action::Dial {
            peer: c.peer,
            ip: c.ip,
            kind,
        });
    }

    /// Puts a static node back in the pool if it passes `check_dial`.
    fn update_pool(&mut self, peer: &PeerId) {
        let Some(s) = self.statics.get(peer) else {
            return;
        };
        if s.pool_index.is_none() && self.check_dial(&s.candidate).is_ok() {
            let idx = self.pool.len();
            self.pool.push(*peer);
            if let Some(s) = self.statics.get_mut(peer) {
                s.pool_index = Some(idx);
            }
        }
    }

    fn remove_from_pool(&mut self, peer: &PeerId) {
        let Some(idx) = self.statics.get_mut(peer).and_then(|s| s.pool_index.take()) else {
            return;
        };
        self.pool.swap_remove(idx);
        if let Some(moved) = self.pool.get(idx).copied() {
            if let Some(s) = self.statics.get_mut(&moved) {
                s.pool_index = Some(idx);
            }
        }
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn peer(n: u64) -> PeerId {
        let mut mh = [0u8; 10];
        mh[1] = 8;
        mh[2..].copy_from_slice(&n.to_be_bytes());
        PeerId::from_bytes(&mh).unwrap()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn at(s: u64) -> Instant {
        Instant::ZERO + S(s)
    }

    fn actions(s: &mut Scheduler) -> Vec<Action> {
        core::iter::from_fn(|| s.poll_action()).collect()
    }

    fn events(s: &mut Scheduler) -> Vec<Event> {
        core::iter::from_fn(|| s.poll_event()).collect()
    }

    fn dials(a: &[Action]) -> Vec<(PeerId, DialKind)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Dial { peer, kind, .. } => Some((*peer, *kind)),
                _ => None,
            })
            .collect()
    }

    fn small() -> SchedulerConfig {
        let mut c = SchedulerConfig::default();
        c.max_peers = 6; // 2 dialed peers, 4 slots
        c
    }

    #[test]
    fn slots_quota_and_lookups() {
        let mut s = Scheduler::new(peer(0), small(), at(0)).unwrap();
        assert_eq!(s.max_dialed_peers(), 2);
        assert_eq!(actions(&mut s), [Action::FindCandidates { want: 4 }]);
        s.add_candidates(at(0), (1..=10).map(|i| Candidate::new(peer(i))));
        let a = actions(&mut s);
        assert_eq!(dials(&a).len(), 4, "min((2 - 0) * 2, 50) - 0 slots");
        assert!(
            a.iter().all(|a| matches!(a, Action::Dial { .. })),
            "lookup still running"
        );
        // Two connect: no free slots ((2 - 2) * 2 - 2 dialing < 0).
        for i in 1..=2 {
            s.handle_connected(at(1), peer(i), ConnDirection::Outbound)
                .unwrap();
            s.handle_dial_done(at(1), peer(i), true).unwrap();
        }
        assert_eq!(s.free_slots(), -2);
        s.handle_dial_done(at(1), peer(3), false).unwrap();
        assert!(actions(&mut s).is_empty());
        // A third outbound connection would break the quota.
        assert_eq!(
            s.handle_connected(at(1), peer(4), ConnDirection::Outbound),
            Err(ConnectError::DialQuotaFull)
        );
        assert_eq!(
            s.handle_connected(at(1), peer(1), ConnDirection::Inbound),
            Err(ConnectError::AlreadyConnected)
        );
        s.handle_dial_done(at(1), peer(4), false).unwrap();
        assert_eq!(s.dialed_peers(), 2);
        // Inbound peers do not count.
        s.handle_connected(at(1), peer(50), ConnDirection::Inbound)
            .unwrap();
        // One dialed peer leaves: two slots, the buffer refills them.
        s.handle_disconnected(at(2), peer(1));
        assert_eq!(
            dials(&actions(&mut s)),
            [(peer(5), DialKind::Dynamic), (peer(6), DialKind::Dynamic)]
        );
        assert_eq!(s.dialing(), 2);
        // The lookup ends; the buffer (4 left) covers no free slot: no new lookup.
        s.handle_lookup_done(at(2));
        assert!(actions(&mut s).is_empty());
    }

    #[test]
    fn a_lookup_that_brings_nothing_dialable_holds_the_next_one() {
        let mut s = Scheduler::new(peer(0), small(), at(0)).unwrap();
        s.handle_connected(at(0), peer(1), ConnDirection::Inbound)
            .unwrap();
        // Every lookup is answered at once with ourselves and a connected
        // peer. Without the hold this loop would never end on its own.
        let mut lookups = 0;
        for _ in 0..100 {
            let a = actions(&mut s);
            if !a.iter().any(|a| matches!(a, Action::FindCandidates { .. })) {
                break;
            }
            lookups += 1;
            s.add_candidates(at(0), [Candidate::new(peer(0)), Candidate::new(peer(1))]);
            s.handle_lookup_done(at(0));
        }
        assert_eq!(lookups, 1, "one lookup at the same instant");
        assert!(!s.lookup_running());
        // The hold is the scheduler's deadline; it ends there, not before.
        let hold = at(0) + Duration::from_secs(1);
        assert_eq!(s.poll_timeout(), Some(hold));
        s.handle_timeout(hold - Duration::from_millis(1));
        assert!(actions(&mut s).is_empty());
        // Candidates added during the hold are dialed all the same.
        s.add_candidates(at(0), [Candidate::new(peer(2))]);
        assert_eq!(
            actions(&mut s),
            [Action::Dial {
                peer: peer(2),
                ip: None,
                kind: DialKind::Dynamic
            }],
            "the dial, no lookup"
        );
        s.handle_timeout(hold);
        assert_eq!(actions(&mut s), [Action::FindCandidates { want: 3 }]);
        // A lookup that brings a dialable candidate lets the next one
        // start at once.
        s.add_candidates(hold, [Candidate::new(peer(3))]);
        assert_eq!(dials(&actions(&mut s)), [(peer(3), DialKind::Dynamic)]);
        s.handle_lookup_done(hold);
        assert_eq!(actions(&mut s), [Action::FindCandidates { want: 2 }]);
        // A fruitless one holds again; a done with no lookup running
        // changes nothing.
        s.add_candidates(hold, [Candidate::new(peer(1))]);
        s.handle_lookup_done(hold);
        s.handle_lookup_done(hold);
        assert!(actions(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(hold + Duration::from_secs(1)));
        let mut bad = small();
        bad.lookup_hold = Duration::ZERO;
        assert_eq!(bad.validate(), Err(SchedulerConfigError::ZeroLookupHold));
    }

    #[test]
    fn history_blocks_redials_for_35_seconds() {
        let mut s = Scheduler::new(peer(0), small(), at(0)).unwrap();
        s.add_candidates(at(0), [Candidate::new(peer(1))]);
        actions(&mut s);
        s.handle_dial_done(at(1), peer(1), false).unwrap();
        s.add_candidates(at(1), [Candidate::new(peer(1)), Candidate::new(peer(0))]);
        assert_eq!(
            events(&mut s),
            [
                Event::Skipped {
                    peer: peer(1),
                    reason: SkipReason::RecentlyDialed
                },
                Event::Skipped {
                    peer: peer(0),
                    reason: SkipReason::SelfPeer
                }
            ]
        );
        assert!(s.in_history(at(34), &peer(1)));
        assert_eq!(s.poll_timeout(), Some(at(35)));
        s.handle_timeout(at(35));
        assert!(!s.in_history(at(35), &peer(1)) && s.history_len() == 0);
        actions(&mut s);
        s.add_candidates(at(35), [Candidate::new(peer(1))]);
        assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Dynamic)]);
    }

    #[test]
    fn check_dial_reasons() {
        let mut c = small();
        let mut nr = NetRestrict::new();
        nr.add(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8).unwrap();
        c.net_restrict = Some(nr);
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        s.handle_inbound_pending(at(0), peer(2));
        s.handle_connected(at(0), peer(3), ConnDirection::Inbound)
            .unwrap();
        let ip = |a| Some(IpAddr::V4(Ipv4Addr::new(a, 1, 2, 3)));
        let check = |s: &Scheduler, p, i| {
            s.check_dial(&Candidate {
                peer: peer(p),
                ip: i,
            })
        };
        assert_eq!(check(&s, 0, ip(10)), Err(SkipReason::SelfPeer));
        assert_eq!(check(&s, 2, ip(10)), Err(SkipReason::PendingInbound));
        assert_eq!(check(&s, 3, ip(10)), Err(SkipReason::AlreadyConnected));
        assert_eq!(check(&s, 4, ip(11)), Err(SkipReason::NetRestrict));
        assert_eq!(check(&s, 4, None), Err(SkipReason::NetRestrict));
        assert_eq!(check(&s, 4, ip(10)), Ok(()));
        s.add_candidates(
            at(0),
            [Candidate {
                peer: peer(4),
                ip: ip(10),
            }],
        );
        assert_eq!(check(&s, 4, ip(10)), Err(SkipReason::AlreadyDialing));
        s.handle_inbound_done(at(0), peer(2));
        assert_eq!(check(&s, 2, ip(10)), Ok(()));
        assert_eq!(
            NetRestrict::new().add(ip(1).unwrap(), 33),
            Err(NetRestrictError::PrefixTooLong(33))
        );
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        assert!(s.config().net_restrict.as_ref().unwrap().contains(mapped));
    }

    #[test]
    fn static_nodes_are_dialed_without_waiting_for_a_free_slot() {
        let mut c = small();
        c.max_active_dials = 6;
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        actions(&mut s);
        s.add_candidates(at(0), (10..=13).map(|i| Candidate::new(peer(i))));
        assert_eq!(dials(&actions(&mut s)).len(), 4);
        // No free slot, but room for two more dials: two statics start, the
        // third waits for a running dial to end (max_active_dials).
        for i in 1..=3 {
            s.add_static(at(0), Candidate::new(peer(i))).unwrap();
        }
        let got = dials(&actions(&mut s));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, k)| *k == DialKind::Static));
        s.add_candidates(at(0), [Candidate::new(peer(14))]);
        s.handle_dial_done(at(0), peer(10), false).unwrap();
        let got = dials(&actions(&mut s));
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].1,
            DialKind::Static,
            "the last static before any candidate"
        );
        // Static 1 connects and later disconnects: re-dialed after its history.
        s.handle_connected(at(1), peer(1), ConnDirection::Outbound)
            .unwrap();
        s.handle_dial_done(at(1), peer(1), true).unwrap();
        s.handle_disconnected(at(10), peer(1));
        assert!(dials(&actions(&mut s)).iter().all(|(p, _)| *p != peer(1)));
        for i in [2, 3, 11, 12, 13, 14] {
            let _ = s.handle_dial_done(at(10), peer(i), false);
            let _ = s.handle_resolved(at(10), peer(i), None);
        }
        actions(&mut s);
        s.handle_timeout(at(35));
        assert!(dials(&actions(&mut s)).contains(&(peer(1), DialKind::Static)));
        assert_eq!(
            s.add_static(at(35), Candidate::new(peer(0))),
            Err(SchedulerError::StaticIsSelf)
        );
        assert!(s.remove_static(at(35), &peer(2)));
    }

    #[test]
    fn a_static_node_takes_the_slot_of_a_dynamic_peer() {
        let mut s = Scheduler::new(peer(0), small(), at(0)).unwrap();
        actions(&mut s);
        s.add_candidates(at(0), (10..=11).map(|i| Candidate::new(peer(i))));
        actions(&mut s);
        for i in [10, 11] {
            s.handle_connected(at(0), peer(i), ConnDirection::Outbound)
                .unwrap();
            s.handle_dial_done(at(0), peer(i), true).unwrap();
        }
        assert_eq!(s.dialed_peers(), 2);
        s.add_static(at(1), Candidate::new(peer(1))).unwrap();
        assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Static)]);
        s.handle_connected(at(1), peer(1), ConnDirection::Outbound)
            .unwrap();
        // The dynamic peer with the lowest id gives way; the quota holds.
        let lowest = if peer(10).as_bytes() < peer(11).as_bytes() {
            peer(10)
        } else {
            peer(11)
        };
        assert_eq!(actions(&mut s), [Action::Disconnect { peer: lowest }]);
        assert_eq!(s.dialed_peers(), 2);
        s.handle_disconnected(at(1), lowest);
        assert_eq!(s.dialed_peers(), 2, "already uncounted");
        // A second static with only statics and one dynamic left: the
        // dynamic one goes; a third finds none and is refused.
        s.add_static(at(1), Candidate::new(peer(2))).unwrap();
        s.add_static(at(1), Candidate::new(peer(3))).unwrap();
        actions(&mut s);
        s.handle_connected(at(2), peer(2), ConnDirection::Outbound)
            .unwrap();
        assert_eq!(s.dialed_peers(), 2);
        assert_eq!(
            s.handle_connected(at(2), peer(3), ConnDirection::Outbound),
            Err(ConnectError::DialQuotaFull)
        );
    }

    #[test]
    fn an_unanswered_lookup_counts_as_not_found() {
        let mut c = small();
        c.history_expiration = Duration::from_secs(5);
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        actions(&mut s);
        s.add_static(at(0), Candidate::new(peer(1))).unwrap();
        assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Static)]);
        s.handle_dial_done(at(0), peer(1), false).unwrap();
        assert_eq!(actions(&mut s), [Action::Resolve { peer: peer(1) }]);
        // Nobody answers: at the timeout the task ends as not found and
        // the static node is dialed again (its history is over by then).
        assert_eq!(s.poll_timeout(), Some(at(5)));
        s.handle_timeout(at(5));
        assert_eq!(s.dialing(), 1, "still waiting for the lookup");
        assert_eq!(s.poll_timeout(), Some(at(30)));
        s.handle_timeout(at(30));
        assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Static)]);
        assert_eq!(
            s.handle_resolved(at(31), peer(1), None),
            Err(SchedulerError::UnknownTask),
            "a late answer is refused"
        );
        let mut bad = small();
        bad.resolve_timeout = Duration::ZERO;
        assert_eq!(
            bad.validate(),
            Err(SchedulerConfigError::ZeroResolveTimeout)
        );
    }

    #[test]
    fn failed_static_dials_resolve_with_doubling_backoff() {
        let mut c = small();
        c.max_peers = 3; // one dialed peer, two slots
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        actions(&mut s);
        s.add_static(at(0), Candidate::new(peer(1))).unwrap();
        assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Static)]);
        let mut t = 0;
        let mut delays = Vec::new();
        // Dial fails, lookup finds nothing, repeatedly.
        for _ in 0..12 {
            s.handle_dial_done(at(t), peer(1), false).unwrap();
            let a = actions(&mut s);
            if a.contains(&Action::Resolve { peer: peer(1) }) {
                s.handle_resolved(at(t), peer(1), None).unwrap();
                delays.push(s.statics[&peer(1)].resolve_delay.as_secs());
            }
            // Wait until the history lets it be dialed again.
            t += 35;
            s.handle_timeout(at(t));
            assert_eq!(dials(&actions(&mut s)), [(peer(1), DialKind::Static)]);
        }
        // Dials every 35 s; lookups at 0, 140 and 385 s: each at least the
        // current delay after the last one, the delay doubling each time.
        assert_eq!(delays, [120, 240, 480]);
        // A successful lookup resets the delay and re-dials at once.
        t += 1000;
        s.handle_dial_done(at(t), peer(1), false).unwrap();
        assert_eq!(actions(&mut s), [Action::Resolve { peer: peer(1) }]);
        let ip = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));
        s.handle_resolved(at(t), peer(1), Some(ip)).unwrap();
        assert_eq!(
            actions(&mut s),
            [Action::Dial {
                peer: peer(1),
                ip: Some(ip),
                kind: DialKind::Static
            }]
        );
        assert_eq!(s.statics[&peer(1)].resolve_delay, S(60));
        // The second dial's failure ends the task without another lookup.
        s.handle_dial_done(at(t), peer(1), false).unwrap();
        assert!(!actions(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Resolve { .. })));
        assert!(!s.is_dialing(&peer(1)));
        assert_eq!(
            s.handle_resolved(at(t), peer(1), None),
            Err(SchedulerError::UnknownTask)
        );
        // The delay caps at one hour.
        let mut c = SchedulerConfig::default();
        c.initial_resolve_delay = S(3000);
        let mut s2 = Scheduler::new(peer(0), c, at(0)).unwrap();
        s2.add_static(at(0), Candidate::new(peer(1))).unwrap();
        s2.handle_dial_done(at(0), peer(1), false).unwrap();
        s2.handle_resolved(at(0), peer(1), None).unwrap();
        assert_eq!(s2.statics[&peer(1)].resolve_delay, S(3600));
    }

    #[test]
    fn bootnodes_after_20_seconds_without_peers() {
        let mut c = small();
        c.bootnodes = (100..103).map(|i| Candidate::new(peer(i))).collect();
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        actions(&mut s);
        assert_eq!(s.poll_timeout(), Some(at(20)));
        s.handle_timeout(at(19));
        assert!(dials(&actions(&mut s)).is_empty());
        s.handle_timeout(at(20));
        assert_eq!(dials(&actions(&mut s)), [(peer(100), DialKind::Bootnode)]);
        s.handle_dial_done(at(21), peer(100), false).unwrap();
        assert_eq!(dials(&actions(&mut s)), [(peer(101), DialKind::Bootnode)]);
        s.handle_dial_done(at(22), peer(101), false).unwrap();
        assert_eq!(dials(&actions(&mut s)), [(peer(102), DialKind::Bootnode)]);
        s.handle_dial_done(at(23), peer(102), false).unwrap();
        // All three recently dialed: skipped, round-robin goes on.
        assert!(dials(&actions(&mut s)).is_empty());
        assert_eq!(
            events(&mut s),
            [Event::Skipped {
                peer: peer(100),
                reason: SkipReason::RecentlyDialed
            }]
        );
        // A peer connects: fallback off; it leaves: 20 s again.
        s.handle_connected(at(30), peer(7), ConnDirection::Inbound)
            .unwrap();
        s.handle_timeout(at(60));
        assert!(dials(&actions(&mut s))
            .iter()
            .all(|(_, k)| *k != DialKind::Bootnode));
        s.handle_disconnected(at(60), peer(7));
        assert_eq!(s.poll_timeout(), Some(at(80)));
        s.handle_timeout(at(80));
        assert_eq!(dials(&actions(&mut s)), [(peer(101), DialKind::Bootnode)]);
    }

    #[test]
    fn history_full_stops_new_dials() {
        let mut c = small();
        c.max_history = 2;
        let mut s = Scheduler::new(peer(0), c, at(0)).unwrap();
        s.add_candidates(at(0), (1..=5).map(|i| Candidate::new(peer(i))));
        assert_eq!(dials(&actions(&mut s)).len(), 2);
        assert_eq!(s.free_slots(), 0);
        s.handle_dial_done(at(1), peer(1), false).unwrap();
        s.handle_dial_done(at(1), peer(2), false).unwrap();
        assert!(dials(&actions(&mut s)).is_empty());
        s.handle_timeout(at(35));
        assert_eq!(dials(&actions(&mut s)).len(), 2);
    }

    #[test]
    fn config_validation() {
        let mut c = SchedulerConfig::default();
        c.dial_ratio = 0;
        assert_eq!(c.validate(), Err(SchedulerConfigError::ZeroDialRatio));
        let mut c = SchedulerConfig::default();
        c.initial_resolve_delay = S(7200);
        assert_eq!(c.validate(), Err(SchedulerConfigError::BadResolveDelay));
        let mut c = SchedulerConfig::default();
        c.max_peers = 2;
        assert_eq!(c.max_dialed_peers(), 1);
        c.max_peers = 0;
        assert_eq!(c.max_dialed_peers(), 0);
        assert_eq!(SchedulerConfig::default().max_dialed_peers(), 16);
    }
}
