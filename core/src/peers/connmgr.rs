//! The connection manager (go-libp2p `p2p/net/connmgr`) as one sans-IO
//! machine: it counts connections, weighs peers by their tags, and when
//! the count passes the high watermark says which connections to close,
//! least valuable first, down to the low watermark.
//!
//! The machine decides; the node (or any caller) executes:
//!
//! | input | from |
//! |---|---|
//! | [`ConnManager::handle_connected`] / [`ConnManager::handle_disconnected`] | the node's connection events |
//! | [`ConnManager::tag_peer`], [`ConnManager::upsert_tag`], [`ConnManager::untag_peer`] | protocols weighing a peer |
//! | [`ConnManager::protect`] / [`ConnManager::unprotect`] | protocols that need a peer kept (e.g. the relay finder's [`PROTECT_TAG`](crate::relay::finder::PROTECT_TAG)) |
//! | [`ConnManager::register_decaying`], [`ConnManager::bump`] | scores that fade with time |
//! | [`ConnManager::trim_now`] | an explicit trim request (go's `TrimOpenConns`) |
//!
//! and [`Action::Close`] is the one thing it asks for: close that
//! connection, then report it with `handle_disconnected`. A connection
//! asked to close no longer counts towards the watermarks and is never
//! asked twice.
//!
//! **When to call again:** after any input or command, drain
//! [`poll_action`](ConnManager::poll_action) and
//! [`poll_event`](ConnManager::poll_event) until `None`, then call
//! [`handle_timeout`](ConnManager::handle_timeout) at
//! [`poll_timeout`](ConnManager::poll_timeout) (decay ticks, a trim
//! waiting for the silence period or for a grace period to end).
//! Commands that take no `now` use the latest `now` the machine saw.
//!
//! ## The trim
//!
//! A trim happens when the connections not already closing number more
//! than `high_water`, at least `silence_period` has passed since the last
//! trim, and at least one connection may be closed. It closes
//! `count - low_water` connections, or all it may close if fewer. A
//! connection may be closed when its peer is not protected (by any tag)
//! and it is at least `grace_period` old. Among those, the order is, and
//! every tie is broken by the next key:
//!
//! 1. the peer's value ascending (the sum of its tags' weights and of its
//!    decaying tags' values);
//! 2. inbound before outbound (go: "incoming connections are preferred for
//!    pruning");
//! 3. newer before older: a connection that has lasted is kept, which is
//!    also what resists a flood of fresh connections (eclipse attempts);
//! 4. the peer id ascending, then the connection key ascending.
//!
//! ## Where it departs from go, on purpose
//!
//! - The unit is the connection, not the peer: the watermarks count
//!   connections, so the trim stops exactly at `low_water`. go closes all
//!   of a peer's connections once it picks the peer, and its grace period
//!   counts from the peer's first connection; here each connection has
//!   its own grace period.
//! - The watermarks count every connection, protected and young ones too:
//!   a trim closes down to `low_water` in total, or as close as protection
//!   and grace allow (the [`Event::Trimmed`] says where it ended). go
//!   aims at `low_water` *trimmable* connections besides the protected and
//!   the young (`target = candidates - lowWater`), and skips the trim
//!   altogether when fewer than `low_water` are trimmable.
//! - A trim starts as soon as it is due (a connection passes the high
//!   watermark, a grace period ends, a protection is lifted), not on go's
//!   10 s ticker; the silence period still spaces trims, and
//!   [`trim_now`](ConnManager::trim_now) respects it too (go's
//!   `TrimOpenConns` no longer does, since it dropped the last-trim check).
//!   go's ticker trims at `count >= highWater`, although its doc says
//!   "exceeds"; here it is `count > high_water`.
//! - Ties are broken deterministically (go sorts a map's iteration order
//!   with an unstable sort). go's "no open streams first" key is not here:
//!   the manager is not told about streams.
//! - Tags need a connected peer: go buffers tags of a peer not yet
//!   connected in a temporary entry (a race between its notifications and
//!   its tagging goroutines); in one event loop the connection event comes
//!   first, so a tag for a peer without connections is refused
//!   ([`TagError::NotConnected`]). When a peer's last connection closes its
//!   tags and decaying values are dropped (go deletes its `peerInfo`).
//!   Protections outlive connections (go's `protected` map), within
//!   `max_protected_peers`.
//! - Decaying tags tick on their own schedule (every `interval` from their
//!   registration), not on go's shared one-minute ticker; `decay_resolution`
//!   is the shortest interval (go raises shorter ones to its resolution).
//!   [`DecayFn::ExpireAfter`] expires a value not bumped for a while; go's
//!   `DecayExpireWhenInactive` tests `time.Until(lastVisit) >= after`, never
//!   true for a past visit, and zeroes the value on the first tick.
//! - There is no `ForceTrim` (go's memory-pressure trim, which closes
//!   protected peers too): a protected peer is never closed here.
//! - Everything is bounded: connections are the caller's (the node
//!   bounds them), peers are those with connections, tags per peer,
//!   tag name lengths, protected peers and decaying tags are bounded by the
//!   config.
//!
//! The machine is generic over the connection key `C` (any `Copy + Ord`),
//! [`ConnectionId`] by default: the node's ids cannot be made outside the
//! node, and tests and fuzzers use small integers.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::peers::connmgr::{Action, ConnManager, ConnManagerConfig, Event, TrimCause};
//! use sansp2p::{Instant, Keypair};
//!
//! let peer = |n: u8| Keypair::from_secret_bytes([n; 32]).peer_id();
//! let mut config = ConnManagerConfig::default();
//! config.low_water = 1;
//! config.high_water = 2;
//! let t0 = Instant::ZERO;
//! let mut cm: ConnManager<u32> = ConnManager::new(t0, config).unwrap();
//! for n in 1..=3u8 {
//!     cm.handle_connected(t0, u32::from(n), peer(n), true);
//! }
//! cm.tag_peer(peer(1), "useful", 10).unwrap();
//! cm.protect(peer(2), "relay").unwrap();
//! // Above high water, but every connection is in its grace period.
//! assert_eq!(cm.poll_action(), None);
//! let t1 = t0 + Duration::from_secs(60);
//! assert_eq!(cm.poll_timeout(), Some(t1));
//! cm.handle_timeout(t1);
//! // The least valuable first; the protected peer stays.
//! assert_eq!(cm.poll_action(), Some(Action::Close { conn: 3, peer: peer(3) }));
//! assert_eq!(cm.poll_action(), Some(Action::Close { conn: 1, peer: peer(1) }));
//! assert_eq!(cm.poll_action(), None);
//! assert_eq!(
//!     cm.poll_event(),
//!     Some(Event::Trimmed { cause: TrimCause::HighWater, closed: 2, count_before: 3, count_after: 1 })
//! );
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::time::Duration;

use crate::identity::PeerId;
use crate::node::ConnectionId;
use crate::time::Instant;

/// At most this many overdue ticks of one decaying tag are applied by one
/// call; older ones are dropped (the clock jumped far ahead).
pub const MAX_DECAY_CATCH_UP: u64 = 64;

/// The manager's configuration: go-libp2p's defaults
/// (`libp2p.DefaultConnectionManager`: `NewConnManager(160, 192)`, a grace
/// period of 1 min, a silence period of 10 s, a decay resolution of 1 min)
/// and this implementation's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnManagerConfig {
    /// A trim closes connections down to this many (go default: 160).
    pub low_water: usize,
    /// More connections than this start a trim (go default: 192).
    pub high_water: usize,
    /// A connection younger than this is never closed (go: 1 min).
    pub grace_period: Duration,
    /// The shortest time between two trims (go: 10 s).
    pub silence_period: Duration,
    /// The shortest interval of a decaying tag; shorter ones are raised to
    /// it (go's decayer resolution: 1 min).
    pub decay_resolution: Duration,
    /// Tags (and, separately, protection tags) one peer may carry.
    pub max_tags_per_peer: usize,
    /// The longest tag name, in bytes (plain, protection and decaying tags).
    pub max_tag_len: usize,
    /// Decaying tags registered at once.
    pub max_decaying_tags: usize,
    /// Peers protected at once, connected or not.
    pub max_protected_peers: usize,
}

impl Default for ConnManagerConfig {
    fn default() -> Self {
        ConnManagerConfig {
            low_water: 160,
            high_water: 192,
            grace_period: Duration::from_secs(60),
            silence_period: Duration::from_secs(10),
            decay_resolution: Duration::from_secs(60),
            max_tags_per_peer: 64,
            max_tag_len: 128,
            max_decaying_tags: 64,
            max_protected_peers: 1024,
        }
    }
}

impl ConnManagerConfig {
    /// The defaults with other watermarks.
    pub fn with_watermarks(low_water: usize, high_water: usize) -> Self {
        ConnManagerConfig {
            low_water,
            high_water,
            ..ConnManagerConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConnManagerConfigError> {
        if self.low_water == 0 || self.low_water > self.high_water {
            return Err(ConnManagerConfigError::Watermarks);
        }
        if self.silence_period.is_zero() || self.decay_resolution.is_zero() {
            return Err(ConnManagerConfigError::ZeroPeriod);
        }
        if self.max_tags_per_peer == 0 || self.max_tag_len == 0 {
            return Err(ConnManagerConfigError::ZeroBound);
        }
        Ok(())
    }
}

/// A configuration [`ConnManager::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnManagerConfigError {
    /// `low_water` is 0 (go reads 0 as "disabled": then run no manager)
    /// or above `high_water`.
    #[error("low_water must be at least 1 and at most high_water")]
    Watermarks,
    /// `silence_period` or `decay_resolution` is 0.
    #[error("silence_period and decay_resolution must be above 0")]
    ZeroPeriod,
    /// `max_tags_per_peer` or `max_tag_len` is 0.
    #[error("max_tags_per_peer and max_tag_len must be above 0")]
    ZeroBound,
}

/// How a decaying tag's value fades on each tick (go's presets in
/// `core/connmgr/presets.go`). A value is removed when the function says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecayFn {
    /// Unchanged (go `DecayNone`).
    None,
    /// Minus `n`; removed at 0 or below (go `DecayFixed`).
    Fixed(i32),
    /// Times `num / den`, rounded down; removed at 0 or below (go
    /// `DecayLinear`, with a ratio instead of a float). `den` must not be 0.
    Linear {
        /// The numerator.
        num: u32,
        /// The denominator.
        den: u32,
    },
    /// Unchanged, and removed on the first tick at least this long after
    /// its last bump (what go's `DecayExpireWhenInactive` means to do).
    ExpireAfter(Duration),
}

impl DecayFn {
    /// The value after one tick at `at`, `None` to remove it.
    fn apply(self, v: &Decaying, at: Instant) -> Option<i32> {
        let after = match self {
            DecayFn::None => return Some(v.value),
            DecayFn::Fixed(n) => v.value.saturating_sub(n),
            DecayFn::Linear { num, den } => {
                let p = i64::from(v.value) * i64::from(num);
                let q = p.div_euclid(i64::from(den.max(1)));
                i32::try_from(q).unwrap_or(if q < 0 { i32::MIN } else { i32::MAX })
            }
            DecayFn::ExpireAfter(after) => {
                return (at.saturating_duration_since(v.last_bump) < after).then_some(v.value)
            }
        };
        (after > 0).then_some(after)
    }
}

/// How a bump's delta changes a decaying tag's value (go's presets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BumpFn {
    /// Plus the delta, saturating (go `BumpSumUnbounded`).
    Sum,
    /// Plus the delta, kept within `min..=max` (go `BumpSumBounded`);
    /// `min` must not be above `max`.
    SumBounded {
        /// The lowest value.
        min: i32,
        /// The highest value.
        max: i32,
    },
    /// The delta replaces the value (go `BumpOverwrite`).
    Overwrite,
}

impl BumpFn {
    fn apply(self, value: i32, delta: i32) -> i32 {
        match self {
            BumpFn::Sum => value.saturating_add(delta),
            BumpFn::SumBounded { min, max } => value.saturating_add(delta).clamp(min, max),
            BumpFn::Overwrite => delta,
        }
    }
}

/// A registered decaying tag (go's `DecayingTag`). Handles are never
/// reused: one of a closed tag stays invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecayingTag(u64);

/// Why a tag was not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// The peer has no connection (tags live while it is connected).
    #[error("the peer has no connection")]
    NotConnected,
    /// The peer already carries `max_tags_per_peer` tags.
    #[error("the peer carries max_tags_per_peer tags")]
    TooManyTags,
    /// The name is longer than `max_tag_len`.
    #[error("the tag name is longer than max_tag_len")]
    NameTooLong,
    /// The decaying tag is not registered (closed, or never was).
    #[error("unknown decaying tag")]
    UnknownTag,
}

/// Why a protection was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectError {
    /// `max_protected_peers` peers are protected already.
    #[error("max_protected_peers peers are protected")]
    TooManyPeers,
    /// The peer already carries `max_tags_per_peer` protection tags.
    #[error("the peer carries max_tags_per_peer protection tags")]
    TooManyTags,
    /// The name is longer than `max_tag_len`.
    #[error("the tag name is longer than max_tag_len")]
    NameTooLong,
}

/// Why a decaying tag was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A decaying tag of that name is registered (go refuses it too).
    #[error("a decaying tag of that name is registered")]
    Exists,
    /// `max_decaying_tags` are registered.
    #[error("max_decaying_tags are registered")]
    TooMany,
    /// The name is longer than `max_tag_len`.
    #[error("the tag name is longer than max_tag_len")]
    NameTooLong,
    /// [`DecayFn::Linear`] with `den` 0.
    #[error("a linear decay needs a denominator above 0")]
    InvalidDecay,
    /// [`BumpFn::SumBounded`] with `min` above `max`.
    #[error("a bounded sum needs min <= max")]
    InvalidBump,
}

/// Why [`ConnManager::trim_now`] closed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrimError {
    /// The last trim was less than `silence_period` ago.
    #[error("within the silence period of the last trim")]
    Silenced {
        /// When the next trim may run.
        until: Instant,
    },
    /// At most `low_water` connections, or none that may be closed.
    #[error("nothing to trim")]
    NothingToTrim,
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<C = ConnectionId> {
    /// Close `conn` (go closes with `ConnGarbageCollected`), then report it
    /// with [`ConnManager::handle_disconnected`].
    Close {
        /// The connection.
        conn: C,
        /// Its peer.
        peer: PeerId,
    },
}

/// What started a trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimCause {
    /// The count passed `high_water`.
    HighWater,
    /// [`ConnManager::trim_now`].
    Requested,
}

/// What happened, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A trim ran: `closed` connections were asked to close (the
    /// [`Action::Close`]s just queued). The counts leave out connections
    /// already closing; `count_after` above `low_water` means protection
    /// or grace kept the rest.
    Trimmed {
        /// What started it.
        cause: TrimCause,
        /// Connections asked to close.
        closed: usize,
        /// Connections before.
        count_before: usize,
        /// Connections after.
        count_after: usize,
    },
}

/// One tracked connection, as [`ConnManager::connections`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo<C = ConnectionId> {
    /// Its key.
    pub conn: C,
    /// Opened by the peer.
    pub inbound: bool,
    /// When [`ConnManager::handle_connected`] reported it.
    pub opened: Instant,
    /// Asked to close ([`Action::Close`]), not yet reported closed.
    pub closing: bool,
}

#[derive(Debug, Clone)]
struct Conn {
    peer: PeerId,
    inbound: bool,
    opened: Instant,
    closing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Decaying {
    value: i32,
    last_bump: Instant,
}

#[derive(Debug)]
struct Peer<C> {
    conns: BTreeSet<C>,
    tags: BTreeMap<String, i32>,
    decaying: BTreeMap<DecayingTag, Decaying>,
}

impl<C> Peer<C> {
    fn value(&self) -> i64 {
        let tags: i64 = self.tags.values().map(|&v| i64::from(v)).sum();
        let decaying: i64 = self.decaying.values().map(|d| i64::from(d.value)).sum();
        tags + decaying
    }
}

#[derive(Debug)]
struct Registration {
    name: String,
    interval: Duration,
    decay: DecayFn,
    bump: BumpFn,
    next_tick: Instant,
}

/// The connection manager. See the [module documentation](self).
#[derive(Debug)]
pub struct ConnManager<C = ConnectionId> {
    config: ConnManagerConfig,
    now: Instant,
    conns: BTreeMap<C, Conn>,
    peers: BTreeMap<PeerId, Peer<C>>,
    protected: BTreeMap<PeerId, BTreeSet<String>>,
    registrations: BTreeMap<DecayingTag, Registration>,
    next_tag: u64,
    /// Decay ticks: `(due, tag)`, one per registration.
    ticks: BTreeSet<(Instant, DecayingTag)>,
    /// Connections asked to close and not yet reported closed.
    closing: usize,
    last_trim: Option<Instant>,
    /// When the next automatic trim is due (always after `now`).
    trim_at: Option<Instant>,
    actions: VecDeque<Action<C>>,
    events: VecDeque<Event>,
}

impl<C: Copy + Ord> ConnManager<C> {
    /// A manager with no connections, its clock at `now`.
    pub fn new(now: Instant, config: ConnManagerConfig) -> Result<Self, ConnManagerConfigError> {
        config.validate()?;
        Ok(ConnManager {
            config,
            now,
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            protected: BTreeMap::new(),
            registrations: BTreeMap::new(),
            next_tag: 0,
            ticks: BTreeSet::new(),
            closing: 0,
            last_trim: None,
            trim_at: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &ConnManagerConfig {
        &self.config
    }

    /// Connections tracked (reported connected, not yet disconnected),
    /// closing ones included.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections asked to close and not yet reported closed.
    pub fn closing_count(&self) -> usize {
        self.closing
    }

    /// What the watermarks count: connections not asked to close.
    pub fn active_count(&self) -> usize {
        self.conns.len() - self.closing
    }

    /// Peers with at least one connection.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// `peer`'s connections, by key.
    pub fn connections(&self, peer: &PeerId) -> impl Iterator<Item = ConnInfo<C>> + '_ {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|p| p.conns.iter())
            .filter_map(|c| {
                let i = self.conns.get(c)?;
                Some(ConnInfo {
                    conn: *c,
                    inbound: i.inbound,
                    opened: i.opened,
                    closing: i.closing,
                })
            })
    }

    /// Whether `conn` is tracked, and its peer.
    pub fn peer_of(&self, conn: &C) -> Option<PeerId> {
        self.conns.get(conn).map(|c| c.peer)
    }

    /// `peer`'s value: the sum of its tags' weights and its decaying
    /// tags' values (`None`: not connected).
    pub fn peer_value(&self, peer: &PeerId) -> Option<i64> {
        self.peers.get(peer).map(Peer::value)
    }

    /// `peer`'s plain tags and their weights, by name.
    pub fn tags(&self, peer: &PeerId) -> impl Iterator<Item = (&str, i32)> + '_ {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|p| p.tags.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// `peer`'s value for the decaying `tag`.
    pub fn decaying_value(&self, tag: DecayingTag, peer: &PeerId) -> Option<i32> {
        Some(self.peers.get(peer)?.decaying.get(&tag)?.value)
    }

    /// A registered decaying tag's name and effective interval.
    pub fn decaying_tag(&self, tag: DecayingTag) -> Option<(&str, Duration)> {
        let r = self.registrations.get(&tag)?;
        Some((r.name.as_str(), r.interval))
    }

    /// Decaying tags registered.
    pub fn decaying_tag_count(&self) -> usize {
        self.registrations.len()
    }

    /// Whether `peer` is protected by any tag.
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.protected.contains_key(peer)
    }

    /// Whether `peer` is protected by `tag`.
    pub fn is_protected_by(&self, peer: &PeerId, tag: &str) -> bool {
        self.protected.get(peer).is_some_and(|t| t.contains(tag))
    }

    /// Peers protected (connected or not).
    pub fn protected_count(&self) -> usize {
        self.protected.len()
    }

    /// When the last trim ran.
    pub fn last_trim(&self) -> Option<Instant> {
        self.last_trim
    }

    // ------------------------------------------------------------ inputs

    /// A connection to `peer` is established. A key already tracked is
    /// ignored (go logs it). May start a trim.
    pub fn handle_connected(&mut self, now: Instant, conn: C, peer: PeerId, inbound: bool) {
        self.advance(now);
        if !self.conns.contains_key(&conn) {
            let opened = self.now;
            let info = Conn {
                peer,
                inbound,
                opened,
                closing: false,
            };
            self.conns.insert(conn, info);
            self.peers
                .entry(peer)
                .or_insert_with(|| Peer {
                    conns: BTreeSet::new(),
                    tags: BTreeMap::new(),
                    decaying: BTreeMap::new(),
                })
                .conns
                .insert(conn);
        }
        self.settle();
    }

    /// `conn` closed (whoever closed it). The last connection of a peer
    /// takes its tags and decaying values with it; protections stay.
    pub fn handle_disconnected(&mut self, now: Instant, conn: C) {
        self.advance(now);
        if let Some(info) = self.conns.remove(&conn) {
            if info.closing {
                self.closing -= 1;
            }
            if let Some(p) = self.peers.get_mut(&info.peer) {
                p.conns.remove(&conn);
                if p.conns.is_empty() {
                    self.peers.remove(&info.peer);
                }
            }
        }
        self.settle();
    }

    /// Deadlines due by `now`: decay ticks and a waiting trim. Safe to
    /// call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.settle();
    }

    // ------------------------------------------------------------ commands

    /// Sets `peer`'s tag `tag` to `weight` (go `TagPeer`).
    pub fn tag_peer(&mut self, peer: PeerId, tag: &str, weight: i32) -> Result<(), TagError> {
        self.upsert_tag(peer, tag, |_| weight).map(|_| ())
    }

    /// Sets `peer`'s tag `tag` to `f(old)`, `old` being 0 for a new tag
    /// (go `UpsertTag`); returns the new weight.
    pub fn upsert_tag(
        &mut self,
        peer: PeerId,
        tag: &str,
        f: impl FnOnce(i32) -> i32,
    ) -> Result<i32, TagError> {
        if tag.len() > self.config.max_tag_len {
            return Err(TagError::NameTooLong);
        }
        let max = self.config.max_tags_per_peer;
        let p = self.peers.get_mut(&peer).ok_or(TagError::NotConnected)?;
        if let Some(w) = p.tags.get_mut(tag) {
            *w = f(*w);
            return Ok(*w);
        }
        if p.tags.len() >= max {
            return Err(TagError::TooManyTags);
        }
        let w = f(0);
        p.tags.insert(String::from(tag), w);
        Ok(w)
    }

    /// Removes `peer`'s tag `tag` (go `UntagPeer`); whether it was there.
    pub fn untag_peer(&mut self, peer: &PeerId, tag: &str) -> bool {
        self.peers
            .get_mut(peer)
            .is_some_and(|p| p.tags.remove(tag).is_some())
    }

    /// Protects `peer` with `tag`: none of its connections is closed while
    /// any protection tag remains (go `Protect`). Works for a peer not
    /// connected (yet); the protection outlives its connections.
    pub fn protect(&mut self, peer: PeerId, tag: &str) -> Result<(), ProtectError> {
        if tag.len() > self.config.max_tag_len {
            return Err(ProtectError::NameTooLong);
        }
        match self.protected.get_mut(&peer) {
            Some(tags) => {
                if !tags.contains(tag) {
                    if tags.len() >= self.config.max_tags_per_peer {
                        return Err(ProtectError::TooManyTags);
                    }
                    tags.insert(String::from(tag));
                }
            }
            None => {
                if self.protected.len() >= self.config.max_protected_peers {
                    return Err(ProtectError::TooManyPeers);
                }
                self.protected
                    .insert(peer, BTreeSet::from([String::from(tag)]));
            }
        }
        self.settle();
        Ok(())
    }

    /// Removes the protection `tag` from `peer`; whether the peer is still
    /// protected by another tag (go `Unprotect`). May start a trim.
    pub fn unprotect(&mut self, peer: &PeerId, tag: &str) -> bool {
        let Some(tags) = self.protected.get_mut(peer) else {
            return false;
        };
        tags.remove(tag);
        let still = !tags.is_empty();
        if !still {
            self.protected.remove(peer);
        }
        self.settle();
        still
    }

    /// Registers a decaying tag (go `RegisterDecayingTag`): every
    /// `interval` (at least `decay_resolution`) from `now`, `decay` is
    /// applied to every peer's value of it; [`bump`](Self::bump) changes a
    /// value by `bump`.
    pub fn register_decaying(
        &mut self,
        now: Instant,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTag, RegisterError> {
        self.advance(now);
        let result = self.register(name, interval, decay, bump);
        self.settle();
        result
    }

    fn register(
        &mut self,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTag, RegisterError> {
        if name.len() > self.config.max_tag_len {
            return Err(RegisterError::NameTooLong);
        }
        if matches!(decay, DecayFn::Linear { den: 0, .. }) {
            return Err(RegisterError::InvalidDecay);
        }
        if matches!(bump, BumpFn::SumBounded { min, max } if min > max) {
            return Err(RegisterError::InvalidBump);
        }
        if self.registrations.values().any(|r| r.name == name) {
            return Err(RegisterError::Exists);
        }
        if self.registrations.len() >= self.config.max_decaying_tags {
            return Err(RegisterError::TooMany);
        }
        let tag = DecayingTag(self.next_tag);
        self.next_tag += 1;
        let interval = interval.max(self.config.decay_resolution);
        let next_tick = self.now.saturating_add(interval);
        self.registrations.insert(
            tag,
            Registration {
                name: String::from(name),
                interval,
                decay,
                bump,
                next_tick,
            },
        );
        self.ticks.insert((next_tick, tag));
        Ok(tag)
    }

    /// Bumps `peer`'s value of `tag` by `delta` through the tag's bump
    /// function, a new value starting at 0 (go `DecayingTag.Bump`);
    /// returns the new value.
    pub fn bump(
        &mut self,
        now: Instant,
        tag: DecayingTag,
        peer: PeerId,
        delta: i32,
    ) -> Result<i32, TagError> {
        self.advance(now);
        let result = self.bump_value(tag, peer, delta);
        self.settle();
        result
    }

    fn bump_value(&mut self, tag: DecayingTag, peer: PeerId, delta: i32) -> Result<i32, TagError> {
        let bump = self
            .registrations
            .get(&tag)
            .ok_or(TagError::UnknownTag)?
            .bump;
        let at = self.now;
        let p = self.peers.get_mut(&peer).ok_or(TagError::NotConnected)?;
        let d = p.decaying.entry(tag).or_insert(Decaying {
            value: 0,
            last_bump: at,
        });
        d.value = bump.apply(d.value, delta);
        d.last_bump = at;
        Ok(d.value)
    }

    /// Removes `peer`'s value of `tag` (go `DecayingTag.Remove`); whether
    /// it had one.
    pub fn remove_decaying(&mut self, tag: DecayingTag, peer: &PeerId) -> bool {
        self.peers
            .get_mut(peer)
            .is_some_and(|p| p.decaying.remove(&tag).is_some())
    }

    /// Unregisters `tag` and removes it from every peer (go
    /// `DecayingTag.Close`); whether it was registered.
    pub fn close_decaying(&mut self, tag: DecayingTag) -> bool {
        let Some(r) = self.registrations.remove(&tag) else {
            return false;
        };
        self.ticks.remove(&(r.next_tick, tag));
        for p in self.peers.values_mut() {
            p.decaying.remove(&tag);
        }
        true
    }

    /// Trims now, down to `low_water` even when not above `high_water`
    /// (go `TrimOpenConns`), unless the last trim was within the silence
    /// period; returns how many connections it asked to close.
    pub fn trim_now(&mut self, now: Instant) -> Result<usize, TrimError> {
        self.advance(now);
        let result = match self.silence_end() {
            Some(until) if until > self.now => Err(TrimError::Silenced { until }),
            _ => match self.trim(TrimCause::Requested) {
                0 => Err(TrimError::NothingToTrim),
                n => Ok(n),
            },
        };
        self.settle();
        result
    }

    // ------------------------------------------------------------ outputs

    /// The next action for the caller.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the
    /// next decay tick, or a trim waiting for the silence period or a
    /// grace period. Never before the latest `now` seen.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tick = self.ticks.first().map(|(at, _)| *at);
        match (tick, self.trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ------------------------------------------------------------ internals

    /// Moves the clock to `now` (never backwards) and runs the decay ticks
    /// due by then, in time order.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        while let Some(&(at, tag)) = self.ticks.first() {
            if at > now {
                break;
            }
            self.ticks.remove(&(at, tag));
            let Some(r) = self.registrations.get_mut(&tag) else {
                continue;
            };
            let step = r.interval.as_nanos().max(1);
            // Far behind: drop all but the last MAX_DECAY_CATCH_UP ticks.
            let behind = (now.as_nanos() - at.as_nanos()) as u128 / step;
            let at = if behind >= u128::from(MAX_DECAY_CATCH_UP) {
                let skip = (behind + 1 - u128::from(MAX_DECAY_CATCH_UP)) * step;
                Instant::from_nanos(at.as_nanos() + skip as u64)
            } else {
                at
            };
            let decay = r.decay;
            let next = at.saturating_add(r.interval);
            r.next_tick = next;
            if next > at {
                self.ticks.insert((next, tag));
            } // else the end of time: no further tick.
            for p in self.peers.values_mut() {
                if let Some(d) = p.decaying.get_mut(&tag) {
                    match decay.apply(d, at) {
                        Some(v) => d.value = v,
                        None => {
                            p.decaying.remove(&tag);
                        }
                    }
                }
            }
        }
    }

    fn silence_end(&self) -> Option<Instant> {
        self.last_trim
            .map(|t| t.saturating_add(self.config.silence_period))
    }

    fn closable(&self, conn: &Conn) -> bool {
        !conn.closing
            && !self.protected.contains_key(&conn.peer)
            && conn.opened.saturating_add(self.config.grace_period) <= self.now
    }

    /// After every input and command: trims when one is due, then sets
    /// when the next one may be.
    fn settle(&mut self) {
        self.trim_at = None;
        if self.active_count() <= self.config.high_water {
            return;
        }
        let silence = self.silence_end().filter(|&t| t > self.now);
        if silence.is_none() && self.conns.values().any(|c| self.closable(c)) {
            self.trim(TrimCause::HighWater);
            if self.active_count() <= self.config.high_water {
                return;
            }
        }
        // Still above: the earliest a trim could close something (a trim
        // that just ran put the silence period ahead; one that could not
        // run had every candidate in its grace period).
        let grace = self.config.grace_period;
        let ready = self
            .conns
            .values()
            .filter(|c| !c.closing && !self.protected.contains_key(&c.peer))
            .map(|c| c.opened.saturating_add(grace))
            .min();
        let silence = self.silence_end().unwrap_or(self.now);
        // Never in the past (only the end of time could put it there).
        self.trim_at = ready.map(|r| r.max(silence)).filter(|&t| t > self.now);
    }

    /// Closes active connections down to `low_water`, least valuable
    /// first; records the trim when it closed any. Returns how many.
    fn trim(&mut self, cause: TrimCause) -> usize {
        let before = self.active_count();
        let target = before.saturating_sub(self.config.low_water);
        if target == 0 {
            return 0;
        }
        let mut order: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| self.closable(c))
            .map(|(k, c)| {
                let value = self.peers.get(&c.peer).map_or(0, Peer::value);
                ((value, !c.inbound, Reverse(c.opened), c.peer, *k), *k)
            })
            .collect();
        if order.is_empty() {
            return 0;
        }
        order.sort_unstable();
        order.truncate(target);
        for (_, k) in &order {
            if let Some(c) = self.conns.get_mut(k) {
                c.closing = true;
                self.closing += 1;
                self.actions.push_back(Action::Close {
                    conn: *k,
                    peer: c.peer,
                });
            }
        }
        self.last_trim = Some(self.now);
        self.events.push_back(Event::Trimmed {
            cause,
            closed: order.len(),
            count_before: before,
            count_after: self.active_count(),
        });
        order.len()
    }
}

#[cfg(test)]
#[path = "connmgr_tests.rs"]
mod tests;
