//! The harness of the peer store's model test, shared by
//! `core/tests/peer_store_model.rs` (proptest) and
//! `fuzz/fuzz_targets/peer_store.rs` (cargo-fuzz, where `Op` derives
//! `Arbitrary`): eight peers, six addresses each, a store smaller than the
//! population, and a reference model of every stored address's expiry,
//! the connections, the protections and the latency averages, checked
//! after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use sansp2p::peers::store::{Event, Expiry, PeerStore, PeerStoreConfig, StoreFull, Ttl};
use sansp2p::{Instant, Keypair, PeerId};

/// The population.
const N: usize = 8;
/// Addresses per peer in the pool.
const A: usize = 6;

fn peers() -> &'static [PeerId; N] {
    static P: OnceLock<[PeerId; N]> = OnceLock::new();
    P.get_or_init(|| {
        std::array::from_fn(|i| Keypair::from_secret_bytes([i as u8 + 1; 32]).peer_id())
    })
}

/// `/ip4/10.<i>.0.<k>/tcp/4001`; `k == A` is a 300-byte address (too long).
fn addr(i: usize, k: usize) -> Vec<u8> {
    if k >= A {
        return vec![0x04; 300];
    }
    vec![0x04, 10, i as u8, 0, k as u8, 0x06, 0x0f, 0xa1]
}

fn addrs(i: usize, mask: u8) -> Vec<Vec<u8>> {
    (0..=A)
        .filter(|k| mask & 1 << k != 0)
        .map(|k| addr(i, k))
        .collect()
}

const PROTOCOLS: [&str; 6] = ["/a", "/b", "/ipfs/id/1.0.0", "/c", "/b", ""];

/// One input. The fields are raw numbers, mapped by [`Harness::apply`].
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Advance the clock (`scale` picks the range: up to 2 s, 1 min, 30
    /// min), then `handle_timeout`.
    Advance {
        scale: u8,
        v: u16,
    },
    /// `mask`: which of the peer's addresses; `ttl`: see [`ttl`].
    AddAddrs {
        peer: u8,
        mask: u8,
        ttl: u16,
    },
    SetAddrs {
        peer: u8,
        mask: u8,
        ttl: u16,
    },
    /// `addr`: bit 7 clear: the dialed address `addr % 7`; set: inbound.
    Connected {
        peer: u8,
        addr: u8,
    },
    Disconnected(u8),
    /// `protos`: a mask over [`PROTOCOLS`]; `agent`: its length;
    /// `mask`: listen addresses; `key`: 0 none, 1 its own, 2 another's.
    Identified {
        peer: u8,
        protos: u8,
        agent: u8,
        mask: u8,
        key: u8,
    },
    Latency {
        peer: u8,
        ms: u16,
    },
    Protect(u8),
    Unprotect(u8),
    Remove(u8),
    /// `random_peers(n % 10)` with seed `seed`, checked.
    Random {
        n: u8,
        seed: u8,
    },
}

/// The store's configuration from 8 raw bytes: a store of 1 to 6 peers
/// (the population is 8), 1 to 4 addresses each, small identify bounds.
pub fn config(k: &[u8; 8]) -> PeerStoreConfig {
    let mut c = PeerStoreConfig::default();
    c.max_peers = 1 + usize::from(k[0] % 6);
    c.max_addrs_per_peer = 1 + usize::from(k[1] % 4);
    c.recently_connected_ttl = Duration::from_secs(u64::from(k[2] % 120));
    c.latency_alpha = [0.1, 0.5, 1.0, 0.01][usize::from(k[3] % 4)];
    c.max_protocols = usize::from(k[4] % 5);
    c.max_protocol_len = usize::from(k[5] % 16);
    c.max_agent_len = usize::from(k[6] % 40);
    c.max_public_key_len = [0, 36, 128][usize::from(k[7] % 3)];
    c
}

/// The TTL of an `AddAddrs`/`SetAddrs`: zero, permanent, or 1 s to 5 min.
fn ttl(v: u16) -> Ttl {
    match v % 8 {
        0 => Ttl::For(Duration::ZERO),
        1 => Ttl::Permanent,
        _ => Ttl::For(Duration::from_secs(1 + u64::from(v / 8) % 300)),
    }
}

pub struct Harness {
    s: PeerStore,
    cfg: PeerStoreConfig,
    now: Instant,
    /// The model, for stored peers: each address's expected expiry.
    exp: BTreeMap<usize, BTreeMap<Vec<u8>, Expiry>>,
    conns: BTreeMap<usize, u32>,
    protected: BTreeSet<usize>,
    latency: BTreeMap<usize, Duration>,
    refused: u64,
}

impl Harness {
    pub fn new(cfg: PeerStoreConfig) -> Harness {
        let s = PeerStore::new(Instant::ZERO, cfg.clone()).expect("a valid config");
        Harness {
            s,
            cfg,
            now: Instant::ZERO,
            exp: BTreeMap::new(),
            conns: BTreeMap::new(),
            protected: BTreeSet::new(),
            latency: BTreeMap::new(),
            refused: 0,
        }
    }

    fn idx(p: &PeerId) -> usize {
        peers()
            .iter()
            .position(|q| q == p)
            .expect("a peer of the population")
    }

    fn at(&self, t: Ttl) -> Option<Expiry> {
        match t {
            Ttl::Permanent => Some(Expiry::Permanent),
            Ttl::For(d) if d.is_zero() => None,
            Ttl::For(d) => Some(Expiry::At(self.now + d)),
        }
    }

    fn connected(&self, i: usize) -> bool {
        self.conns.get(&i).is_some_and(|&c| c > 0)
    }

    /// The peer the store must evict next: no connection, no protection,
    /// least recently seen, then the smaller id.
    fn victim(&self) -> Option<PeerId> {
        self.s
            .peers()
            .filter(|p| !self.s.is_connected(p) && !self.s.is_protected(p))
            .map(|p| (self.s.last_seen(&p).unwrap(), p))
            .min()
            .map(|(_, p)| p)
    }

    /// Model update for addresses stored with `mode` (`extend`: never
    /// shorter), only for the ones the store now holds (room decides).
    fn model_addrs(&mut self, i: usize, list: &[Vec<u8>], e: Option<Expiry>, extend: bool) {
        let p = peers()[i];
        let held: BTreeMap<Vec<u8>, Expiry> = self
            .s
            .addrs_with_expiry(&p)
            .map(|(a, e)| (a.to_vec(), e))
            .collect();
        let m = self.exp.entry(i).or_default();
        for a in list {
            match e {
                Some(e) if held.contains_key(a) => {
                    let old = m.get(a).copied();
                    let new = match old {
                        Some(o) if extend => o.max(e),
                        _ => e,
                    };
                    m.insert(a.clone(), new);
                }
                Some(_) => {
                    m.remove(a);
                }
                // Zero: `set_addrs` removes, `add_addrs` leaves alone.
                None if !extend => {
                    m.remove(a);
                }
                None => {}
            }
        }
    }

    pub fn apply(&mut self, op: Op) {
        let now = self.now;
        let full_before = self.s.len() >= self.cfg.max_peers;
        let victim = self.victim();
        let before: BTreeSet<PeerId> = self.s.peers().collect();
        let mut touched: Option<usize> = None;
        let mut result: Result<(), StoreFull> = Ok(());
        match op {
            Op::Advance { scale, v } => {
                let d = match scale % 3 {
                    0 => Duration::from_millis(u64::from(v % 2000)),
                    1 => Duration::from_secs(u64::from(v % 60)),
                    _ => Duration::from_secs(u64::from(v % 1800)),
                };
                self.now = now + d;
                self.s.handle_timeout(self.now);
            }
            Op::AddAddrs { peer, mask, ttl: t } => {
                let i = usize::from(peer) % N;
                let list = addrs(i, mask);
                result = self.s.add_addrs(now, peers()[i], &list, ttl(t));
                self.model_addrs(i, &list, self.at(ttl(t)), true);
                touched = Some(i);
            }
            Op::SetAddrs { peer, mask, ttl: t } => {
                let i = usize::from(peer) % N;
                let list = addrs(i, mask);
                result = self.s.set_addrs(now, peers()[i], &list, ttl(t));
                self.model_addrs(i, &list, self.at(ttl(t)), false);
                touched = Some(i);
            }
            Op::Connected { peer, addr: a } => {
                let i = usize::from(peer) % N;
                let dialed = (a & 0x80 == 0).then(|| addr(i, usize::from(a) % (A + 1)));
                result = self.s.handle_connected(now, peers()[i], dialed.as_deref());
                if result.is_ok() {
                    *self.conns.entry(i).or_default() += 1;
                    if let Some(d) = dialed {
                        self.model_addrs(i, &[d], Some(Expiry::Connected), true);
                    }
                }
                touched = Some(i);
            }
            Op::Disconnected(peer) => {
                let i = usize::from(peer) % N;
                self.s.handle_disconnected(now, peers()[i]);
                if let Some(c) = self.conns.get_mut(&i) {
                    if *c > 0 {
                        *c -= 1;
                        if *c == 0 {
                            let until = Expiry::At(now + self.cfg.recently_connected_ttl);
                            for e in self.exp.entry(i).or_default().values_mut() {
                                if *e == Expiry::Connected {
                                    *e = until;
                                }
                            }
                        }
                    }
                }
                touched = Some(i);
            }
            Op::Identified {
                peer,
                protos,
                agent,
                mask,
                key,
            } => {
                let i = usize::from(peer) % N;
                let p = peers()[i];
                let list: Vec<String> = PROTOCOLS
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| protos & 1 << k != 0)
                    .map(|(_, s)| s.to_string())
                    .collect();
                let agent_s: String = "é-agent/1.0.0 "
                    .repeat(4)
                    .chars()
                    .take(usize::from(agent % 50))
                    .collect();
                let pk = match key % 3 {
                    0 => None,
                    1 => Some(
                        Keypair::from_secret_bytes([i as u8 + 1; 32])
                            .public()
                            .encode_protobuf(),
                    ),
                    _ => Some(
                        Keypair::from_secret_bytes([99; 32])
                            .public()
                            .encode_protobuf(),
                    ),
                };
                let listen = addrs(i, mask);
                let old_key = self.s.public_key(&p).map(<[u8]>::to_vec);
                let old_agent = self.s.agent(&p).map(str::to_string);
                result = self.s.handle_identified(
                    now,
                    p,
                    &list,
                    (agent % 7 != 0).then_some(agent_s.as_str()),
                    &listen,
                    pk.as_deref(),
                );
                let e = if self.connected(i) {
                    Some(Expiry::Connected)
                } else {
                    self.at(Ttl::For(self.cfg.recently_connected_ttl))
                };
                self.model_addrs(i, &listen, e, true);
                if self.s.contains(&p) && result.is_ok() {
                    // The protocols: valid ones, the first max_protocols.
                    let mut want: Vec<&str> = list
                        .iter()
                        .map(String::as_str)
                        .filter(|s| !s.is_empty() && s.len() <= self.cfg.max_protocol_len)
                        .take(self.cfg.max_protocols)
                        .collect();
                    want.sort();
                    want.dedup();
                    assert_eq!(self.s.protocols(&p).collect::<Vec<_>>(), want);
                    for w in &want {
                        assert!(self.s.supports(&p, w));
                        assert!(self.s.peers_supporting(w).any(|q| q == p));
                    }
                    // The key: only its own, and only if short enough.
                    let own_ok =
                        key % 3 == 1 && pk.as_ref().unwrap().len() <= self.cfg.max_public_key_len;
                    let want_key = if own_ok { pk.clone() } else { old_key };
                    assert_eq!(self.s.public_key(&p).map(<[u8]>::to_vec), want_key);
                    let want_agent = if agent % 7 != 0 {
                        let mut end = agent_s.len().min(self.cfg.max_agent_len);
                        while !agent_s.is_char_boundary(end) {
                            end -= 1;
                        }
                        Some(agent_s[..end].to_string())
                    } else {
                        old_agent
                    };
                    assert_eq!(self.s.agent(&p).map(str::to_string), want_agent);
                }
                touched = Some(i);
            }
            Op::Latency { peer, ms } => {
                let i = usize::from(peer) % N;
                let rtt = Duration::from_millis(u64::from(ms));
                self.s.record_latency(peers()[i], rtt);
                if self.s.contains(&peers()[i]) {
                    let a = self.cfg.latency_alpha;
                    let next = match self.latency.get(&i) {
                        None => rtt,
                        Some(old) => Duration::from_nanos(
                            ((1.0 - a) * old.as_nanos() as f64 + a * rtt.as_nanos() as f64) as u64,
                        ),
                    };
                    self.latency.insert(i, next);
                }
            }
            Op::Protect(peer) => {
                let i = usize::from(peer) % N;
                result = self.s.protect(peers()[i]);
                if result.is_ok() {
                    self.protected.insert(i);
                }
                touched = Some(i);
            }
            Op::Unprotect(peer) => {
                let i = usize::from(peer) % N;
                self.s.unprotect(peers()[i]);
                self.protected.remove(&i);
            }
            Op::Remove(peer) => {
                let i = usize::from(peer) % N;
                let was = self.s.contains(&peers()[i]);
                assert_eq!(self.s.remove_peer(peers()[i]), was);
                self.forget(i);
            }
            Op::Random { n, seed } => {
                let n = usize::from(n % 10);
                let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
                let picked = self.s.random_peers(n, &mut rng, |_| true);
                let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
                assert_eq!(picked, self.s.random_peers(n, &mut rng, |_| true));
                assert_eq!(picked.len(), n.min(self.s.len()));
                let set: BTreeSet<PeerId> = picked.iter().copied().collect();
                assert_eq!(set.len(), picked.len(), "no duplicates");
                assert!(picked.iter().all(|p| self.s.contains(p)));
            }
        }
        // Refusal: only a new peer, only when full of peers that cannot go.
        if result.is_err() {
            let i = touched.expect("only peer inputs refuse");
            assert!(full_before && victim.is_none(), "refused with room");
            assert!(!self.s.contains(&peers()[i]));
            self.refused += 1;
        }
        assert_eq!(self.s.refused(), self.refused);
        self.events(victim, &before);
        self.check();
        self.prune();
    }

    /// Forgets the model's addresses the store no longer holds (expired,
    /// or pushed out by a new one); a connected one is never pushed out.
    fn prune(&mut self) {
        for (i, m) in self.exp.iter_mut() {
            let p = peers()[*i];
            let held: BTreeSet<Vec<u8>> = self.s.addrs(&p).map(<[u8]>::to_vec).collect();
            for (a, e) in m.iter() {
                if *e == Expiry::Connected {
                    assert!(held.contains(a), "peer {i}: a connected address was lost");
                }
            }
            m.retain(|a, _| held.contains(a));
        }
    }

    fn forget(&mut self, i: usize) {
        self.exp.remove(&i);
        self.conns.remove(&i);
        self.protected.remove(&i);
        self.latency.remove(&i);
    }

    fn events(&mut self, victim: Option<PeerId>, before: &BTreeSet<PeerId>) {
        let mut evicted = 0;
        while let Some(e) = self.s.poll_event() {
            match e {
                Event::PeerEvicted { peer } => {
                    let i = Self::idx(&peer);
                    assert!(!self.connected(i), "a connected peer was evicted");
                    assert!(!self.protected.contains(&i), "a protected peer was evicted");
                    assert_eq!(Some(peer), victim, "not the least recently seen");
                    evicted += 1;
                    self.forget(i);
                }
                Event::PeerDropped { peer } => {
                    let i = Self::idx(&peer);
                    assert!(!self.connected(i), "a connected peer was dropped");
                    assert!(!self.protected.contains(&i), "a protected peer was dropped");
                    self.forget(i);
                }
                Event::PeerAdded { peer } => {
                    assert!(!before.contains(&peer), "a stored peer added again");
                }
                _ => {}
            }
        }
        assert!(evicted <= 1, "one new peer evicts at most one");
    }

    fn check(&self) {
        let now = self.now;
        assert!(self.s.len() <= self.cfg.max_peers);
        let mut earliest: Option<Instant> = None;
        for i in 0..N {
            let p = peers()[i];
            let stored = self.s.contains(&p);
            // A connected or protected peer is never lost.
            if self.connected(i) || self.protected.contains(&i) {
                assert!(stored, "peer {i} lost while connected or protected");
            }
            assert_eq!(
                self.s.connections(&p),
                self.conns.get(&i).copied().unwrap_or(0)
            );
            assert_eq!(self.s.is_protected(&p), self.protected.contains(&i));
            if !stored {
                assert_eq!(self.s.addrs(&p).count(), 0);
                continue;
            }
            let held: Vec<(Vec<u8>, Expiry)> = self
                .s
                .addrs_with_expiry(&p)
                .map(|(a, e)| (a.to_vec(), e))
                .collect();
            assert!(held.len() <= self.cfg.max_addrs_per_peer);
            // Something keeps every stored peer.
            assert!(
                !held.is_empty() || self.connected(i) || self.protected.contains(&i),
                "peer {i} kept for nothing"
            );
            let model = self.exp.get(&i);
            for (a, e) in &held {
                assert!(a.len() <= self.cfg.max_addr_len);
                if let Expiry::At(t) = e {
                    assert!(*t > now, "an expired address is returned");
                    earliest = Some(earliest.map_or(*t, |x| x.min(*t)));
                }
                if *e == Expiry::Connected {
                    assert!(self.connected(i), "connected address without a connection");
                }
                assert_eq!(
                    model.and_then(|m| m.get(a)),
                    Some(e),
                    "peer {i}: the expiry of {a:?}"
                );
            }
            assert_eq!(self.s.latency(&p), self.latency.get(&i).copied());
            assert!(self.s.protocols(&p).count() <= self.cfg.max_protocols);
            assert!(self
                .s
                .protocols(&p)
                .all(|x| x.len() <= self.cfg.max_protocol_len));
            assert!(self
                .s
                .agent(&p)
                .is_none_or(|a| a.len() <= self.cfg.max_agent_len));
        }
        // The timer is the earliest expiry, after the latest input.
        assert_eq!(self.s.poll_timeout(), earliest);
        assert!(self.s.poll_timeout().is_none_or(|t| t > now));
    }
}
