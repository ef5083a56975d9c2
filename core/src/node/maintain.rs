//! Peer maintenance inside the node: go-ethereum's dial scheduler
//! ([`Scheduler`]) decides whom to dial, a [`PeerStore`] knows where they
//! are, and the node's dialer (ranking, backoff, limits) dials them. One
//! call, [`Node::enable_peer_maintenance`], keeps the node connected to
//! its static peers and to up to `max_peers` peers in all.
//!
//! The store learns from each event on its way out of the node
//! (connections, identify, ping); the scheduler hears first connections,
//! last disconnections and the outcome of its dials. Its lookups become
//! [`Event::PeerLookupWanted`] (the application answers with
//! [`Node::add_peer_candidates`] and [`Node::peer_lookup_done`]; half of
//! each lookup is answered from the store's random peers first), and the
//! lookup of a static peer that cannot be reached becomes
//! [`Event::ResolveWanted`] ([`Node::resolved`]).
//!
//! Quotas, as go-ethereum's: at most `max_peers / dial_ratio` dialed
//! peers and the rest inbound. A dialed connection beyond its quota and an
//! inbound one beyond `max_peers - max_dialed` are closed with
//! [`CloseReason::PeerQuota`](super::CloseReason::PeerQuota). Protected
//! peers (static peers carry the tag `static`, trusted peers `trusted`) are
//! never refused: a static peer we dial while dynamic peers fill the
//! dialed quota closes one of those, and a protected peer that dials us
//! while the inbound share is full closes the unprotected inbound peer with
//! the lowest id (both `PeerQuota`), so the total stays within `max_peers`.
//! Trusted peers are go-ethereum's `TrustedNodes`: the peers that keep *us*
//! as a static peer must be trusted here, or a busy node refuses their
//! redials for as long as its inbound share stays full.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::collections::HashMap;
use rand_core::SeedableRng as _;

use super::{CloseReason, ConnectionId, DialId, Endpoint, Event, Node, TimerKey};
use crate::addr::{self, Host};
use crate::dial::scheduler::{
    Action, Candidate, ConnDirection, ConnectError, Scheduler, SchedulerConfig,
    SchedulerConfigError, SchedulerError,
};
use crate::identity::PeerId;
use crate::peers::store::{PeerStore, PeerStoreConfig, PeerStoreConfigError, Ttl, ADDRESS_TTL};
use crate::time::Instant;

/// The protection tag of static peers.
pub const STATIC_TAG: &str = "static";

/// The protection tag of trusted peers ([`MaintainConfig::trusted_peers`]).
pub const TRUSTED_TAG: &str = "trusted";

/// What [`Node::enable_peer_maintenance`] keeps.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MaintainConfig {
    /// Quotas, history, fallback (go-ethereum's defaults: 50 peers, one in
    /// three dialed). Its `bootnodes` are replaced by [`bootnodes`](Self::bootnodes).
    pub scheduler: SchedulerConfig,
    /// Always kept connected, redialled under the scheduler's history
    /// rule; resolved through the application when unreachable.
    pub static_peers: Vec<(PeerId, Vec<Vec<u8>>)>,
    /// Dialled round-robin when there have been no peers for
    /// `scheduler.fallback_interval`.
    pub bootnodes: Vec<(PeerId, Vec<Vec<u8>>)>,
    /// Peers never refused for the peer quota (go-ethereum's
    /// `TrustedNodes`), not dialled by us: protected with
    /// [`TRUSTED_TAG`], so one that dials us while the inbound share is
    /// full takes the place of an unprotected inbound peer. List here the
    /// peers that keep this node as a static peer: a node cannot tell a
    /// static dial from a dynamic one, and refuses the first like the
    /// second when its inbound share is full, at every redial.
    pub trusted_peers: Vec<PeerId>,
    /// The peer store's bounds.
    pub store: PeerStoreConfig,
    /// Seeds the store's random picks.
    pub rng_seed: u64,
}

impl Default for MaintainConfig {
    fn default() -> Self {
        MaintainConfig {
            scheduler: SchedulerConfig::default(),
            static_peers: Vec::new(),
            bootnodes: Vec::new(),
            trusted_peers: Vec::new(),
            store: PeerStoreConfig::default(),
            rng_seed: 0x6d61_696e_7461_696e,
        }
    }
}

/// Why [`Node::enable_peer_maintenance`] refused its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaintainConfigError {
    /// The scheduler's limits.
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerConfigError),
    /// The store's limits.
    #[error("peer store: {0}")]
    Store(PeerStoreConfigError),
    /// A static peer (ourselves, or too many).
    #[error("static peer: {0}")]
    Static(#[from] SchedulerError),
    /// More static peers than the store holds.
    #[error("the peer store cannot hold every static peer")]
    StoreTooSmall,
}

/// The node's side of peer maintenance.
#[derive(Debug)]
pub(super) struct Maintain {
    scheduler: Scheduler,
    store: PeerStore,
    rng: rand_chacha::ChaCha8Rng,
    /// Dials made for the scheduler.
    dials: HashMap<DialId, PeerId>,
    /// The bootnodes' addresses: kept apart from the store, so that they
    /// are dialled only by the fallback, not picked as random peers.
    boot_addrs: HashMap<PeerId, Vec<Vec<u8>>>,
    /// The earliest deadline registered in the timer table.
    timer: Option<Instant>,
}

impl Node {
    // ------------------------------------------------------------ getters

    /// The peer store of [`enable_peer_maintenance`](Self::enable_peer_maintenance).
    pub fn peer_store(&self) -> Option<&PeerStore> {
        self.maintain.as_ref().map(|m| &m.store)
    }

    /// The dial scheduler of [`enable_peer_maintenance`](Self::enable_peer_maintenance).
    pub fn scheduler(&self) -> Option<&Scheduler> {
        self.maintain.as_ref().map(|m| &m.scheduler)
    }

    // ------------------------------------------------------------ commands

    /// Starts keeping peers: static peers always, bootnodes after a while
    /// with none, and dynamic peers from the store and the application's
    /// lookups up to the quotas. Peers already connected count at once.
    pub fn enable_peer_maintenance(
        &mut self,
        now: Instant,
        config: MaintainConfig,
    ) -> Result<(), MaintainConfigError> {
        let now = self.tick(now);
        let mut store = PeerStore::new(now, config.store).map_err(MaintainConfigError::Store)?;
        let mut scheduler_config = config.scheduler;
        scheduler_config.bootnodes = config
            .bootnodes
            .iter()
            .map(|(p, addrs)| candidate(*p, addrs))
            .collect();
        let mut scheduler = Scheduler::new(self.local_peer, scheduler_config, now)?;
        for (peer, addrs) in &config.static_peers {
            store
                .add_addrs(now, *peer, addrs, Ttl::Permanent)
                .map_err(|_| MaintainConfigError::StoreTooSmall)?;
        }
        for (peer, addrs) in &config.static_peers {
            store
                .protect(*peer)
                .map_err(|_| MaintainConfigError::StoreTooSmall)?;
            scheduler.add_static(now, candidate(*peer, addrs))?;
        }
        for (peer, _) in &config.static_peers {
            self.protect(*peer, STATIC_TAG);
        }
        for peer in &config.trusted_peers {
            if *peer != self.local_peer {
                self.protect(*peer, TRUSTED_TAG);
            }
        }
        // Peers connected already.
        let connected: Vec<(PeerId, ConnDirection)> = self
            .peers
            .iter()
            .filter_map(|(peer, conns)| {
                let c = self.conns.get(conns.first()?)?;
                let dir = if c.endpoint == Endpoint::Dialer {
                    ConnDirection::Outbound
                } else {
                    ConnDirection::Inbound
                };
                Some((*peer, dir))
            })
            .collect();
        for (peer, dir) in connected {
            let _ = store.handle_connected(now, peer, None);
            let _ = scheduler.handle_connected(now, peer, dir);
        }
        self.maintain = Some(Box::new(Maintain {
            scheduler,
            store,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(config.rng_seed),
            dials: HashMap::default(),
            boot_addrs: config.bootnodes.into_iter().collect(),
            timer: None,
        }));
        self.run_maintain();
        Ok(())
    }

    /// Answers [`Event::PeerLookupWanted`]: peers that may be dialled, with
    /// their addresses (kept in the store for an hour). More may follow
    /// until [`peer_lookup_done`](Self::peer_lookup_done).
    pub fn add_peer_candidates(&mut self, now: Instant, peers: Vec<(PeerId, Vec<Vec<u8>>)>) {
        let now = self.tick(now);
        let Some(m) = self.maintain.as_mut() else {
            return;
        };
        let mut candidates = Vec::with_capacity(peers.len());
        for (peer, addrs) in &peers {
            if *peer == self.local_peer {
                continue;
            }
            if m.store
                .add_addrs(now, *peer, addrs, Ttl::For(ADDRESS_TTL))
                .is_ok()
            {
                candidates.push(candidate(*peer, addrs));
            }
        }
        m.scheduler.add_candidates(now, candidates);
        self.run_maintain();
    }

    /// The lookup of the last [`Event::PeerLookupWanted`] is over.
    pub fn peer_lookup_done(&mut self, now: Instant) {
        let now = self.tick(now);
        if let Some(m) = self.maintain.as_mut() {
            m.scheduler.handle_lookup_done(now);
        }
        self.run_maintain();
    }

    /// Answers [`Event::ResolveWanted`]: the static peer's current
    /// addresses (none: not found; it is looked up again later, each time
    /// twice as late, up to the scheduler's `max_resolve_delay`).
    pub fn resolved(&mut self, now: Instant, peer: PeerId, addrs: Vec<Vec<u8>>) {
        let now = self.tick(now);
        let Some(m) = self.maintain.as_mut() else {
            return;
        };
        let found =
            !addrs.is_empty() && m.store.add_addrs(now, peer, &addrs, Ttl::Permanent).is_ok();
        let ip = if found { ip_of(&addrs) } else { None };
        // Found without an IP (a DNS name): the scheduler dials it anyway.
        let answer = if found {
            Some(ip.unwrap_or(core::net::IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED)))
        } else {
            None
        };
        let _ = m.scheduler.handle_resolved(now, peer, answer);
        self.run_maintain();
    }

    // ------------------------------------------------------------ internals

    pub(super) fn maintain_timeout(&mut self, now: Instant) {
        let Some(m) = self.maintain.as_mut() else {
            return;
        };
        m.timer = None;
        m.scheduler.handle_timeout(now);
        m.store.handle_timeout(now);
        self.run_maintain();
    }

    /// An event on its way to the application: what the store and the
    /// scheduler learn from it.
    pub(super) fn maintain_observe(&mut self, event: &Event) {
        if self.maintain.is_none() {
            return;
        }
        let now = self.now;
        match event {
            Event::ConnectionEstablished {
                conn,
                peer,
                endpoint,
                remote_addr,
                ..
            } => self.maintain_connected(now, *conn, *peer, *endpoint, remote_addr),
            Event::ConnectionClosed {
                peer: Some(peer), ..
            } => {
                let peer = *peer;
                let last = self.connections_to(&peer).next().is_none();
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                m.store.handle_disconnected(now, peer);
                if last {
                    m.scheduler.handle_disconnected(now, peer);
                }
            }
            Event::Identified { peer, info, .. } => {
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                let key = info.public_key.encode_protobuf();
                let _ = m.store.handle_identified(
                    now,
                    *peer,
                    &info.protocols,
                    Some(&info.agent_version),
                    &info.listen_addrs,
                    Some(&key),
                );
            }
            Event::PingSuccess { peer, rtt, .. } => {
                if let Some(m) = self.maintain.as_mut() {
                    m.store.record_latency(*peer, *rtt);
                }
            }
            Event::Dialed { dial, peer, .. } => {
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                if m.dials.remove(dial).is_some() {
                    let _ = m.scheduler.handle_dial_done(now, *peer, true);
                }
            }
            Event::DialFailed { dial, .. } => {
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                if let Some(peer) = m.dials.remove(dial) {
                    let _ = m.scheduler.handle_dial_done(now, peer, false);
                }
            }
            _ => return,
        }
        self.run_maintain();
    }

    /// A connection is up: the store keeps its address; a first connection
    /// counts against its quota, and one beyond it is closed unless the
    /// peer is protected.
    fn maintain_connected(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        peer: PeerId,
        endpoint: Endpoint,
        remote_addr: &[u8],
    ) {
        let first = self.connections_to(&peer).count() == 1;
        let relayed = self.is_relayed(conn);
        let protected = self.is_protected(&peer);
        let Some(m) = self.maintain.as_mut() else {
            return;
        };
        let dialed = endpoint == Endpoint::Dialer;
        // The address we dialed is one to give out; an inbound source
        // address (an ephemeral port) or a circuit is not.
        let kept = (dialed && !relayed).then_some(remote_addr);
        let _ = m.store.handle_connected(now, peer, kept);
        if !first {
            return;
        }
        let direction = if dialed {
            ConnDirection::Outbound
        } else {
            ConnDirection::Inbound
        };
        if direction == ConnDirection::Inbound {
            self.admit_inbound(now, conn, peer, protected);
            return;
        }
        match m.scheduler.handle_connected(now, peer, direction) {
            Err(ConnectError::DialQuotaFull) if !protected => self.close_for_quota(conn),
            // A protected peer over the dialed quota (a static peer that
            // dialled us first, say): kept, and counted as inbound.
            Err(ConnectError::DialQuotaFull) => self.admit_inbound(now, conn, peer, true),
            _ => {}
        }
    }

    /// Counts `peer` as inbound. With the inbound share full, an
    /// unprotected peer is refused; a protected one closes the unprotected
    /// inbound peer with the lowest id, or, with none left, is kept beyond
    /// the share (go-ethereum lets trusted peers exceed `MaxPeers`).
    fn admit_inbound(&mut self, now: Instant, conn: ConnectionId, peer: PeerId, protected: bool) {
        let Some(m) = self.maintain.as_ref() else {
            return;
        };
        let s = &m.scheduler;
        let quota = s.config().max_peers.saturating_sub(s.max_dialed_peers());
        let inbound = s.connected_peers().saturating_sub(s.dialed_peers());
        if inbound >= quota {
            if !protected {
                self.close_for_quota(conn);
                return;
            }
            let victim = s
                .connected()
                .filter(|(p, d)| *d == ConnDirection::Inbound && !self.is_protected(p))
                .map(|(p, _)| p)
                .min_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            if let Some(victim) = victim {
                // Uncounted at once, so the share holds while it closes;
                // its disconnection, reported later, changes nothing.
                if let Some(m) = self.maintain.as_mut() {
                    m.scheduler.handle_disconnected(now, victim);
                }
                let conns: Vec<ConnectionId> = self.connections_to(&victim).collect();
                for c in conns {
                    self.close_for_quota(c);
                }
            }
        }
        if let Some(m) = self.maintain.as_mut() {
            let _ = m
                .scheduler
                .handle_connected(now, peer, ConnDirection::Inbound);
        }
    }

    fn close_for_quota(&mut self, conn: ConnectionId) {
        self.close_with(conn, CloseReason::PeerQuota);
    }

    /// Carries out the scheduler's actions until it has none; registers
    /// the earliest deadline of the scheduler and the store.
    fn run_maintain(&mut self) {
        loop {
            let Some(m) = self.maintain.as_mut() else {
                return;
            };
            let mut actions = Vec::new();
            while let Some(a) = m.scheduler.poll_action() {
                actions.push(a);
            }
            // Skips and evictions are the scheduler's and store's own
            // business: readable from their getters.
            while m.scheduler.poll_event().is_some() {}
            while m.store.poll_event().is_some() {}
            if actions.is_empty() {
                break;
            }
            for action in actions {
                self.scheduler_action(action);
            }
        }
        let Some(m) = self.maintain.as_mut() else {
            return;
        };
        let next = [m.scheduler.poll_timeout(), m.store.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if next != m.timer {
            if let Some(old) = m.timer.take() {
                self.timers.remove(&(old, TimerKey::Maintain));
            }
            if let Some(at) = next {
                m.timer = Some(at);
                self.timers.insert((at, TimerKey::Maintain));
            }
        }
    }

    fn scheduler_action(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Dial { peer, .. } => {
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                let mut addrs: Vec<Vec<u8>> = m.store.addrs(&peer).map(<[u8]>::to_vec).collect();
                if addrs.is_empty() {
                    addrs = m.boot_addrs.get(&peer).cloned().unwrap_or_default();
                }
                let dialed = if addrs.is_empty() {
                    None
                } else {
                    self.dial(now, Some(peer), addrs).ok()
                };
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                match dialed {
                    Some(dial) => {
                        m.dials.insert(dial, peer);
                    }
                    None => {
                        let _ = m.scheduler.handle_dial_done(now, peer, false);
                    }
                }
            }
            Action::Resolve { peer } => self.events.push_back(Event::ResolveWanted { peer }),
            Action::Disconnect { peer } => {
                let conns: Vec<ConnectionId> = self.connections_to(&peer).collect();
                for conn in conns {
                    self.close_for_quota(conn);
                }
            }
            Action::FindCandidates { want } => {
                let local = self.local_peer;
                let connected: Vec<PeerId> = self.peers.keys().copied().collect();
                let Some(m) = self.maintain.as_mut() else {
                    return;
                };
                // Half from the store, the rest from the application.
                let from_store = want.div_ceil(2);
                let store = &m.store;
                let picked = store.random_peers(from_store, &mut m.rng, |p| {
                    *p != local && !connected.contains(p) && store.addrs(p).next().is_some()
                });
                let candidates: Vec<Candidate> = picked
                    .iter()
                    .map(|p| {
                        let addrs: Vec<Vec<u8>> = store.addrs(p).map(<[u8]>::to_vec).collect();
                        candidate(*p, &addrs)
                    })
                    .collect();
                let got = candidates.len();
                m.scheduler.add_candidates(now, candidates);
                self.events.push_back(Event::PeerLookupWanted {
                    want: want.saturating_sub(got).max(1),
                });
            }
        }
    }
}

/// A candidate with the IP of its first address that has one.
fn candidate(peer: PeerId, addrs: &[Vec<u8>]) -> Candidate {
    match ip_of(addrs) {
        Some(ip) => Candidate::with_ip(peer, ip),
        None => Candidate::new(peer),
    }
}

fn ip_of(addrs: &[Vec<u8>]) -> Option<core::net::IpAddr> {
    addrs
        .iter()
        .find_map(|a| match addr::classify(a).ok()?.host {
            Host::Ip(ip) => Some(ip),
            _ => None,
        })
}
