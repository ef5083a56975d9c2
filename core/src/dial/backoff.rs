//! Dial backoff per (peer, address), after go-libp2p's `DialBackoff`
//! (`p2p/net/swarm/swarm_dial.go`).
//!
//! - The first failure backs the address off for `base` (5 s); each later
//!   one for `min(base + coef * tries², max)` (5 s + 1 s · tries², at most
//!   5 min), where `tries` counts the earlier failures.
//! - [`Backoff::clear_peer`] forgets all entries of a peer (go-libp2p does
//!   it on every new connection, inbound ones too); the
//!   [`Dialer`](super::Dialer) forgets only the address that worked
//!   ([`Backoff::clear`]).
//! - An entry is remembered (so `tries` keeps growing) for one more backoff
//!   period after its backoff ends, as go-libp2p's `cleanup` decides. go runs
//!   that cleanup on a 5-minute ticker; here each peer's record is removed by
//!   [`Backoff::handle_timeout`] at the exact moment the last of its entries
//!   goes stale, so nothing lingers.
//! - Bounded: at most [`BackoffConfig::max_peers`] peers (adding one more
//!   forgets the peer whose record would expire first) and
//!   [`BackoffConfig::max_addrs_per_peer`] addresses per peer (adding one
//!   more forgets that peer's address whose backoff ends first). go-libp2p has
//!   no such caps.
//! - Compact: short addresses are kept inline, and expiry is a heap of
//!   16-byte (time, peer hash) entries with lazy deletion, compacted when
//!   stale entries outnumber live ones. Every command is O(1) expected plus
//!   O(log n) in that heap.
//!
//! **When to call again:** after [`Backoff::add`] or
//! [`Backoff::handle_timeout`], sleep until [`Backoff::poll_timeout`].
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::dial::{Addr, Backoff, BackoffConfig};
//! use sansp2p::{Instant, Keypair};
//!
//! let peer = Keypair::from_secret_bytes([7; 32]).peer_id();
//! let addr = Addr::from_bytes(vec![0x04, 1, 2, 3, 4, 0x06, 0, 1]).unwrap(); // /ip4/1.2.3.4/tcp/1
//! let mut backoff = Backoff::new(BackoffConfig::default()).unwrap();
//! let t0 = Instant::ZERO;
//! assert_eq!(backoff.add(t0, peer, &addr), t0 + Duration::from_secs(5));
//! assert!(backoff.is_backed_off(t0, &peer, &addr));
//! assert!(!backoff.is_backed_off(t0 + Duration::from_secs(5), &peer, &addr));
//! // Remembered one more period (6 s), then forgotten by the machine itself.
//! assert_eq!(backoff.poll_timeout(), Some(t0 + Duration::from_secs(11)));
//! backoff.handle_timeout(t0 + Duration::from_secs(11));
//! assert!(backoff.is_empty());
//! ```

use alloc::collections::BinaryHeap;
use core::cmp::Reverse;
use core::hash::BuildHasher;
use core::time::Duration;

use hashbrown::HashTable;

use crate::collections::Hasher;
use smallvec::SmallVec;

use super::Addr;
use crate::identity::PeerId;
use crate::time::Instant;

/// Limits and delays of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// Backoff after the first failure (go-libp2p `BackoffBase`, 5 s).
    pub base: Duration,
    /// Added per squared earlier failure (go-libp2p `BackoffCoef`, 1 s).
    pub coef: Duration,
    /// Longest backoff (go-libp2p `BackoffMax`, 5 min).
    pub max: Duration,
    /// Most peers remembered at once (ours: 100 000).
    pub max_peers: usize,
    /// Most addresses remembered per peer (ours: 100, go-libp2p's cap on
    /// resolved addresses per peer).
    pub max_addrs_per_peer: usize,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(5),
            coef: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_peers: 100_000,
            max_addrs_per_peer: 100,
        }
    }
}

/// A [`BackoffConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffConfigError {
    /// `base` is longer than `max`.
    #[error("backoff base is longer than the maximum backoff")]
    BaseAboveMax,
    /// `max_peers` or `max_addrs_per_peer` is zero.
    #[error("backoff table limits must be at least 1")]
    ZeroLimit,
}

impl BackoffConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), BackoffConfigError> {
        if self.base > self.max {
            return Err(BackoffConfigError::BaseAboveMax);
        }
        if self.max_peers == 0 || self.max_addrs_per_peer == 0 {
            return Err(BackoffConfigError::ZeroLimit);
        }
        Ok(())
    }

    /// The backoff after a failure when `tries` failures came before:
    /// `min(base + coef * tries², max)`.
    pub fn delay(&self, tries: u32) -> Duration {
        let sq = u64::from(tries).saturating_mul(u64::from(tries));
        let extra = match u32::try_from(sq) {
            Ok(sq) => self.coef.saturating_mul(sq),
            Err(_) => Duration::MAX,
        };
        self.base.saturating_add(extra).min(self.max)
    }
}

#[derive(Debug, Clone)]
struct AddrEntry {
    /// The address's bytes, kept inline when short (most are): the table
    /// holds no reference to the caller's buffers and frees nothing but
    /// itself when an entry goes.
    addr: SmallVec<[u8; 24]>,
    /// Failures so far.
    tries: u32,
    /// Backed off until then.
    until: Instant,
}

#[derive(Debug, Clone)]
struct PeerEntry {
    peer: PeerId,
    /// `peer`'s hash in the table, also its name in `expiry`.
    hash: u64,
    addrs: SmallVec<[AddrEntry; 1]>,
    /// When every entry is stale and the peer is forgotten.
    forget_at: Instant,
}

impl PeerEntry {
    /// Whether the expiry entry `(at, hash)` is this peer's current one.
    fn expires(&self, at: Instant, hash: u64) -> bool {
        self.hash == hash && self.forget_at == at
    }
}

/// Per (peer, address) dial backoff; see the [module docs](self).
///
/// **When to call again:** after any command or input, sleep until
/// [`Backoff::poll_timeout`] and then call [`Backoff::handle_timeout`]
/// (spurious calls are harmless).
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    hasher: Hasher,
    peers: HashTable<PeerEntry>,
    /// (forget_at, hash of the peer) for every peer in `peers`, lazily
    /// deleted: an entry counts only while a peer with that hash has that
    /// `forget_at`. Naming peers by hash keeps entries at 16 bytes; two peers
    /// with the same hash and forget time are both found, one per entry.
    expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    /// `expiry` is scanned for stale entries when it grows past this.
    compact_at: usize,
    entries: usize,
}

/// Smallest expiry heap worth compacting.
const MIN_COMPACT: usize = 64;

impl Backoff {
    /// An empty table.
    pub fn new(config: BackoffConfig) -> Result<Self, BackoffConfigError> {
        config.validate()?;
        Ok(Backoff {
            config,
            hasher: Hasher::default(),
            peers: HashTable::new(),
            expiry: BinaryHeap::new(),
            compact_at: MIN_COMPACT,
            entries: 0,
        })
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Whether dials to `addr` of `peer` must wait (go-libp2p's `Backoff`).
    pub fn is_backed_off(&self, now: Instant, peer: &PeerId, addr: &Addr) -> bool {
        self.until(peer, addr).is_some_and(|until| now < until)
    }

    /// End of the current or last backoff of (peer, addr), if remembered.
    pub fn until(&self, peer: &PeerId, addr: &Addr) -> Option<Instant> {
        self.entry(peer, addr).map(|e| e.until)
    }

    /// Failures remembered for (peer, addr).
    pub fn tries(&self, peer: &PeerId, addr: &Addr) -> u32 {
        self.entry(peer, addr).map_or(0, |e| e.tries)
    }

    /// Number of (peer, address) entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of peers with at least one entry.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn entry(&self, peer: &PeerId, addr: &Addr) -> Option<&AddrEntry> {
        self.peer(peer)?
            .addrs
            .iter()
            .find(|e| e.addr.as_slice() == addr.as_bytes())
    }

    fn peer(&self, peer: &PeerId) -> Option<&PeerEntry> {
        self.peers
            .find(self.hasher.hash_one(peer), |e| e.peer == *peer)
    }

    // ---- inputs ----

    /// Forgets every peer whose entries are all stale at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, _))) = self.expiry.peek() {
            if at > now {
                break;
            }
            // The top is live: every change drops stale entries off it.
            self.forget_first();
        }
    }

    // ---- commands ----

    /// Records a failed dial of `addr` of `peer` at `now`; returns when its
    /// backoff ends (go-libp2p's `AddBackoff`).
    pub fn add(&mut self, now: Instant, peer: PeerId, addr: &Addr) -> Instant {
        let hash = self.hasher.hash_one(peer);
        let known = self.peers.find(hash, |e| e.peer == peer).is_some();
        if !known && self.peers.len() >= self.config.max_peers {
            // Forget the peer whose record would expire first.
            self.forget_first();
        }
        let config = self.config;
        let entry = self
            .peers
            .entry(hash, |e| e.peer == peer, |e| e.hash)
            .or_insert_with(|| PeerEntry {
                peer,
                hash,
                addrs: SmallVec::new(),
                forget_at: now,
            })
            .into_mut();
        let until = match entry
            .addrs
            .iter_mut()
            .find(|e| e.addr.as_slice() == addr.as_bytes())
        {
            Some(e) => {
                e.until = now + config.delay(e.tries);
                e.tries = e.tries.saturating_add(1);
                e.until
            }
            None => {
                if entry.addrs.len() >= config.max_addrs_per_peer {
                    if let Some(i) = (0..entry.addrs.len()).min_by_key(|&i| entry.addrs[i].until) {
                        entry.addrs.swap_remove(i);
                        self.entries -= 1;
                    }
                }
                let until = now + config.base;
                entry.addrs.push(AddrEntry {
                    addr: SmallVec::from_slice(addr.as_bytes()),
                    tries: 1,
                    until,
                });
                self.entries += 1;
                until
            }
        };
        // go's cleanup keeps an entry while now < until + delay(tries).
        let forget_at = entry
            .addrs
            .iter()
            .map(|e| e.until + config.delay(e.tries))
            .max()
            .unwrap_or(now);
        if !known || entry.forget_at != forget_at {
            entry.forget_at = forget_at;
            self.expiry.push(Reverse((forget_at, hash)));
            self.compact();
            self.drop_stale();
        }
        until
    }

    /// Forgets the entry of (`peer`, `addr`): a dial of that address worked.
    ///
    /// go-libp2p forgets every address of the peer once any connection to it
    /// exists; we forget only the address that proved to work, so a dead
    /// address of a live peer stays backed off instead of being re-dialed on
    /// every reconnect.
    pub fn clear(&mut self, peer: &PeerId, addr: &Addr) {
        let hash = self.hasher.hash_one(peer);
        let Ok(mut found) = self.peers.find_entry(hash, |e| e.peer == *peer) else {
            return;
        };
        let entry = found.get_mut();
        let Some(i) = entry
            .addrs
            .iter()
            .position(|e| e.addr.as_slice() == addr.as_bytes())
        else {
            return;
        };
        entry.addrs.swap_remove(i);
        self.entries -= 1;
        if entry.addrs.is_empty() {
            found.remove();
            self.drop_stale();
        }
        // Otherwise the peer's forget time may only get earlier; keeping the
        // later one just delays the clean-up of what is left.
    }

    /// Forgets every entry of `peer` (an explicit reset by the caller).
    pub fn clear_peer(&mut self, peer: &PeerId) {
        let hash = self.hasher.hash_one(peer);
        if let Ok(found) = self.peers.find_entry(hash, |e| e.peer == *peer) {
            let (e, _) = found.remove();
            self.entries -= e.addrs.len();
            self.drop_stale();
        }
    }

    // ---- internals ----

    /// Forgets the peer whose record expires first (the top of `expiry`,
    /// live by the invariant that stale entries never stay on top).
    fn forget_first(&mut self) {
        let Some(Reverse((at, hash))) = self.expiry.pop() else {
            return;
        };
        if let Ok(found) = self.peers.find_entry(hash, |e| e.expires(at, hash)) {
            let (e, _) = found.remove();
            self.entries -= e.addrs.len();
        }
        self.drop_stale();
    }

    /// Pops entries that no longer count off the top, so the top is live.
    fn drop_stale(&mut self) {
        while let Some(&Reverse((at, hash))) = self.expiry.peek() {
            if self.peers.find(hash, |e| e.expires(at, hash)).is_some() {
                break;
            }
            self.expiry.pop();
        }
    }

    /// Drops every stale entry once the heap has doubled since the last
    /// time (amortized O(1) per push).
    fn compact(&mut self) {
        if self.expiry.len() >= self.compact_at {
            let peers = &self.peers;
            self.expiry
                .retain(|&Reverse((at, hash))| peers.find(hash, |e| e.expires(at, hash)).is_some());
            self.compact_at = (self.expiry.len() * 2).max(MIN_COMPACT);
        }
    }

    // ---- outputs ----

    /// When the next record goes stale.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.peek().map(|&Reverse((at, _))| at)
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::dial::test_util::{addr, peer};
    use alloc::vec::Vec;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn growth_is_quadratic_and_capped() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let (p, a) = (peer(1), addr("/ip4/1.2.3.4/tcp/1"));
        let mut now = Instant::ZERO;
        let mut got = Vec::new();
        for _ in 0..22 {
            let until = b.add(now, p, &a);
            got.push((until - now).as_secs());
            assert!(b.is_backed_off(now, &p, &a));
            assert!(!b.is_backed_off(until, &p, &a));
            now = until;
        }
        // 5, then 5 + 1·k² for k = 1.., capped at 300 from k = 18 (5 + 324).
        let want: Vec<u64> = (0..22u64)
            .map(|k| if k == 0 { 5 } else { (5 + k * k).min(300) })
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[1..4], [6, 9, 14]);
        assert_eq!(b.tries(&p, &a), 22);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn entries_expire_by_the_machines_own_timeout() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let (p, a) = (peer(1), addr("/ip4/1.2.3.4/tcp/1"));
        b.add(Instant::ZERO, p, &a);
        // until 5 s, remembered until 5 + delay(1) = 11 s.
        assert_eq!(b.poll_timeout(), Some(Instant::ZERO + S(11)));
        b.handle_timeout(Instant::ZERO + S(10));
        assert_eq!(b.tries(&p, &a), 1);
        // A second failure within the window keeps growing.
        assert_eq!(b.add(Instant::ZERO + S(10), p, &a), Instant::ZERO + S(16));
        assert_eq!(b.poll_timeout(), Some(Instant::ZERO + S(16 + 9)));
        b.handle_timeout(Instant::ZERO + S(25));
        assert!(b.is_empty() && b.peer_count() == 0 && b.poll_timeout().is_none());
        // After forgetting, the next failure starts over at 5 s.
        assert_eq!(b.add(Instant::ZERO + S(30), p, &a), Instant::ZERO + S(35));
        // Spurious timeouts do nothing.
        b.handle_timeout(Instant::ZERO);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_peer_is_kept_until_its_last_entry_is_stale() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let p = peer(1);
        let (a1, a2) = (addr("/ip4/1.2.3.4/tcp/1"), addr("/ip4/1.2.3.4/tcp/2"));
        b.add(Instant::ZERO, p, &a1);
        b.add(Instant::ZERO + S(8), p, &a2);
        assert_eq!(b.poll_timeout(), Some(Instant::ZERO + S(19)));
        b.handle_timeout(Instant::ZERO + S(11));
        assert_eq!(b.len(), 2);
        b.handle_timeout(Instant::ZERO + S(19));
        assert!(b.is_empty());
    }

    #[test]
    fn success_clears_only_the_address_that_worked() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let p = peer(1);
        let (dead, live) = (addr("/ip4/1.2.3.4/tcp/1"), addr("/ip4/1.2.3.4/tcp/2"));
        b.add(Instant::ZERO, p, &dead);
        b.add(Instant::ZERO, p, &live);
        b.clear(&p, &live);
        assert!(b.is_backed_off(Instant::ZERO, &p, &dead));
        assert!(!b.is_backed_off(Instant::ZERO, &p, &live));
        assert_eq!(b.len(), 1);
        b.clear(&p, &dead);
        assert!(b.is_empty() && b.peer_count() == 0 && b.poll_timeout().is_none());
        // Clearing what is not there is harmless.
        b.clear(&p, &dead);
    }

    #[test]
    fn clear_peer_forgets_every_address() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let a = addr("/ip4/1.2.3.4/tcp/1");
        b.add(Instant::ZERO, peer(1), &a);
        b.add(Instant::ZERO, peer(2), &a);
        b.clear_peer(&peer(1));
        assert!(!b.is_backed_off(Instant::ZERO, &peer(1), &a));
        assert!(b.is_backed_off(Instant::ZERO, &peer(2), &a));
        assert_eq!((b.len(), b.peer_count()), (1, 1));
        b.clear_peer(&peer(1));
        b.handle_timeout(Instant::ZERO + S(11));
        assert!(b.is_empty() && b.poll_timeout().is_none());
    }

    #[test]
    fn tables_are_bounded() {
        let mut config = BackoffConfig::default();
        config.max_peers = 3;
        config.max_addrs_per_peer = 2;
        let mut b = Backoff::new(config).unwrap();
        let a: Vec<Addr> = (1..=3)
            .map(|i| addr(&std::format!("/ip4/1.2.3.4/tcp/{i}")))
            .collect();
        for i in 0..3 {
            b.add(Instant::ZERO + S(i), peer(1), &a[i as usize]);
        }
        assert_eq!(
            b.len(),
            2,
            "the address whose backoff ends first is forgotten"
        );
        assert_eq!(b.tries(&peer(1), &a[0]), 0);
        for n in 2..=5 {
            b.add(Instant::ZERO + S(10 + n), peer(n), &a[0]);
        }
        assert_eq!(b.peer_count(), 3);
        assert_eq!(
            b.tries(&peer(1), &a[1]),
            0,
            "the peer expiring first is forgotten"
        );
        assert_eq!(b.tries(&peer(5), &a[0]), 1);
    }

    #[test]
    fn churn_leaves_no_pile_of_stale_expiry_entries() {
        let mut b = Backoff::new(BackoffConfig::default()).unwrap();
        let a: Vec<Addr> = (1..=4)
            .map(|i| addr(&std::format!("/ip4/1.2.3.4/tcp/{i}")))
            .collect();
        // Every add moves a peer's forget time; clears drop peers early.
        let mut now = Instant::ZERO;
        for round in 0..20_000u64 {
            now += Duration::from_millis(10);
            let p = peer(round % 8);
            b.add(now, p, &a[(round % 4) as usize]);
            if round % 3 == 0 {
                b.clear(&p, &a[(round % 4) as usize]);
            }
            assert!(b.expiry.len() <= 2 * b.peer_count().max(MIN_COMPACT) + 1);
        }
        // The machine's own timeout still forgets everything, in order.
        let mut last = now;
        while let Some(at) = b.poll_timeout() {
            assert!(at >= last);
            last = at;
            b.handle_timeout(at);
        }
        assert!(b.is_empty() && b.peer_count() == 0);
    }

    #[test]
    fn config_validation() {
        let mut c = BackoffConfig::default();
        c.base = S(600);
        assert_eq!(
            Backoff::new(c).unwrap_err(),
            BackoffConfigError::BaseAboveMax
        );
        let mut c = BackoffConfig::default();
        c.max_peers = 0;
        assert_eq!(c.validate(), Err(BackoffConfigError::ZeroLimit));
        assert_eq!(BackoffConfig::default().delay(u32::MAX), S(300));
    }
}
