//! Unit tests of the peer store on a virtual clock.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use rand_core::SeedableRng as _;

use super::*;
use crate::Keypair;

const SEC: Duration = Duration::from_secs(1);
const T0: Instant = Instant::ZERO;

fn peer(n: u8) -> PeerId {
    Keypair::from_secret_bytes([n; 32]).peer_id()
}

/// `/ip4/10.0.<n>/tcp/4001` (distinct per `n`).
fn addr(n: u16) -> Vec<u8> {
    let [hi, lo] = n.to_be_bytes();
    vec![0x04, 10, 0, hi, lo, 0x06, 0x0f, 0xa1]
}

fn store(config: PeerStoreConfig) -> PeerStore {
    PeerStore::new(T0, config).unwrap()
}

fn events(s: &mut PeerStore) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn addrs(s: &PeerStore, p: &PeerId) -> Vec<Vec<u8>> {
    s.addrs(p).map(<[u8]>::to_vec).collect()
}

fn expiry(s: &PeerStore, p: &PeerId, a: &[u8]) -> Option<Expiry> {
    s.addrs_with_expiry(p)
        .find(|(x, _)| *x == a)
        .map(|(_, e)| e)
}

fn at(d: Duration) -> Expiry {
    Expiry::At(T0 + d)
}

fn protos(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}

// ------------------------------------------------------------------ config

#[test]
fn config_defaults_and_errors() {
    let c = PeerStoreConfig::default();
    assert_eq!(c.max_addrs_per_peer, 64);
    assert_eq!(c.recently_connected_ttl, Duration::from_secs(900));
    assert_eq!(c.latency_alpha, 0.1);
    assert_eq!(c.max_protocols, 128);
    for bad in [
        PeerStoreConfig {
            max_peers: 0,
            ..c.clone()
        },
        PeerStoreConfig {
            max_addrs_per_peer: 0,
            ..c.clone()
        },
        PeerStoreConfig {
            max_addr_len: 0,
            ..c.clone()
        },
    ] {
        assert_eq!(
            PeerStore::new(T0, bad).unwrap_err(),
            PeerStoreConfigError::ZeroBound
        );
    }
    for alpha in [0.0, -0.5, 1.5, f64::NAN] {
        let bad = PeerStoreConfig {
            latency_alpha: alpha,
            ..c.clone()
        };
        assert_eq!(
            PeerStore::new(T0, bad).unwrap_err(),
            PeerStoreConfigError::LatencyAlpha
        );
    }
    assert!(PeerStore::new(
        T0,
        PeerStoreConfig {
            latency_alpha: 1.0,
            ..c
        }
    )
    .is_ok());
}

// ------------------------------------------------------------------ TTLs

#[test]
fn add_addrs_extends_and_never_shortens() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(60 * SEC)).unwrap();
    assert_eq!(events(&mut s), vec![Event::PeerAdded { peer: p }]);
    // Shorter: unchanged.
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(10 * SEC)).unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(at(60 * SEC)));
    // Longer: extended.
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(90 * SEC)).unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(at(90 * SEC)));
    // The same TTL later is a later expiry: extended.
    s.add_addrs(T0 + 40 * SEC, p, &[addr(1)], Ttl::For(60 * SEC))
        .unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(at(100 * SEC)));
    // Permanent wins over any instant, and is never shortened.
    s.add_addrs(T0 + 40 * SEC, p, &[addr(1)], Ttl::Permanent)
        .unwrap();
    s.add_addrs(T0 + 40 * SEC, p, &[addr(1)], Ttl::For(SEC))
        .unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::Permanent));
    // Zero adds nothing (and creates no peer).
    s.add_addrs(T0 + 40 * SEC, p, &[addr(2)], Ttl::For(Duration::ZERO))
        .unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1)]);
    s.add_addrs(T0 + 40 * SEC, peer(2), &[addr(2)], Ttl::For(Duration::ZERO))
        .unwrap();
    assert!(!s.contains(&peer(2)));
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn set_addrs_overwrites_and_zero_removes() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.add_addrs(T0, p, &[addr(1), addr(2)], Ttl::Permanent)
        .unwrap();
    // Shorter: taken.
    s.set_addrs(T0, p, &[addr(1)], Ttl::For(10 * SEC)).unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(at(10 * SEC)));
    assert_eq!(expiry(&s, &p, &addr(2)), Some(Expiry::Permanent));
    assert_eq!(s.poll_timeout(), Some(T0 + 10 * SEC));
    // A new one through set_addrs.
    s.set_addrs(T0, p, &[addr(3)], Ttl::For(20 * SEC)).unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(2), addr(3)]);
    // Zero removes, the others stay, the timer follows.
    s.set_addrs(T0 + SEC, p, &[addr(1)], Ttl::For(Duration::ZERO))
        .unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(2), addr(3)]);
    assert_eq!(s.poll_timeout(), Some(T0 + 20 * SEC));
    events(&mut s);
    // Removing the last ones drops the peer.
    s.set_addrs(T0 + SEC, p, &[addr(2), addr(3)], Ttl::For(Duration::ZERO))
        .unwrap();
    assert!(!s.contains(&p));
    assert_eq!(events(&mut s), vec![Event::PeerDropped { peer: p }]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_p2p_suffix_is_stripped_and_bad_addresses_skipped() {
    let mut s = store(PeerStoreConfig {
        max_addr_len: 16,
        ..PeerStoreConfig::default()
    });
    let p = peer(1);
    let mut with_suffix = addr(1);
    with_suffix.extend_from_slice(&crate::relay::p2p_suffix(&p));
    s.add_addrs(T0, p, &[with_suffix, vec![], vec![4; 17]], Ttl::Permanent)
        .unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1)]);
    // Only bad addresses: no peer.
    s.add_addrs(T0, peer(2), &[vec![], vec![4; 17]], Ttl::Permanent)
        .unwrap();
    assert!(!s.contains(&peer(2)));
}

#[test]
fn expiry_through_handle_timeout_and_poll_timeout() {
    let mut s = store(PeerStoreConfig::default());
    let (a, b) = (peer(1), peer(2));
    s.add_addrs(T0, a, &[addr(1)], Ttl::For(30 * SEC)).unwrap();
    s.add_addrs(T0, a, &[addr(2)], Ttl::For(50 * SEC)).unwrap();
    s.add_addrs(T0, b, &[addr(3)], Ttl::For(40 * SEC)).unwrap();
    events(&mut s);
    assert_eq!(s.poll_timeout(), Some(T0 + 30 * SEC));
    // Early and spurious calls do nothing.
    s.handle_timeout(T0 + 29 * SEC);
    s.handle_timeout(T0 + 29 * SEC);
    assert_eq!(events(&mut s), vec![]);
    s.handle_timeout(T0 + 30 * SEC);
    assert_eq!(events(&mut s), vec![Event::AddrsExpired { peer: a }]);
    assert_eq!(addrs(&s, &a), vec![addr(2)]);
    assert_eq!(s.poll_timeout(), Some(T0 + 40 * SEC));
    // Both remaining expire at once on a late call; both peers go.
    s.handle_timeout(T0 + 100 * SEC);
    assert_eq!(
        events(&mut s),
        vec![
            Event::AddrsExpired { peer: b },
            Event::PeerDropped { peer: b },
            Event::AddrsExpired { peer: a },
            Event::PeerDropped { peer: a },
        ]
    );
    assert!(s.is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn any_input_expires_first_and_time_never_goes_back() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(10 * SEC)).unwrap();
    s.add_addrs(T0, p, &[addr(2)], Ttl::Permanent).unwrap();
    // Another peer's input at 10 s expires addr(1) before anything else.
    s.add_addrs(T0 + 10 * SEC, peer(2), &[addr(3)], Ttl::For(SEC))
        .unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(2)]);
    // An older `now` counts as the latest.
    s.add_addrs(T0, p, &[addr(4)], Ttl::For(5 * SEC)).unwrap();
    assert_eq!(expiry(&s, &p, &addr(4)), Some(at(15 * SEC)));
    assert!(s.poll_timeout().is_some_and(|t| t > s.now()));
}

// ------------------------------------------------------------------ connections

#[test]
fn connected_addrs_kept_while_connected_then_recently_connected_ttl() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(TEMP_ADDR_TTL))
        .unwrap();
    s.handle_connected(T0, p, Some(&addr(1))).unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::Connected));
    assert_eq!(s.poll_timeout(), None);
    // A second connection; identify's addresses are connected ones too.
    s.handle_connected(T0 + SEC, p, None).unwrap();
    s.handle_identified(T0 + SEC, p, &[], None, &[addr(2)], None)
        .unwrap();
    assert_eq!(expiry(&s, &p, &addr(2)), Some(Expiry::Connected));
    // An hour later, still there.
    s.handle_timeout(T0 + 3600 * SEC);
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(2)]);
    // One of two connections closes: nothing changes.
    s.handle_disconnected(T0 + 3600 * SEC, p);
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::Connected));
    // The last closes: recently_connected_ttl from then.
    let t = T0 + 3700 * SEC;
    s.handle_disconnected(t, p);
    assert!(!s.is_connected(&p));
    let until = t + RECENTLY_CONNECTED_ADDR_TTL;
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::At(until)));
    assert_eq!(expiry(&s, &p, &addr(2)), Some(Expiry::At(until)));
    assert_eq!(s.poll_timeout(), Some(until));
    assert_eq!(s.last_seen(&p), Some(t));
    events(&mut s);
    s.handle_timeout(until - Duration::from_nanos(1));
    assert_eq!(addrs(&s, &p).len(), 2);
    s.handle_timeout(until);
    assert_eq!(
        events(&mut s),
        vec![
            Event::AddrsExpired { peer: p },
            Event::PeerDropped { peer: p }
        ]
    );
    // A disconnection of an unknown peer, or one too many, is ignored.
    s.handle_disconnected(until, p);
    assert!(!s.contains(&p));
}

#[test]
fn permanent_addrs_survive_disconnection() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.add_addrs(T0, p, &[addr(1)], Ttl::Permanent).unwrap();
    s.handle_connected(T0, p, Some(&addr(1))).unwrap();
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::Permanent));
    s.handle_disconnected(T0 + SEC, p);
    assert_eq!(expiry(&s, &p, &addr(1)), Some(Expiry::Permanent));
}

#[test]
fn an_inbound_peer_without_addresses_goes_with_its_last_connection() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.handle_connected(T0, p, None).unwrap();
    s.record_latency(p, 5 * SEC);
    assert!(s.contains(&p));
    s.handle_disconnected(T0 + SEC, p);
    assert!(!s.contains(&p));
    assert_eq!(
        events(&mut s),
        vec![Event::PeerAdded { peer: p }, Event::PeerDropped { peer: p }]
    );
}

#[test]
fn zero_recently_connected_ttl_drops_connected_addrs_at_once() {
    let mut s = store(PeerStoreConfig {
        recently_connected_ttl: Duration::ZERO,
        ..PeerStoreConfig::default()
    });
    let p = peer(1);
    s.handle_connected(T0, p, Some(&addr(1))).unwrap();
    s.add_addrs(T0, p, &[addr(2)], Ttl::For(SEC)).unwrap();
    s.handle_disconnected(T0, p);
    assert_eq!(addrs(&s, &p), vec![addr(2)]);
}

// ------------------------------------------------------------------ identify

#[test]
fn identify_stores_bounded_metadata() {
    let mut s = store(PeerStoreConfig {
        max_protocols: 3,
        max_protocol_len: 8,
        max_agent_len: 5,
        ..PeerStoreConfig::default()
    });
    let key = Keypair::from_secret_bytes([1; 32]).public();
    let p = key.to_peer_id();
    s.handle_connected(T0, p, None).unwrap();
    let list = protos(&["/b", "", "/toolong/x", "/a", "/b", "/c", "/d"]);
    let pk = key.encode_protobuf();
    s.handle_identified(T0, p, &list, Some("aé€xyz"), &[], Some(&pk))
        .unwrap();
    // "", the too long one dropped; the first three valid kept (one a
    // duplicate), sorted.
    assert_eq!(s.protocols(&p).collect::<Vec<_>>(), ["/a", "/b"]);
    assert!(s.supports(&p, "/a") && !s.supports(&p, "/c"));
    // Cut at a character boundary: "aé" is 3 bytes, "€" 3 more.
    assert_eq!(s.agent(&p), Some("aé"));
    assert_eq!(s.public_key(&p), Some(&pk[..]));
    // Another identify replaces the protocols; no agent or key given
    // keeps the old ones.
    s.handle_identified(T0, p, &protos(&["/c"]), None, &[], None)
        .unwrap();
    assert_eq!(s.protocols(&p).collect::<Vec<_>>(), ["/c"]);
    assert_eq!(s.agent(&p), Some("aé"));
    assert_eq!(s.public_key(&p), Some(&pk[..]));
    // Names no peer lists any more leave the table.
    assert_eq!(s.names.len(), 1);
}

#[test]
fn identify_refuses_a_key_of_another_peer_or_too_long() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.handle_connected(T0, p, None).unwrap();
    let other = Keypair::from_secret_bytes([2; 32])
        .public()
        .encode_protobuf();
    s.handle_identified(T0, p, &[], None, &[], Some(&other))
        .unwrap();
    assert_eq!(s.public_key(&p), None);
    s.handle_identified(T0, p, &[], None, &[], Some(&[0; 300]))
        .unwrap();
    assert_eq!(s.public_key(&p), None);
    s.handle_identified(T0, p, &[], None, &[], Some(b"garbage"))
        .unwrap();
    assert_eq!(s.public_key(&p), None);
}

#[test]
fn identify_while_disconnected_uses_recently_connected_ttl() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    // Unknown and no address: not stored.
    s.handle_identified(T0, p, &protos(&["/a"]), Some("x"), &[], None)
        .unwrap();
    assert!(!s.contains(&p));
    assert!(s.names.is_empty());
    s.handle_identified(T0, p, &protos(&["/a"]), Some("x"), &[addr(1)], None)
        .unwrap();
    assert_eq!(
        expiry(&s, &p, &addr(1)),
        Some(at(RECENTLY_CONNECTED_ADDR_TTL))
    );
    assert!(s.supports(&p, "/a"));
}

#[test]
fn peers_supporting_and_shared_names() {
    let mut s = store(PeerStoreConfig::default());
    for n in 1..=4 {
        s.handle_connected(T0, peer(n), None).unwrap();
        let list = if n % 2 == 0 {
            protos(&["/even", "/all"])
        } else {
            protos(&["/all"])
        };
        s.handle_identified(T0, peer(n), &list, None, &[], None)
            .unwrap();
    }
    let even: BTreeSet<PeerId> = s.peers_supporting("/even").collect();
    assert_eq!(even, BTreeSet::from([peer(2), peer(4)]));
    assert_eq!(s.peers_supporting("/all").count(), 4);
    assert_eq!(s.peers_supporting("/none").count(), 0);
    assert_eq!(s.names.len(), 2);
    s.remove_peer(peer(2));
    s.handle_disconnected(T0, peer(4));
    assert_eq!(s.names.len(), 1, "/even is listed by nobody");
}

// ------------------------------------------------------------------ latency

#[test]
fn latency_is_go_s_ewma() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.record_latency(p, 100 * SEC);
    assert_eq!(s.latency(&p), None, "unknown peers are ignored");
    s.handle_connected(T0, p, None).unwrap();
    let ms = Duration::from_millis;
    s.record_latency(p, ms(100));
    assert_eq!(s.latency(&p), Some(ms(100)));
    s.record_latency(p, ms(200));
    assert_eq!(s.latency(&p), Some(ms(110)));
    s.record_latency(p, ms(10));
    assert_eq!(s.latency(&p), Some(ms(100)));
    // Huge values saturate instead of panicking.
    s.record_latency(p, Duration::MAX);
    s.record_latency(p, Duration::MAX);
    assert!(s.latency(&p).is_some());
    let mut s = store(PeerStoreConfig {
        latency_alpha: 1.0,
        ..PeerStoreConfig::default()
    });
    s.handle_connected(T0, p, None).unwrap();
    s.record_latency(p, ms(100));
    s.record_latency(p, ms(7));
    assert_eq!(s.latency(&p), Some(ms(7)));
}

// ------------------------------------------------------------------ eviction

fn small(max_peers: usize) -> PeerStore {
    store(PeerStoreConfig {
        max_peers,
        ..PeerStoreConfig::default()
    })
}

#[test]
fn eviction_takes_the_least_recently_seen_idle_peer() {
    let mut s = small(3);
    s.add_addrs(T0, peer(1), &[addr(1)], Ttl::Permanent)
        .unwrap();
    s.add_addrs(T0 + SEC, peer(2), &[addr(2)], Ttl::Permanent)
        .unwrap();
    s.add_addrs(T0 + 2 * SEC, peer(3), &[addr(3)], Ttl::Permanent)
        .unwrap();
    // Peer 1 was met (connected and gone): seen at 3 s.
    s.handle_connected(T0 + 3 * SEC, peer(1), None).unwrap();
    s.handle_disconnected(T0 + 3 * SEC, peer(1));
    // Gossip about peer 2 does not refresh it.
    s.add_addrs(T0 + 4 * SEC, peer(2), &[addr(9)], Ttl::Permanent)
        .unwrap();
    events(&mut s);
    s.add_addrs(T0 + 5 * SEC, peer(4), &[addr(4)], Ttl::Permanent)
        .unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::PeerEvicted { peer: peer(2) },
            Event::PeerAdded { peer: peer(4) }
        ]
    );
    s.add_addrs(T0 + 5 * SEC, peer(5), &[addr(5)], Ttl::Permanent)
        .unwrap();
    assert!(!s.contains(&peer(3)));
    s.add_addrs(T0 + 5 * SEC, peer(6), &[addr(6)], Ttl::Permanent)
        .unwrap();
    assert!(!s.contains(&peer(1)));
    assert_eq!(s.len(), 3);
}

#[test]
fn eviction_ties_go_to_the_smaller_peer_id() {
    let mut s = small(2);
    let (a, b) = (peer(1), peer(2));
    s.add_addrs(T0, a, &[addr(1)], Ttl::Permanent).unwrap();
    s.add_addrs(T0, b, &[addr(2)], Ttl::Permanent).unwrap();
    let smaller = a.min(b);
    s.add_addrs(T0, peer(3), &[addr(3)], Ttl::Permanent)
        .unwrap();
    assert!(!s.contains(&smaller));
    assert!(s.contains(&a.max(b)));
}

#[test]
fn connected_and_protected_peers_are_never_evicted_and_a_full_store_refuses() {
    let mut s = small(3);
    s.handle_connected(T0, peer(1), None).unwrap();
    s.protect(peer(2)).unwrap();
    s.add_addrs(T0, peer(3), &[addr(3)], Ttl::Permanent)
        .unwrap();
    assert!(s.is_protected(&peer(2)));
    // Peer 3 is the only evictable one.
    s.handle_connected(T0 + SEC, peer(4), None).unwrap();
    assert!(!s.contains(&peer(3)));
    events(&mut s);
    // Now all are connected or protected: refused, counted, nothing lost.
    assert_eq!(
        s.add_addrs(T0 + SEC, peer(5), &[addr(5)], Ttl::Permanent),
        Err(StoreFull)
    );
    assert_eq!(s.handle_connected(T0 + SEC, peer(6), None), Err(StoreFull));
    assert_eq!(s.protect(peer(7)), Err(StoreFull));
    assert_eq!(
        s.handle_identified(T0 + SEC, peer(8), &[], None, &[addr(8)], None),
        Err(StoreFull)
    );
    assert_eq!(s.refused(), 4);
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.len(), 3);
    // A known peer is still served.
    s.add_addrs(T0 + SEC, peer(1), &[addr(1)], Ttl::Permanent)
        .unwrap();
    // Unprotected, peer 2 (nothing else keeps it) is dropped: room again.
    s.unprotect(peer(2));
    assert_eq!(events(&mut s), vec![Event::PeerDropped { peer: peer(2) }]);
    s.add_addrs(T0 + SEC, peer(5), &[addr(5)], Ttl::Permanent)
        .unwrap();
    // Once disconnected, peer 1 can be evicted; peer 4 (no address) goes.
    s.handle_disconnected(T0 + 2 * SEC, peer(1));
    assert!(s.contains(&peer(1)), "its permanent address keeps it");
    s.handle_disconnected(T0 + 2 * SEC, peer(4));
    assert!(!s.contains(&peer(4)));
    events(&mut s);
    s.add_addrs(T0 + 2 * SEC, peer(6), &[addr(6)], Ttl::Permanent)
        .unwrap();
    // Peer 5 (seen at 1 s) before peer 1 and 6 (2 s).
    s.add_addrs(T0 + 3 * SEC, peer(7), &[addr(7)], Ttl::Permanent)
        .unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::PeerAdded { peer: peer(6) },
            Event::PeerEvicted { peer: peer(5) },
            Event::PeerAdded { peer: peer(7) },
        ]
    );
    assert_eq!(s.len(), 3);
}

#[test]
fn a_protected_peer_without_addresses_stays() {
    let mut s = store(PeerStoreConfig::default());
    let p = peer(1);
    s.protect(p).unwrap();
    s.add_addrs(T0, p, &[addr(1)], Ttl::For(SEC)).unwrap();
    s.handle_timeout(T0 + SEC);
    assert!(s.contains(&p));
    assert_eq!(addrs(&s, &p), Vec::<Vec<u8>>::new());
    assert!(s.remove_peer(p));
    assert!(!s.remove_peer(p));
    assert_eq!(s.poll_timeout(), None);
}

// ------------------------------------------------------------------ address bounds

#[test]
fn address_overflow_drops_the_soonest_expiring_never_a_connected_one() {
    let mut s = store(PeerStoreConfig {
        max_addrs_per_peer: 3,
        ..PeerStoreConfig::default()
    });
    let p = peer(1);
    s.handle_connected(T0, p, Some(&addr(1))).unwrap();
    s.add_addrs(T0, p, &[addr(2)], Ttl::For(50 * SEC)).unwrap();
    s.add_addrs(T0, p, &[addr(3)], Ttl::For(20 * SEC)).unwrap();
    // Full: the soonest (addr 3) makes room for a longer one.
    s.add_addrs(T0, p, &[addr(4)], Ttl::For(30 * SEC)).unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(2), addr(4)]);
    // A shorter one than all evictable ones is dropped and counted.
    s.add_addrs(T0, p, &[addr(5)], Ttl::For(10 * SEC)).unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(2), addr(4)]);
    assert_eq!(s.addrs_dropped(), 1);
    // Permanent ones push out finite ones; the connected one stays.
    s.add_addrs(T0, p, &[addr(6), addr(7), addr(8)], Ttl::Permanent)
        .unwrap();
    // (8 replaced 6: among equals, the older goes.)
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(7), addr(8)]);
    assert_eq!(s.addrs_dropped(), 1);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn all_connected_addrs_refuse_more() {
    let mut s = store(PeerStoreConfig {
        max_addrs_per_peer: 2,
        ..PeerStoreConfig::default()
    });
    let p = peer(1);
    s.handle_connected(T0, p, Some(&addr(1))).unwrap();
    s.handle_connected(T0, p, Some(&addr(2))).unwrap();
    s.handle_connected(T0, p, Some(&addr(3))).unwrap();
    s.add_addrs(T0, p, &[addr(4)], Ttl::Permanent).unwrap();
    assert_eq!(addrs(&s, &p), vec![addr(1), addr(2)]);
    assert_eq!(s.addrs_dropped(), 2);
    assert_eq!(s.connections(&p), 3);
}

// ------------------------------------------------------------------ random peers

#[test]
fn random_peers_are_deterministic_distinct_and_filtered() {
    let mut s = store(PeerStoreConfig::default());
    for n in 1..=20 {
        s.add_addrs(T0, peer(n), &[addr(u16::from(n))], Ttl::Permanent)
            .unwrap();
    }
    s.handle_connected(T0, peer(1), None).unwrap();
    let rng = |seed| rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
    let pick = |s: &PeerStore, n, seed| s.random_peers(n, &mut rng(seed), |p| !s.is_connected(p));
    let a = pick(&s, 5, 1);
    assert_eq!(a, pick(&s, 5, 1), "same seed, same answer");
    assert_eq!(a.len(), 5);
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 5, "distinct");
    assert!(!a.contains(&peer(1)), "filtered");
    assert_ne!(a, pick(&s, 5, 2));
    // More than there are: all of them, once each, in some order.
    let all = pick(&s, 100, 3);
    assert_eq!(all.len(), 19);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 19);
    assert!(pick(&s, 0, 3).is_empty());
    // Every peer gets picked over many draws (not stuck on the first n).
    let mut hit = BTreeSet::new();
    let mut r = rng(9);
    for _ in 0..200 {
        hit.extend(s.random_peers(2, &mut r, |_| true));
    }
    assert_eq!(hit.len(), 20);
}

// ------------------------------------------------------------------ memory

#[test]
fn memory_per_peer() {
    // A peer with 3 addresses (8 bytes each, like /ip4/../tcp/..), 10
    // protocols (shared names: only their pointers count per peer), an
    // agent of 20 bytes and an Ed25519 key (36 bytes).
    let entry = core::mem::size_of::<Entry>();
    let key = core::mem::size_of::<PeerId>();
    let addr_heap = 3 * (core::mem::size_of::<Addr>() + 8);
    let proto_heap = 10 * core::mem::size_of::<Arc<str>>();
    let per_peer = entry + key + addr_heap + proto_heap + 20 + 36;
    // Plus the timer and eviction set entries (Instant + PeerId each).
    let indexes = 2 * (core::mem::size_of::<Instant>() + key);
    let total = per_peer + indexes;
    // Keep the store lean: under 1 KiB a peer before allocator and B-tree
    // overhead (about 10 MB for 10 000 peers).
    assert!(
        total < 1024,
        "{entry} {key} {addr_heap} {proto_heap} {total}"
    );
    #[cfg(feature = "std")]
    {
        extern crate std;
        std::println!(
            "Entry {entry} B, PeerId {key} B, 3 addrs {addr_heap} B, 10 protocols {proto_heap} B, indexes {indexes} B: {total} B a peer"
        );
    }
}
