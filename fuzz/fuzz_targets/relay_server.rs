//! The relay server's policy (`relay::server::Server`) under a small
//! arbitrary `ServerConfig`, fed an arbitrary sequence of RESERVEs,
//! CONNECTs, circuit closes, disconnects and timeouts at monotone times,
//! among six peers and three IPs (or none). A reference model kept here —
//! reservations with their IP and expiry, circuits with their ends, and the
//! token buckets while no eviction can have happened — predicts every
//! answer. Checked:
//!
//! - never a panic;
//! - the tables stay within the config: reservations, reservations per IP,
//!   circuits, circuit slots per peer (a circuit takes one of its source's
//!   and one of its target's, so a self-circuit takes two), and the rate
//!   limiter's entries (at most `max(1, max_rate_entries)` per limiter);
//! - every answer is the model's: the status of a refusal, and whether a
//!   RESERVE passes the rate limit as long as the model's buckets are exact
//!   (no key beyond a limiter's capacity seen yet: eviction is then free to
//!   pick among equals, and either answer is allowed);
//! - a refresh from the same IP in the second half of its reservation's
//!   lifetime is granted without a token;
//! - the grant: `renewed` iff the peer held one, expiry `ttl` after now in
//!   unix time, a voucher signed by the relay for that peer, the limit;
//! - the events are the model's, and `has_reservation` agrees for every
//!   peer, `circuits()` with the model's count;
//! - `poll_timeout` is the earliest model expiry, so after `handle_timeout`
//!   it is never at or before that instant.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::relay::server::{CircuitId, Server, ServerEvent};
use sansp2p::relay::{verify_voucher, ServerConfig, Status, WallClock};
use sansp2p::{Instant, Keypair, PeerId};

#[derive(Debug, Arbitrary)]
struct Config {
    ttl: u16,
    max_reservations: u8,
    per_ip: u8,
    max_circuits: u8,
    per_peer: u8,
    /// (burst, interval in seconds) for peers, then for IPs.
    rates: [(u8, u16); 2],
    rate_entries: u8,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Reserve {
        peer: u8,
        ip: u8,
        relayed: bool,
    },
    Connect {
        src: u8,
        dst: u8,
        relayed: bool,
    },
    Close(u8),
    Disconnect(u8),
    /// Advance by this many 100 ms, then `handle_timeout`.
    Advance(u16),
}

const UNIX: u64 = 1_700_000_000;

fn peer(n: u8) -> PeerId {
    static PEERS: OnceLock<Vec<PeerId>> = OnceLock::new();
    let peers = PEERS.get_or_init(|| {
        (1..=6)
            .map(|n| Keypair::from_secret_bytes([n; 32]).peer_id())
            .collect()
    });
    peers[n as usize % peers.len()]
}

fn ip(n: u8) -> Option<IpAddr> {
    (n % 4 != 3).then(|| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n % 4)))
}

/// A token bucket per key, exact while no key had to be forgotten.
struct Rate<K> {
    burst: u32,
    interval: Duration,
    cap: usize,
    buckets: HashMap<K, (u32, Instant)>,
    exact: bool,
}

impl<K: std::hash::Hash + Eq> Rate<K> {
    fn new((burst, secs): (u8, u16), cap: usize) -> Self {
        let (burst, interval) = (u32::from(burst % 4), Duration::from_secs(u64::from(secs)));
        let buckets = HashMap::new();
        Rate {
            burst,
            interval,
            cap: cap.max(1),
            buckets,
            exact: true,
        }
    }

    /// Whether a token is there (`None`: the model cannot tell); takes it.
    fn take(&mut self, now: Instant, key: K) -> Option<bool> {
        if self.burst == 0 || self.interval.is_zero() {
            return Some(true);
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cap {
            self.exact = false;
        }
        let (tokens, since) = self.buckets.entry(key).or_insert((self.burst, now));
        let gained = (now - *since).as_nanos() / self.interval.as_nanos();
        *tokens = self
            .burst
            .min(*tokens + gained.min(u128::from(self.burst)) as u32);
        *since = if *tokens == self.burst {
            now
        } else {
            *since + self.interval * gained as u32
        };
        let ok = *tokens > 0;
        *tokens -= u32::from(ok);
        self.exact.then_some(ok)
    }
}

/// The slots of `p` the live circuits take.
fn slots(circuits: &[(CircuitId, PeerId, PeerId)], p: PeerId) -> usize {
    circuits
        .iter()
        .map(|&(_, s, d)| usize::from(s == p) + usize::from(d == p))
        .sum()
}

/// The model's rate verdict on a RESERVE that passed the other checks,
/// peer first and the IP only if the peer passed; `None` when the model
/// cannot tell (`granted` is the server's answer, to keep the model going).
fn rate_ok(
    (peers, ips): (&mut Rate<PeerId>, &mut Rate<IpAddr>),
    now: Instant,
    (p, ip): (PeerId, Option<IpAddr>),
    granted: bool,
) -> Option<bool> {
    let by_peer = peers.take(now, p);
    let Some(ip) = ip else { return by_peer };
    match by_peer {
        Some(false) => Some(false),
        Some(true) => ips.take(now, ip),
        // Granted: the IP passed too, unless the model knows it had none.
        None if granted => ips.take(now, ip).filter(|ok| !ok),
        // Refused by the peer or the IP: the IP's count is unknown now.
        None => {
            ips.exact = false;
            None
        }
    }
}

fuzz_target!(|input: (Config, Vec<Op>)| {
    let (c, ops) = input;
    let mut config = ServerConfig::default();
    config.reservation_ttl = Duration::from_secs(u64::from(c.ttl % 600));
    config.max_reservations = usize::from(c.max_reservations % 8);
    config.max_reservations_per_ip = usize::from(c.per_ip % 4);
    config.max_circuits = usize::from(c.max_circuits % 8);
    config.max_circuits_per_peer = usize::from(c.per_peer % 4);
    config.max_rate_entries = usize::from(c.rate_entries % 8);
    let mut peer_rate = Rate::new(c.rates[0], config.max_rate_entries);
    let mut ip_rate = Rate::new(c.rates[1], config.max_rate_entries);
    (
        config.reserve_burst_per_peer,
        config.reserve_interval_per_peer,
    ) = (peer_rate.burst, peer_rate.interval);
    (config.reserve_burst_per_ip, config.reserve_interval_per_ip) =
        (ip_rate.burst, ip_rate.interval);

    let start = Instant::from_duration(Duration::from_secs(1));
    let mut now = start;
    let relay = Keypair::from_secret_bytes([100; 32]);
    let clock = WallClock::new(now, Duration::from_secs(UNIX));
    let mut server = Server::new(now, relay.clone(), clock, config.clone());
    // The model: reservations (expiry, IP), live circuits, ids handed out.
    let mut reserved: HashMap<PeerId, (Instant, Option<IpAddr>)> = HashMap::new();
    let mut circuits: Vec<(CircuitId, PeerId, PeerId)> = Vec::new();
    let mut ids: Vec<CircuitId> = Vec::new();
    for op in ops.into_iter().take(200) {
        let mut want: Vec<ServerEvent> = Vec::new();
        match op {
            Op::Reserve {
                peer: p,
                ip: i,
                relayed,
            } => {
                let (p, ip) = (peer(p), ip(i));
                let renewed = reserved.contains_key(&p);
                let same_ip = renewed && reserved[&p].1 == ip;
                let on_ip = |ip| reserved.values().filter(|r| r.1 == Some(ip)).count();
                let ip_full =
                    ip.is_some_and(|ip| !same_ip && on_ip(ip) >= config.max_reservations_per_ip);
                // A refresh from the same IP in the second half of its
                // reservation's lifetime is not charged.
                let half = config.reservation_ttl / 2;
                let free = same_ip && now + half >= reserved[&p].0;
                let got = server.handle_reserve(now, p, ip, relayed);
                let status = if relayed {
                    Some(Status::PermissionDenied)
                } else if !renewed && reserved.len() >= config.max_reservations || ip_full {
                    Some(Status::ReservationRefused)
                } else if free {
                    None
                } else {
                    let rates = (&mut peer_rate, &mut ip_rate);
                    match rate_ok(rates, now, (p, ip), got.is_ok()) {
                        Some(true) => None,
                        Some(false) => Some(Status::ResourceLimitExceeded),
                        // Either answer, but only these two.
                        None => got.is_err().then_some(Status::ResourceLimitExceeded),
                    }
                };
                match (status, got) {
                    (None, Ok(grant)) => {
                        assert_eq!(grant.renewed, renewed);
                        let ttl = config.reservation_ttl;
                        let expire = UNIX + (now - start + ttl).as_secs();
                        assert_eq!(grant.reservation.expire, expire);
                        let v = grant.reservation.voucher.expect("a voucher");
                        let voucher = verify_voucher(&v, &relay.peer_id(), &p).unwrap();
                        assert_eq!(voucher.expiration, expire);
                        assert_eq!(grant.limit, server.circuit_limit().map(Into::into));
                        reserved.insert(p, (now.saturating_add(ttl), ip));
                        want.push(ServerEvent::Reserved { peer: p, renewed });
                    }
                    (Some(s), Err(got)) if s == got => {
                        want.push(ServerEvent::ReserveRefused { peer: p, status: s });
                    }
                    (status, got) => panic!("the model says {status:?}, the server {got:?}"),
                }
            }
            Op::Connect { src, dst, relayed } => {
                let (src, dst) = (peer(src), peer(dst));
                // Whether `p`'s slots, with this circuit's, stay in bounds.
                let fits = |p| {
                    let new = usize::from(src == p) + usize::from(dst == p);
                    slots(&circuits, p) + new <= config.max_circuits_per_peer
                };
                let expect = if relayed {
                    Err(Status::PermissionDenied)
                } else if !reserved.contains_key(&dst) {
                    Err(Status::NoReservation)
                } else if circuits.len() >= config.max_circuits || !fits(src) || !fits(dst) {
                    Err(Status::ResourceLimitExceeded)
                } else {
                    Ok(())
                };
                let got = server.handle_connect(now, src, dst, relayed);
                assert_eq!(got.map(drop), expect, "connect {src} -> {dst}");
                match got {
                    Ok(id) => {
                        assert!(!ids.contains(&id), "a circuit id handed out twice");
                        ids.push(id);
                        circuits.push((id, src, dst));
                    }
                    Err(status) => want.push(ServerEvent::ConnectRefused { src, dst, status }),
                }
            }
            Op::Close(n) => {
                // Mostly a live circuit; sometimes one closed already.
                if n % 4 == 0 && !ids.is_empty() {
                    let id = ids[n as usize / 4 % ids.len()];
                    server.handle_circuit_closed(id);
                    circuits.retain(|c| c.0 != id);
                } else if !circuits.is_empty() {
                    let (id, ..) = circuits.remove(n as usize % circuits.len());
                    server.handle_circuit_closed(id);
                }
            }
            Op::Disconnect(p) => {
                let p = peer(p);
                server.handle_peer_disconnected(&p);
                if reserved.remove(&p).is_some() {
                    want.push(ServerEvent::ReservationEnded {
                        peer: p,
                        expired: false,
                    });
                }
            }
            Op::Advance(ticks) => {
                now += Duration::from_millis(100 * u64::from(ticks));
                server.handle_timeout(now);
                let mut due: Vec<(Instant, PeerId)> = reserved
                    .iter()
                    .filter(|r| r.1 .0 <= now)
                    .map(|(p, r)| (r.0, *p))
                    .collect();
                due.sort();
                for (_, p) in due {
                    reserved.remove(&p);
                    want.push(ServerEvent::ReservationEnded {
                        peer: p,
                        expired: true,
                    });
                }
                assert!(
                    server.poll_timeout().is_none_or(|t| t > now),
                    "work left due"
                );
            }
        }
        let events: Vec<ServerEvent> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(events, want, "the events");
        check(&server, &config, &reserved, &circuits);
    }
});

fn check(
    server: &Server,
    config: &ServerConfig,
    reserved: &HashMap<PeerId, (Instant, Option<IpAddr>)>,
    circuits: &[(CircuitId, PeerId, PeerId)],
) {
    assert_eq!(server.reservations(), reserved.len());
    assert!(server.reservations() <= config.max_reservations);
    for ip in (0..3).filter_map(ip) {
        let held = reserved.values().filter(|r| r.1 == Some(ip)).count();
        assert_eq!(
            server.reservations_from(&ip),
            held,
            "reservations from {ip}"
        );
        assert!(held <= config.max_reservations_per_ip);
    }
    for p in (0..6).map(peer) {
        assert_eq!(server.has_reservation(&p), reserved.contains_key(&p));
        assert!(slots(circuits, p) <= config.max_circuits_per_peer);
    }
    assert_eq!(server.circuits(), circuits.len());
    assert!(server.circuits() <= config.max_circuits);
    for &(id, s, d) in circuits {
        assert_eq!(server.circuit_ends(id), Some((s, d)));
    }
    assert!(server.rate_entries() <= 2 * config.max_rate_entries.max(1));
    let next = reserved.values().map(|r| r.0).min();
    assert_eq!(server.poll_timeout(), next, "the next expiry");
}
