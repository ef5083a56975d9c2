//! A bounded peer store (go-libp2p's peerstore: `core/peerstore`,
//! `p2p/host/peerstore/pstoremem`) as a sans-IO machine: per peer, its
//! addresses with their expiry, what identify said (protocols, agent,
//! public key), a latency average of ping RTTs, when it was first and last
//! seen, how many connections it has and whether it is protected.
//!
//! It takes facts and never asks for anything:
//!
//! | input | from |
//! |---|---|
//! | [`PeerStore::add_addrs`] / [`PeerStore::set_addrs`] | a peer source: DHT, rendezvous, the application |
//! | [`PeerStore::handle_connected`] / [`PeerStore::handle_disconnected`] | the node's connection events |
//! | [`PeerStore::handle_identified`] | identify |
//! | [`PeerStore::record_latency`] | ping |
//! | [`PeerStore::protect`] / [`PeerStore::unprotect`] | static peers, relays (the application, autorelay) |
//!
//! ## Addresses and their TTLs (go's address book)
//!
//! - [`add_addrs`](PeerStore::add_addrs) never shortens: a known address
//!   keeps the later of its expiry and the new one (go `AddAddrs`).
//! - [`set_addrs`](PeerStore::set_addrs) overwrites the expiry of the
//!   addresses named; a zero TTL removes them (go `SetAddrs`).
//! - While a peer is connected, the address we dialed and the listen
//!   addresses identify reports are [`Expiry::Connected`]: kept for as long
//!   as a connection lasts (go: `ConnectedAddrTTL`). When the last
//!   connection closes they expire [`recently_connected_ttl`] later (go's
//!   `RecentlyConnectedAddrTTL`, 15 min). Identify while not connected
//!   extends its addresses to that TTL as well.
//! - An address is alive while `now < expiry` (go expires *at* the
//!   expiry); [`addrs`](PeerStore::addrs) returns only live ones.
//!
//! [`recently_connected_ttl`]: PeerStoreConfig::recently_connected_ttl
//!
//! ## Bounds
//!
//! Everything a peer or a third party tells us is bounded before it is
//! stored: at most [`max_peers`](PeerStoreConfig::max_peers) peers,
//! [`max_addrs_per_peer`](PeerStoreConfig::max_addrs_per_peer) addresses
//! each (of at most `max_addr_len` bytes), `max_protocols` protocols of at
//! most `max_protocol_len` bytes (longer ones are dropped, extra ones
//! truncated as go's identify does), an agent of at most `max_agent_len`
//! bytes (truncated), a public key of at most `max_public_key_len` bytes
//! that must decode and match the peer.
//!
//! **Peer eviction.** When a new peer arrives and the store is full, the
//! peer with no connection and no protection that was *seen* least recently
//! is evicted ([`Event::PeerEvicted`]); ties go to the smaller [`PeerId`].
//! *Seen* means we were in touch with it: it connected, disconnected or
//! identified (or, for a peer only ever heard of, when it was first
//! added); addresses from third parties do not refresh it, so gossip cannot
//! keep a peer against one we met. When every peer is connected or
//! protected, the new one is refused: the input returns [`StoreFull`] and
//! [`refused`](PeerStore::refused) counts it.
//!
//! **Address overflow.** A new address for a peer that has
//! `max_addrs_per_peer` already replaces the one expiring soonest
//! (permanent ones last), never a connected one, and only if that one
//! expires no later than the new one would; otherwise the new address is
//! dropped and [`addrs_dropped`](PeerStore::addrs_dropped) counts it (go
//! evicts the nearest expiry among unconnected addresses, and lets
//! connected ones past the cap; here the cap holds for all).
//!
//! **What keeps a peer.** A peer stays while it has a live address, a
//! connection or protection. When none is left (its last address expired,
//! was set to zero, or its last connection closed without one) it is
//! dropped with its metadata ([`Event::PeerDropped`]): a peer we can
//! neither reach nor talk to is not worth a slot.
//!
//! ## Time and timers
//!
//! Every input takes `now` (commands use the latest `now`), and first
//! expires what is due by then, so getters never show an expired address.
//! Expiries sit in one ordered set holding each peer's earliest finite
//! address expiry: [`poll_timeout`](PeerStore::poll_timeout) reads its
//! first entry and an idle poll scans nothing. After any input, drain
//! [`poll_event`](PeerStore::poll_event) until `None`, then call
//! [`handle_timeout`](PeerStore::handle_timeout) at `poll_timeout()`
//! (calling it early is harmless).
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::peers::store::{Event, PeerStore, PeerStoreConfig, Ttl, TEMP_ADDR_TTL};
//! use sansp2p::{Instant, Keypair};
//!
//! let peer = Keypair::from_secret_bytes([7; 32]).peer_id();
//! let addr = vec![0x04, 10, 0, 0, 1, 0x06, 0x0f, 0xa1]; // /ip4/10.0.0.1/tcp/4001
//! let t0 = Instant::ZERO;
//! let mut store = PeerStore::new(t0, PeerStoreConfig::default()).unwrap();
//! store.add_addrs(t0, peer, &[addr.clone()], Ttl::For(TEMP_ADDR_TTL)).unwrap();
//! assert_eq!(store.poll_event(), Some(Event::PeerAdded { peer }));
//! assert_eq!(store.addrs(&peer).collect::<Vec<_>>(), [&addr[..]]);
//! // The address expires with its TTL, and the peer with it.
//! assert_eq!(store.poll_timeout(), Some(t0 + TEMP_ADDR_TTL));
//! store.handle_timeout(t0 + TEMP_ADDR_TTL);
//! assert_eq!(store.poll_event(), Some(Event::AddrsExpired { peer }));
//! assert_eq!(store.poll_event(), Some(Event::PeerDropped { peer }));
//! assert_eq!(store.len(), 0);
//! # let _ = Duration::ZERO;
//! ```

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use crate::identity::{PeerId, PublicKey};
use crate::time::Instant;

/// go `AddressTTL`: the expiry of addresses in general (1 h).
pub const ADDRESS_TTL: Duration = Duration::from_secs(3600);
/// go `TempAddrTTL`: a short-lived address (2 min).
pub const TEMP_ADDR_TTL: Duration = Duration::from_secs(120);
/// go `RecentlyConnectedAddrTTL`: addresses of a peer we were connected to
/// (15 min); the default of [`PeerStoreConfig::recently_connected_ttl`].
pub const RECENTLY_CONNECTED_ADDR_TTL: Duration = Duration::from_secs(15 * 60);
/// go `OwnObservedAddrTTL` (deprecated there): our own addresses as
/// observed by peers (30 min).
pub const OWN_OBSERVED_ADDR_TTL: Duration = Duration::from_secs(30 * 60);

/// How long an address given to [`PeerStore::add_addrs`] or
/// [`PeerStore::set_addrs`] lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// For this long from `now`; zero is "not at all".
    For(Duration),
    /// Until removed (go `PermanentAddrTTL`: e.g. bootstrap peers).
    Permanent,
}

/// When a stored address expires. Ordered from the soonest to the latest:
/// any instant, then connected, then permanent (go orders its TTLs so:
/// `ConnectedAddrTTL` is `PermanentAddrTTL - 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiry {
    /// At this instant (it is dead from then on).
    At(Instant),
    /// While the peer has a connection; then `recently_connected_ttl`.
    Connected,
    /// Never.
    Permanent,
}

impl Expiry {
    fn alive(self, now: Instant) -> bool {
        match self {
            Expiry::At(t) => now < t,
            Expiry::Connected | Expiry::Permanent => true,
        }
    }

    fn at(self) -> Option<Instant> {
        match self {
            Expiry::At(t) => Some(t),
            _ => None,
        }
    }
}

/// The store's bounds and TTLs; the defaults are go-libp2p's where it has
/// one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerStoreConfig {
    /// At most this many peers (go: unbounded; 10 000 here).
    pub max_peers: usize,
    /// At most this many addresses per peer (go `defaultMaxAddrsPerPeer`:
    /// 64, for unconnected ones).
    pub max_addrs_per_peer: usize,
    /// Longer addresses are dropped (go: unbounded; 256 bytes here, a
    /// circuit address with two peer ids is about 120).
    pub max_addr_len: usize,
    /// How long connected addresses live after the last connection closes
    /// (go `RecentlyConnectedAddrTTL`: 15 min).
    pub recently_connected_ttl: Duration,
    /// The weight of a new RTT in the latency average, in (0, 1]
    /// (go `LatencyEWMASmoothing`: 0.1).
    pub latency_alpha: f64,
    /// At most this many protocols per peer; the rest are dropped (go's
    /// protobook: 128).
    pub max_protocols: usize,
    /// Longer protocol names are dropped (256 bytes).
    pub max_protocol_len: usize,
    /// A longer agent version is truncated (256 bytes).
    pub max_agent_len: usize,
    /// A longer public key is not stored (128 bytes: an Ed25519 key is 36).
    pub max_public_key_len: usize,
}

impl Default for PeerStoreConfig {
    fn default() -> Self {
        PeerStoreConfig {
            max_peers: 10_000,
            max_addrs_per_peer: 64,
            max_addr_len: 256,
            recently_connected_ttl: RECENTLY_CONNECTED_ADDR_TTL,
            latency_alpha: 0.1,
            max_protocols: 128,
            max_protocol_len: 256,
            max_agent_len: 256,
            max_public_key_len: 128,
        }
    }
}

impl PeerStoreConfig {
    fn validate(&self) -> Result<(), PeerStoreConfigError> {
        if self.max_peers == 0 || self.max_addrs_per_peer == 0 || self.max_addr_len == 0 {
            return Err(PeerStoreConfigError::ZeroBound);
        }
        // Also refuses NaN.
        if !(self.latency_alpha > 0.0 && self.latency_alpha <= 1.0) {
            return Err(PeerStoreConfigError::LatencyAlpha);
        }
        Ok(())
    }
}

/// A configuration [`PeerStore::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerStoreConfigError {
    /// `max_peers`, `max_addrs_per_peer` or `max_addr_len` is 0.
    #[error("max_peers, max_addrs_per_peer and max_addr_len must be at least 1")]
    ZeroBound,
    /// `latency_alpha` is not in (0, 1].
    #[error("latency_alpha must be above 0 and at most 1")]
    LatencyAlpha,
}

/// A new peer was refused: the store is full and every peer in it is
/// connected or protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer store is full of connected or protected peers")]
pub struct StoreFull;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer was stored.
    PeerAdded {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was removed to make room for another.
    PeerEvicted {
        /// The peer.
        peer: PeerId,
    },
    /// Some of a peer's addresses expired.
    AddrsExpired {
        /// The peer.
        peer: PeerId,
    },
    /// Nothing keeps a peer any more (no live address, no connection, no
    /// protection): it was removed with its metadata.
    PeerDropped {
        /// The peer.
        peer: PeerId,
    },
}

#[derive(Debug, Clone)]
struct Addr {
    bytes: Box<[u8]>,
    expiry: Expiry,
}

/// Everything stored about one peer.
#[derive(Debug)]
struct Entry {
    addrs: Vec<Addr>,
    /// Sorted, deduplicated, interned in [`PeerStore::names`].
    protocols: Vec<Arc<str>>,
    agent: Option<Box<str>>,
    public_key: Option<Box<[u8]>>,
    latency: Option<Duration>,
    first_seen: Instant,
    last_seen: Instant,
    connections: u32,
    protected: bool,
    /// Its entry in the timer set: the earliest finite address expiry.
    timer: Option<Instant>,
    /// Its entry in the eviction index (`last_seen`, when evictable).
    idle: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            addrs: Vec::new(),
            protocols: Vec::new(),
            agent: None,
            public_key: None,
            latency: None,
            first_seen: now,
            last_seen: now,
            connections: 0,
            protected: false,
            timer: None,
            idle: None,
        }
    }

    fn evictable(&self) -> bool {
        self.connections == 0 && !self.protected
    }

    fn keeps(&self) -> bool {
        !self.addrs.is_empty() || self.connections > 0 || self.protected
    }

    fn earliest(&self) -> Option<Instant> {
        self.addrs.iter().filter_map(|a| a.expiry.at()).min()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keep the later of the two expiries (go `AddAddrs`).
    Extend,
    /// Take the new expiry (go `SetAddrs`).
    Overwrite,
}

/// The peer store. See the [module documentation](self).
#[derive(Debug)]
pub struct PeerStore {
    config: PeerStoreConfig,
    now: Instant,
    peers: BTreeMap<PeerId, Entry>,
    /// (earliest finite address expiry, peer): one entry per peer that has
    /// one.
    timers: BTreeSet<(Instant, PeerId)>,
    /// (last seen, peer) of the peers with no connection and no protection:
    /// the eviction order.
    idle: BTreeSet<(Instant, PeerId)>,
    /// Protocol names, shared by every peer that lists them; a name is
    /// removed when its last peer lets go of it.
    names: BTreeSet<Arc<str>>,
    events: VecDeque<Event>,
    refused: u64,
    addrs_dropped: u64,
}

impl PeerStore {
    /// An empty store at `now`.
    pub fn new(now: Instant, config: PeerStoreConfig) -> Result<Self, PeerStoreConfigError> {
        config.validate()?;
        Ok(PeerStore {
            config,
            now,
            peers: BTreeMap::new(),
            timers: BTreeSet::new(),
            idle: BTreeSet::new(),
            names: BTreeSet::new(),
            events: VecDeque::new(),
            refused: 0,
            addrs_dropped: 0,
        })
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &PeerStoreConfig {
        &self.config
    }

    /// How many peers are stored (at most `max_peers`).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is stored.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether `peer` is stored.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Every stored peer, in [`PeerId`] order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// `peer`'s live addresses (none for an unknown peer), in the order
    /// they were first stored.
    pub fn addrs(&self, peer: &PeerId) -> impl Iterator<Item = &[u8]> + '_ {
        self.addrs_with_expiry(peer).map(|(a, _)| a)
    }

    /// `peer`'s live addresses with their expiry.
    pub fn addrs_with_expiry(&self, peer: &PeerId) -> impl Iterator<Item = (&[u8], Expiry)> + '_ {
        let now = self.now;
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|e| e.addrs.iter())
            .filter(move |a| a.expiry.alive(now))
            .map(|a| (&*a.bytes, a.expiry))
    }

    /// The protocols `peer` last said it supports, sorted.
    pub fn protocols(&self, peer: &PeerId) -> impl Iterator<Item = &str> + '_ {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|e| e.protocols.iter())
            .map(|p| &**p)
    }

    /// Whether `peer` last said it supports `protocol`.
    pub fn supports(&self, peer: &PeerId, protocol: &str) -> bool {
        self.peers.get(peer).is_some_and(|e| {
            e.protocols
                .binary_search_by(|p| (**p).cmp(protocol))
                .is_ok()
        })
    }

    /// The peers that last said they support `protocol`, in [`PeerId`]
    /// order (a scan of the store).
    pub fn peers_supporting<'a>(&'a self, protocol: &'a str) -> impl Iterator<Item = PeerId> + 'a {
        self.peers
            .keys()
            .filter(move |p| self.supports(p, protocol))
            .copied()
    }

    /// `peer`'s agent version, as identify last said (bounded).
    pub fn agent(&self, peer: &PeerId) -> Option<&str> {
        self.peers.get(peer)?.agent.as_deref()
    }

    /// `peer`'s public key (protobuf bytes), from identify.
    pub fn public_key(&self, peer: &PeerId) -> Option<&[u8]> {
        self.peers.get(peer)?.public_key.as_deref()
    }

    /// The moving average of `peer`'s RTTs (go `LatencyEWMA`).
    pub fn latency(&self, peer: &PeerId) -> Option<Duration> {
        self.peers.get(peer)?.latency
    }

    /// When `peer` was first stored.
    pub fn first_seen(&self, peer: &PeerId) -> Option<Instant> {
        Some(self.peers.get(peer)?.first_seen)
    }

    /// When we were last in touch with `peer` (see the module docs).
    pub fn last_seen(&self, peer: &PeerId) -> Option<Instant> {
        Some(self.peers.get(peer)?.last_seen)
    }

    /// Whether `peer` has a connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connections(peer) > 0
    }

    /// How many connections `peer` has, as the store was told.
    pub fn connections(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |e| e.connections)
    }

    /// Whether `peer` is protected (never evicted, never dropped).
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|e| e.protected)
    }

    /// New peers refused so far ([`StoreFull`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Addresses not stored so far for lack of room (`max_addrs_per_peer`).
    pub fn addrs_dropped(&self) -> u64 {
        self.addrs_dropped
    }

    /// The latest `now` the store has seen.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Up to `n` distinct peers for which `filter` holds, chosen uniformly
    /// at random with `rng` and in random order: the same `rng` state gives
    /// the same answer. One pass over the store (reservoir sampling), `n`
    /// peers of memory.
    pub fn random_peers<R>(
        &self,
        n: usize,
        rng: &mut R,
        mut filter: impl FnMut(&PeerId) -> bool,
    ) -> Vec<PeerId>
    where
        R: rand_core::Rng + ?Sized,
    {
        let mut out: Vec<PeerId> = Vec::with_capacity(n.min(self.peers.len()));
        if n == 0 {
            return out;
        }
        let mut seen: u64 = 0;
        for peer in self.peers.keys().filter(|p| filter(p)) {
            if out.len() < n {
                out.push(*peer);
            } else {
                let j = uniform(rng, seen.saturating_add(1));
                if let Some(slot) = usize::try_from(j).ok().and_then(|j| out.get_mut(j)) {
                    *slot = *peer;
                }
            }
            seen = seen.saturating_add(1);
        }
        // Random order too (Fisher-Yates).
        for i in (1..out.len()).rev() {
            let j = uniform(rng, i as u64 + 1) as usize;
            out.swap(i, j);
        }
        out
    }

    // ------------------------------------------------------------ inputs

    /// Adds `addrs` for `peer` with `ttl`, never shortening a known
    /// address's expiry (go `AddAddrs`); a zero TTL does nothing. A trailing
    /// `/p2p/<peer>` is stripped; empty and too long addresses are skipped.
    /// [`StoreFull`] when `peer` is new and there is no room for it.
    pub fn add_addrs(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Vec<u8>],
        ttl: Ttl,
    ) -> Result<(), StoreFull> {
        self.advance(now);
        let expiry = self.expiry(ttl);
        self.add(peer, addrs, expiry, Mode::Extend)
    }

    /// Sets the expiry of `addrs` for `peer` to `ttl`, whatever it was
    /// (go `SetAddrs`); a zero TTL removes them. Addresses not named are
    /// left alone.
    pub fn set_addrs(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Vec<u8>],
        ttl: Ttl,
    ) -> Result<(), StoreFull> {
        self.advance(now);
        match self.expiry(ttl) {
            Some(expiry) => self.add(peer, addrs, Some(expiry), Mode::Overwrite),
            None => {
                let suffix = p2p_suffix(&peer);
                let Some(e) = self.peers.get_mut(&peer) else {
                    return Ok(());
                };
                for a in addrs {
                    let a = strip(a, &suffix);
                    e.addrs.retain(|x| &*x.bytes != a);
                }
                self.settle(peer);
                Ok(())
            }
        }
    }

    /// A connection to `peer` was established; `addr` is the address we
    /// dialed (`None` for an inbound connection: its source address is no
    /// address to give out). The address is kept while connected.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        addr: Option<&[u8]>,
    ) -> Result<(), StoreFull> {
        self.advance(now);
        self.admit(peer)?;
        let config = &self.config;
        let suffix = p2p_suffix(&peer);
        if let Some(e) = self.peers.get_mut(&peer) {
            e.connections = e.connections.saturating_add(1);
            e.last_seen = self.now;
            if let Some(a) = addr {
                if !upsert(
                    e,
                    config,
                    strip(a, &suffix),
                    Expiry::Connected,
                    Mode::Extend,
                ) {
                    self.addrs_dropped += 1;
                }
            }
        }
        self.settle(peer);
        Ok(())
    }

    /// One of `peer`'s connections closed. After the last one, its
    /// connected addresses expire `recently_connected_ttl` from `now`.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        let until = self.now.saturating_add(self.config.recently_connected_ttl);
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        if e.connections == 0 {
            return;
        }
        e.connections -= 1;
        e.last_seen = self.now;
        if e.connections == 0 {
            for a in &mut e.addrs {
                if a.expiry == Expiry::Connected {
                    a.expiry = Expiry::At(until);
                }
            }
            let now = self.now;
            e.addrs.retain(|a| a.expiry.alive(now));
        }
        self.settle(peer);
    }

    /// `peer` was identified: its protocols replace the ones stored (bounded,
    /// sorted, deduplicated), its agent and public key replace the old ones
    /// when given (a key is kept only if it decodes and matches `peer`),
    /// and its listen addresses are added as connected (while connected) or
    /// for `recently_connected_ttl`. A peer not yet stored is stored only
    /// if it is connected or one of its addresses is.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_identified(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocols: &[String],
        agent: Option<&str>,
        listen_addrs: &[Vec<u8>],
        public_key: Option<&[u8]>,
    ) -> Result<(), StoreFull> {
        self.advance(now);
        let expiry = if self.is_connected(&peer) {
            Some(Expiry::Connected)
        } else {
            self.expiry(Ttl::For(self.config.recently_connected_ttl))
        };
        if !self.peers.contains_key(&peer) && !self.would_store(&peer, listen_addrs, expiry) {
            return Ok(());
        }
        self.admit(peer)?;
        // Protocols: the valid ones, interned, bounded.
        let mut names: Vec<Arc<str>> = Vec::new();
        for p in protocols {
            if p.is_empty() || p.len() > self.config.max_protocol_len {
                continue;
            }
            if names.len() >= self.config.max_protocols {
                break;
            }
            let name = match self.names.get(p.as_str()) {
                Some(name) => name.clone(),
                None => {
                    let name: Arc<str> = Arc::from(p.as_str());
                    self.names.insert(name.clone());
                    name
                }
            };
            names.push(name);
        }
        names.sort();
        names.dedup();
        let key = public_key
            .filter(|k| k.len() <= self.config.max_public_key_len)
            .filter(|k| PublicKey::try_decode_protobuf(k).is_ok_and(|key| peer.matches(&key)));
        let agent = agent.map(|a| truncate(a, self.config.max_agent_len));
        let old = match self.peers.get_mut(&peer) {
            Some(e) => {
                e.last_seen = self.now;
                if let Some(agent) = agent {
                    e.agent = Some(agent.into());
                }
                if let Some(key) = key {
                    e.public_key = Some(key.into());
                }
                core::mem::replace(&mut e.protocols, names)
            }
            None => names,
        };
        self.release(old);
        if let Some(expiry) = expiry {
            self.add(peer, listen_addrs, Some(expiry), Mode::Extend)?;
        } else {
            self.settle(peer);
        }
        Ok(())
    }

    /// A ping RTT to `peer`: the average moves by `latency_alpha` towards
    /// it; the first sample is taken as the average (go `RecordLatency`).
    /// An unknown peer is ignored.
    pub fn record_latency(&mut self, peer: PeerId, rtt: Duration) {
        let alpha = self.config.latency_alpha;
        if let Some(e) = self.peers.get_mut(&peer) {
            e.latency = Some(match e.latency {
                None => rtt,
                Some(old) => {
                    let next =
                        (1.0 - alpha) * old.as_nanos() as f64 + alpha * rtt.as_nanos() as f64;
                    // `as` saturates; NaN cannot arise from finite inputs.
                    Duration::from_nanos(next as u64)
                }
            });
        }
    }

    /// Expires what is due by `now`. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    // ------------------------------------------------------------ commands

    /// Protects `peer`: never evicted nor dropped until
    /// [`unprotect`](Self::unprotect)ed or removed. An unknown peer is
    /// stored (at the latest `now`); [`StoreFull`] if there is no room.
    pub fn protect(&mut self, peer: PeerId) -> Result<(), StoreFull> {
        self.admit(peer)?;
        if let Some(e) = self.peers.get_mut(&peer) {
            e.protected = true;
        }
        self.settle(peer);
        Ok(())
    }

    /// Lifts `peer`'s protection; with nothing else to keep it, it is
    /// dropped.
    pub fn unprotect(&mut self, peer: PeerId) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.protected = false;
            self.settle(peer);
        }
    }

    /// Forgets `peer` and everything about it, without an event. Returns
    /// whether it was stored.
    pub fn remove_peer(&mut self, peer: PeerId) -> bool {
        self.remove(peer)
    }

    // ------------------------------------------------------------ outputs

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the next address expires: call
    /// [`handle_timeout`](Self::handle_timeout) then. Always after the
    /// latest `now`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    // ------------------------------------------------------------ internals

    /// Moves the clock forward (never back) and expires what is due.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        while let Some(&(at, peer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, peer));
            let Some(e) = self.peers.get_mut(&peer) else {
                continue;
            };
            e.timer = None;
            e.addrs.retain(|a| a.expiry.alive(now));
            self.events.push_back(Event::AddrsExpired { peer });
            self.settle(peer);
        }
    }

    /// The expiry of `ttl` from the latest `now`; `None` if it is already
    /// over.
    fn expiry(&self, ttl: Ttl) -> Option<Expiry> {
        match ttl {
            Ttl::Permanent => Some(Expiry::Permanent),
            Ttl::For(d) => {
                let at = self.now.saturating_add(d);
                (at > self.now).then_some(Expiry::At(at))
            }
        }
    }

    /// Whether adding `addrs` with `expiry` to a new `peer` would store one.
    fn would_store(&self, peer: &PeerId, addrs: &[Vec<u8>], expiry: Option<Expiry>) -> bool {
        let suffix = p2p_suffix(peer);
        expiry.is_some()
            && addrs.iter().any(|a| {
                let a = strip(a, &suffix);
                !a.is_empty() && a.len() <= self.config.max_addr_len
            })
    }

    /// Adds or overwrites addresses (see `add_addrs`, `set_addrs`).
    fn add(
        &mut self,
        peer: PeerId,
        addrs: &[Vec<u8>],
        expiry: Option<Expiry>,
        mode: Mode,
    ) -> Result<(), StoreFull> {
        let Some(expiry) = expiry else {
            return Ok(());
        };
        if !self.peers.contains_key(&peer) {
            if !self.would_store(&peer, addrs, Some(expiry)) {
                return Ok(());
            }
            self.admit(peer)?;
        }
        let config = &self.config;
        let suffix = p2p_suffix(&peer);
        if let Some(e) = self.peers.get_mut(&peer) {
            for a in addrs {
                if !upsert(e, config, strip(a, &suffix), expiry, mode) {
                    self.addrs_dropped += 1;
                }
            }
        }
        self.settle(peer);
        Ok(())
    }

    /// Makes sure `peer` is stored, evicting the least recently seen
    /// evictable peer when full. The caller must [`settle`](Self::settle)
    /// it afterwards.
    fn admit(&mut self, peer: PeerId) -> Result<(), StoreFull> {
        if self.peers.contains_key(&peer) {
            return Ok(());
        }
        if self.peers.len() >= self.config.max_peers {
            let Some(&(_, victim)) = self.idle.first() else {
                self.refused += 1;
                return Err(StoreFull);
            };
            self.remove(victim);
            self.events.push_back(Event::PeerEvicted { peer: victim });
        }
        self.peers.insert(peer, Entry::new(self.now));
        self.events.push_back(Event::PeerAdded { peer });
        // The caller settles it once it holds what keeps it.
        Ok(())
    }

    /// After any change to `peer`: drops it when nothing keeps it, else
    /// puts its timer and eviction entries right.
    fn settle(&mut self, peer: PeerId) {
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        if !e.keeps() {
            self.remove(peer);
            self.events.push_back(Event::PeerDropped { peer });
            return;
        }
        let timer = e.earliest();
        if e.timer != timer {
            if let Some(old) = e.timer {
                self.timers.remove(&(old, peer));
            }
            if let Some(at) = timer {
                self.timers.insert((at, peer));
            }
            e.timer = timer;
        }
        let idle = e.evictable().then_some(e.last_seen);
        if e.idle != idle {
            if let Some(old) = e.idle {
                self.idle.remove(&(old, peer));
            }
            if let Some(at) = idle {
                self.idle.insert((at, peer));
            }
            e.idle = idle;
        }
    }

    fn remove(&mut self, peer: PeerId) -> bool {
        let Some(e) = self.peers.remove(&peer) else {
            return false;
        };
        if let Some(at) = e.timer {
            self.timers.remove(&(at, peer));
        }
        if let Some(at) = e.idle {
            self.idle.remove(&(at, peer));
        }
        self.release(e.protocols);
        true
    }

    /// Lets go of protocol names; a name no peer lists any more leaves the
    /// table.
    fn release(&mut self, names: Vec<Arc<str>>) {
        for name in names {
            // Ours and the table's.
            if Arc::strong_count(&name) <= 2 {
                self.names.remove(&*name);
            }
        }
    }
}

/// Stores `bytes` with `expiry` in `e`; false when it had to be dropped
/// (invalid, or no room).
fn upsert(
    e: &mut Entry,
    config: &PeerStoreConfig,
    bytes: &[u8],
    expiry: Expiry,
    mode: Mode,
) -> bool {
    if bytes.is_empty() || bytes.len() > config.max_addr_len {
        return false;
    }
    if let Some(a) = e.addrs.iter_mut().find(|a| &*a.bytes == bytes) {
        a.expiry = match mode {
            Mode::Extend => a.expiry.max(expiry),
            Mode::Overwrite => expiry,
        };
        return true;
    }
    if e.addrs.len() >= config.max_addrs_per_peer {
        // The one expiring soonest, never a connected one, and only if it
        // would not outlive the new one.
        let victim = e
            .addrs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.expiry != Expiry::Connected)
            .min_by_key(|(_, a)| a.expiry)
            .filter(|(_, a)| a.expiry <= expiry)
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                e.addrs.remove(i);
            }
            None => return false,
        }
    }
    e.addrs.push(Addr {
        bytes: bytes.into(),
        expiry,
    });
    true
}

/// `addr` without a trailing `/p2p/<peer>` (`suffix`).
fn strip<'a>(addr: &'a [u8], suffix: &[u8]) -> &'a [u8] {
    addr.strip_suffix(suffix).unwrap_or(addr)
}

fn p2p_suffix(peer: &PeerId) -> Vec<u8> {
    crate::relay::p2p_suffix(peer)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A number in `0..n` (n >= 1), by widening multiplication.
fn uniform<R: rand_core::Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
