//! The relay's policy: who may reserve, how many circuits may run, and what
//! each circuit may carry. It owns no streams: the node asks it before
//! answering a hop request and tells it when circuits and connections end.
//!
//! Every table is bounded by a [`ServerConfig`] field: reservations,
//! reservations per IP, circuits, circuits per peer, and the rate limiter's
//! entries. Expiries sit in one ordered set, so a timeout touches only
//! what is due.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::relay::server::Server;
//! use sansp2p::relay::{ServerConfig, Status, WallClock};
//! use sansp2p::{Instant, Keypair};
//!
//! let now = Instant::from_duration(Duration::from_secs(1));
//! let clock = WallClock::new(now, Duration::from_secs(1_700_000_000));
//! let mut relay = Server::new(now, Keypair::from_secret_bytes([1; 32]), clock, ServerConfig::default());
//! let (alice, bob) = (Keypair::from_secret_bytes([2; 32]).peer_id(), Keypair::from_secret_bytes([3; 32]).peer_id());
//!
//! assert_eq!(relay.handle_connect(now, alice, bob, false).unwrap_err(), Status::NoReservation);
//! let grant = relay.handle_reserve(now, bob, None, false).unwrap();
//! assert_eq!(grant.reservation.expire, 1_700_000_000 + 3600);
//! let circuit = relay.handle_connect(now, alice, bob, false).unwrap();
//! relay.handle_circuit_closed(circuit);
//! ```

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::hash::Hash;
use core::net::IpAddr;
use core::time::Duration;

use crate::collections::HashMap;

use super::proto::{Limit, Reservation as ReservationProto};
use super::{make_voucher, p2p_suffix, CircuitLimit, ServerConfig, Status, WallClock};
use crate::identity::{Keypair, PeerId};
use crate::time::Instant;

/// One circuit the relay agreed to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitId(u64);

/// What a granted RESERVE is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The reservation message (expiry, addresses, voucher).
    pub reservation: ReservationProto,
    /// The limit of circuits to the peer.
    pub limit: Option<Limit>,
    /// Whether it renewed a reservation the peer held.
    pub renewed: bool,
}

/// What the relay did, for the application and its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A reservation was granted (`renewed`: it replaced the peer's own).
    Reserved {
        /// The client.
        peer: PeerId,
        /// Whether it was a refresh.
        renewed: bool,
    },
    /// A RESERVE was refused.
    ReserveRefused {
        /// The client.
        peer: PeerId,
        /// The status it got.
        status: Status,
    },
    /// A reservation ended.
    ReservationEnded {
        /// The client.
        peer: PeerId,
        /// Its time ran out (else its last direct connection closed).
        expired: bool,
    },
    /// A CONNECT was refused.
    ConnectRefused {
        /// Who asked.
        src: PeerId,
        /// Whom it wanted.
        dst: PeerId,
        /// The status it got.
        status: Status,
    },
}

#[derive(Debug)]
struct Slot {
    expire: Instant,
    ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
struct CircuitEnds {
    src: PeerId,
    dst: PeerId,
}

/// The relay server's policy machine.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    key: Keypair,
    local: PeerId,
    clock: WallClock,
    /// `/p2p/<relay>`-suffixed public addresses, handed out in reservations.
    addrs: Vec<Vec<u8>>,
    reservations: HashMap<PeerId, Slot>,
    expiries: BTreeSet<(Instant, PeerId)>,
    per_ip: HashMap<IpAddr, usize>,
    circuits: HashMap<CircuitId, CircuitEnds>,
    circuits_per_peer: HashMap<PeerId, usize>,
    next_circuit: u64,
    peer_rate: TokenBuckets<PeerId>,
    ip_rate: TokenBuckets<IpAddr>,
    events: alloc::collections::VecDeque<ServerEvent>,
    now: Instant,
}

impl Server {
    /// A relay with identity `key`; `clock` dates reservations in unix time.
    pub fn new(now: Instant, key: Keypair, clock: WallClock, config: ServerConfig) -> Self {
        let peer_rate = TokenBuckets::new(
            config.reserve_burst_per_peer,
            config.reserve_interval_per_peer,
            config.max_rate_entries,
        );
        let ip_rate = TokenBuckets::new(
            config.reserve_burst_per_ip,
            config.reserve_interval_per_ip,
            config.max_rate_entries,
        );
        Server {
            local: key.peer_id(),
            key,
            clock,
            addrs: Vec::new(),
            reservations: HashMap::default(),
            expiries: BTreeSet::new(),
            per_ip: HashMap::default(),
            circuits: HashMap::default(),
            circuits_per_peer: HashMap::default(),
            next_circuit: 0,
            peer_rate,
            ip_rate,
            events: Default::default(),
            config,
            now,
        }
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether `peer` holds a reservation now.
    pub fn has_reservation(&self, peer: &PeerId) -> bool {
        self.reservations.contains_key(peer)
    }

    /// Reservations held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits running (or being set up).
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// Reservations held by peers whose connection came from `ip`.
    pub fn reservations_from(&self, ip: &IpAddr) -> usize {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    /// Peers and IPs the reservation rate limiter remembers.
    pub fn rate_entries(&self) -> usize {
        self.peer_rate.buckets.len() + self.ip_rate.buckets.len()
    }

    /// The two ends of a circuit.
    pub fn circuit_ends(&self, id: CircuitId) -> Option<(PeerId, PeerId)> {
        self.circuits.get(&id).map(|c| (c.src, c.dst))
    }

    /// The limit every circuit gets (`None`: unlimited).
    pub fn circuit_limit(&self) -> Option<CircuitLimit> {
        let limit = CircuitLimit {
            duration: Some(self.config.circuit_duration).filter(|d| !d.is_zero()),
            data: Some(self.config.circuit_data).filter(|&d| d > 0),
        };
        (limit != CircuitLimit::default()).then_some(limit)
    }

    // ---- inputs ----

    /// The relay's public addresses (binary multiaddrs) changed; they go
    /// into reservations with `/p2p/<relay>`.
    pub fn set_public_addrs(&mut self, addrs: impl IntoIterator<Item = Vec<u8>>) {
        let suffix = p2p_suffix(&self.local);
        self.addrs = addrs
            .into_iter()
            .filter(|a| crate::addr::classify(a).is_ok_and(|i| !i.relayed))
            .map(|mut a| {
                if !a.ends_with(&suffix) {
                    a.extend_from_slice(&suffix);
                }
                a
            })
            .collect();
        self.addrs.sort();
        self.addrs.dedup();
    }

    /// A RESERVE from `peer` over a direct connection from `ip` (`relayed`
    /// when it came over a relayed connection: refused).
    pub fn handle_reserve(
        &mut self,
        now: Instant,
        peer: PeerId,
        ip: Option<IpAddr>,
        relayed: bool,
    ) -> Result<Grant, Status> {
        let now = self.tick(now);
        let result = self.reserve(now, peer, ip, relayed);
        self.events.push_back(match &result {
            Ok(g) => ServerEvent::Reserved {
                peer,
                renewed: g.renewed,
            },
            Err(status) => ServerEvent::ReserveRefused {
                peer,
                status: *status,
            },
        });
        result
    }

    fn reserve(
        &mut self,
        now: Instant,
        peer: PeerId,
        ip: Option<IpAddr>,
        relayed: bool,
    ) -> Result<Grant, Status> {
        if relayed {
            return Err(Status::PermissionDenied);
        }
        let renewed = self.reservations.contains_key(&peer);
        let same_ip = renewed && self.reservations[&peer].ip == ip;
        if !renewed && self.reservations.len() >= self.config.max_reservations {
            return Err(Status::ReservationRefused);
        }
        if let Some(ip) = ip.filter(|_| !same_ip) {
            if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_reservations_per_ip {
                return Err(Status::ReservationRefused);
            }
        }
        // A refresh in the second half of the live reservation's lifetime
        // is free: a relay whose TTL is shorter than its rate interval must
        // still let its clients keep their slot, and that costs at most two
        // requests per lifetime. Anything else is charged, last, so a
        // refusal for another reason costs the peer nothing.
        let due = self.reservations.get(&peer).is_some_and(|slot| {
            let half = self.config.reservation_ttl / 2;
            same_ip && now >= slot.expire.saturating_sub(half)
        });
        if !due
            && (!self.peer_rate.take(now, peer) || ip.is_some_and(|ip| !self.ip_rate.take(now, ip)))
        {
            return Err(Status::ResourceLimitExceeded);
        }
        self.remove_reservation(&peer);
        let expire = now.saturating_add(self.config.reservation_ttl);
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        self.reservations.insert(peer, Slot { expire, ip });
        self.expiries.insert((expire, peer));
        let expire_unix = (self.clock.unix_at(now) + self.config.reservation_ttl).as_secs();
        Ok(Grant {
            reservation: ReservationProto {
                expire: expire_unix,
                addrs: self.addrs.clone(),
                voucher: Some(make_voucher(&self.key, &peer, expire_unix)),
            },
            limit: self.circuit_limit().map(Limit::from),
            renewed,
        })
    }

    /// The last direct connection to `peer` closed: its reservation goes.
    pub fn handle_peer_disconnected(&mut self, peer: &PeerId) {
        if self.remove_reservation(peer) {
            self.events.push_back(ServerEvent::ReservationEnded {
                peer: *peer,
                expired: false,
            });
        }
    }

    /// A CONNECT from `src` to `dst` (`relayed`: it came over a relayed
    /// connection, refused). On success the relay opens a stop stream to
    /// `dst` over its existing connection and reports the circuit's end
    /// with [`Self::handle_circuit_closed`].
    pub fn handle_connect(
        &mut self,
        now: Instant,
        src: PeerId,
        dst: PeerId,
        relayed: bool,
    ) -> Result<CircuitId, Status> {
        self.tick(now);
        let result = self.connect(src, dst, relayed);
        if let Err(status) = result {
            self.events
                .push_back(ServerEvent::ConnectRefused { src, dst, status });
        }
        result
    }

    fn connect(&mut self, src: PeerId, dst: PeerId, relayed: bool) -> Result<CircuitId, Status> {
        if relayed {
            return Err(Status::PermissionDenied);
        }
        if !self.reservations.contains_key(&dst) {
            return Err(Status::NoReservation);
        }
        let busy = |p: &PeerId| self.circuits_per_peer.get(p).copied().unwrap_or(0);
        // A circuit takes a slot of each end: two of a peer that is both.
        let slots = 1 + usize::from(src == dst);
        if self.circuits.len() >= self.config.max_circuits
            || busy(&src) + slots > self.config.max_circuits_per_peer
            || busy(&dst) + slots > self.config.max_circuits_per_peer
        {
            return Err(Status::ResourceLimitExceeded);
        }
        let id = CircuitId(self.next_circuit);
        self.next_circuit += 1;
        self.circuits.insert(id, CircuitEnds { src, dst });
        for p in [src, dst] {
            *self.circuits_per_peer.entry(p).or_default() += 1;
        }
        Ok(id)
    }

    /// A circuit ended (or its setup failed): its slots are free again.
    pub fn handle_circuit_closed(&mut self, id: CircuitId) {
        let Some(ends) = self.circuits.remove(&id) else {
            return;
        };
        for p in [ends.src, ends.dst] {
            release(&mut self.circuits_per_peer, &p);
        }
    }

    /// Ends the reservations whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        while let Some(&(at, peer)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.remove_reservation(&peer);
            self.events.push_back(ServerEvent::ReservationEnded {
                peer,
                expired: true,
            });
        }
    }

    // ---- outputs ----

    /// What happened, oldest first.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next reservation expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|&(at, _)| at)
    }

    // ---- internals ----

    fn tick(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn remove_reservation(&mut self, peer: &PeerId) -> bool {
        let Some(slot) = self.reservations.remove(peer) else {
            return false;
        };
        self.expiries.remove(&(slot.expire, *peer));
        if let Some(ip) = slot.ip {
            release(&mut self.per_ip, &ip);
        }
        true
    }
}

/// Counts one use of `key` less, forgetting it at zero.
fn release<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Token buckets per key, at most `max` keys: when full, a full bucket (one
/// that would be forgotten anyway) or else the least recently used goes.
#[derive(Debug)]
struct TokenBuckets<K> {
    burst: u32,
    interval: Duration,
    max: usize,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the count was last brought up to date.
    at: Instant,
}

impl<K: Hash + Eq + Copy> TokenBuckets<K> {
    fn new(burst: u32, interval: Duration, max: usize) -> Self {
        TokenBuckets {
            burst,
            interval,
            max,
            buckets: HashMap::default(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        if self.interval.is_zero() {
            b.tokens = self.burst;
            b.at = now;
            return;
        }
        let gained = now.saturating_duration_since(b.at).as_nanos() / self.interval.as_nanos();
        if gained > 0 {
            b.tokens = self.burst.min(
                b.tokens
                    .saturating_add(u32::try_from(gained).unwrap_or(u32::MAX)),
            );
            b.at =
                b.at.saturating_add(self.interval * u32::try_from(gained).unwrap_or(u32::MAX));
        }
        if b.tokens == self.burst {
            b.at = now;
        }
    }

    /// Takes one token for `key`; `false` when it has none left.
    fn take(&mut self, now: Instant, key: K) -> bool {
        if self.burst == 0 {
            return true;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max.max(1) {
            self.evict(now);
        }
        let mut b = self.buckets.get(&key).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(&mut b, now);
        let ok = b.tokens > 0;
        b.tokens -= u32::from(ok);
        self.buckets.insert(key, b);
        ok
    }

    fn evict(&mut self, now: Instant) {
        let mut oldest: Option<(K, Instant)> = None;
        for (k, b) in &self.buckets {
            let mut b = *b;
            self.refill(&mut b, now);
            if b.tokens == self.burst {
                oldest = Some((*k, Instant::from_duration(Duration::ZERO)));
                break;
            }
            if oldest.is_none_or(|(_, at)| b.at < at) {
                oldest = Some((*k, b.at));
            }
        }
        if let Some((k, _)) = oldest {
            self.buckets.remove(&k);
        }
    }
}
