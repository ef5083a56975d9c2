//! Dial ranking: how long after the start of a peer dial each address is
//! tried.
//!
//! Follows go-libp2p's `DefaultDialRanker` (`p2p/net/swarm/dial_ranker.go`)
//! and `filterLowPriorityAddresses` (`swarm_dial.go`):
//!
//! 1. Low-priority filter: drop `/quic` (draft-29) and `/webtransport` when a
//!    `/quic-v1` address has the same ip:port; drop `/ws` and `/wss` when a
//!    plain `/tcp` address has the same ip:port.
//! 2. Groups: relay (`/p2p-circuit`), private (loopback, RFC 1918, …), public
//!    (any other address with an `/ip4` or `/ip6`), rest (DNS names, onion,
//!    unix, …). Private and public are ranked from zero in parallel; relay
//!    addresses are shifted by [`RankerConfig::relay_delay`] when the peer has
//!    a public address; the rest come [`RankerConfig::public_other_delay`]
//!    after the last ranked address.
//! 3. Inside a group: sort by score (QUIC v1 < QUIC draft-29 < WebTransport <
//!    TCP < WebRTC direct < other; IPv6 before IPv4; low port first), move the
//!    first IPv4 QUIC address to second place when the first is IPv6 (happy
//!    eyeballs, RFC 8305), same inside the TCP block, then space the dials:
//!    QUIC 0, `quic`, then `2*quic` (happy eyeballs) or `quic`; TCP starts one
//!    `tcp` delay after the last QUIC dial and is spaced the same way; other
//!    transports come `other` after the last QUIC or TCP dial.
//!
//! Where go-libp2p's `sort.Slice` leaves equal scores in an unspecified order,
//! this sort is stable: equal scores keep the caller's order. DNS addresses
//! are not resolved here; like in go-libp2p (which resolves them before
//! ranking), an unresolved `/dns*` address falls into the "rest" group.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::dial::{rank, Addr, RankerConfig};
//!
//! // /ip4/1.2.3.4/udp/1/quic-v1 and /ip4/1.2.3.4/tcp/1
//! let quic = Addr::from_bytes(vec![0x04, 1, 2, 3, 4, 0x91, 0x02, 0, 1, 0xcd, 0x03]).unwrap();
//! let tcp = Addr::from_bytes(vec![0x04, 1, 2, 3, 4, 0x06, 0, 1]).unwrap();
//! let ranked = rank([tcp.clone(), quic.clone()], &RankerConfig::default());
//! assert_eq!(ranked, vec![(quic, Duration::ZERO), (tcp, Duration::from_millis(250))]);
//! ```

use alloc::vec::Vec;
use core::net::IpAddr;
use core::time::Duration;

use smallvec::SmallVec;

use super::{dedup_addrs, Addr};
use crate::addr::{self, Classifier, Component, Scope};

/// The delays of the default ranker (go-libp2p's constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RankerConfig {
    /// TCP after the last QUIC dial, and between TCP dials, public (250 ms).
    pub public_tcp_delay: Duration,
    /// The same for private addresses (30 ms).
    pub private_tcp_delay: Duration,
    /// Between QUIC dials, public (250 ms).
    pub public_quic_delay: Duration,
    /// Between QUIC dials, private (30 ms).
    pub private_quic_delay: Duration,
    /// Relay addresses after direct ones, when there is a public direct
    /// address (500 ms; rust-libp2p uses 250 ms).
    pub relay_delay: Duration,
    /// Other transports (WebRTC direct, bare IP, …) after the last QUIC or
    /// TCP dial, public; also the gap before the "rest" group (1 s).
    pub public_other_delay: Duration,
    /// The same for private addresses (100 ms).
    pub private_other_delay: Duration,
}

impl Default for RankerConfig {
    fn default() -> Self {
        RankerConfig {
            public_tcp_delay: Duration::from_millis(250),
            private_tcp_delay: Duration::from_millis(30),
            public_quic_delay: Duration::from_millis(250),
            private_quic_delay: Duration::from_millis(30),
            relay_delay: Duration::from_millis(500),
            public_other_delay: Duration::from_secs(1),
            private_other_delay: Duration::from_millis(100),
        }
    }
}

/// The longest delay a [`RankerConfig`] accepts.
pub const MAX_RANK_DELAY: Duration = Duration::from_secs(3600);

/// A [`RankerConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RankerConfigError {
    /// A delay above [`MAX_RANK_DELAY`] (named by field).
    #[error("ranker delay `{0}` is longer than one hour")]
    DelayTooLong(&'static str),
}

impl RankerConfig {
    /// Every delay zero: go-libp2p's `NoDelayDialRanker`, for hole punching
    /// (simultaneous connect) where all addresses are dialed at once.
    pub const NO_DELAY: RankerConfig = RankerConfig {
        public_tcp_delay: Duration::ZERO,
        private_tcp_delay: Duration::ZERO,
        public_quic_delay: Duration::ZERO,
        private_quic_delay: Duration::ZERO,
        relay_delay: Duration::ZERO,
        public_other_delay: Duration::ZERO,
        private_other_delay: Duration::ZERO,
    };

    /// Checks every delay is at most [`MAX_RANK_DELAY`].
    pub fn validate(&self) -> Result<(), RankerConfigError> {
        let fields = [
            ("public_tcp_delay", self.public_tcp_delay),
            ("private_tcp_delay", self.private_tcp_delay),
            ("public_quic_delay", self.public_quic_delay),
            ("private_quic_delay", self.private_quic_delay),
            ("relay_delay", self.relay_delay),
            ("public_other_delay", self.public_other_delay),
            ("private_other_delay", self.private_other_delay),
        ];
        for (name, d) in fields {
            if d > MAX_RANK_DELAY {
                return Err(RankerConfigError::DelayTooLong(name));
            }
        }
        Ok(())
    }
}

/// What ranking, limits, backoff and black-hole filtering need to know about
/// an address, read in one pass over its components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Features {
    pub relayed: bool,
    pub ip4: bool,
    pub ip6: bool,
    pub udp: bool,
    pub tcp: bool,
    pub unix: bool,
    pub quic: bool,
    pub quic_v1: bool,
    pub webtransport: bool,
    pub ws: bool,
    pub webrtc_direct: bool,
    /// `manet.IsPublicAddr`: the first host is public.
    pub public: bool,
    /// `manet.IsPrivateAddr`: the first host is private or loopback.
    pub private: bool,
    /// First `/udp` port (0 when none, as go's failed `Atoi`).
    pub udp_port: u16,
    /// First `/tcp` port.
    pub tcp_port: u16,
    /// The first component when it is an IP (`manet.ToIP`).
    pub first_ip: Option<IpAddr>,
}

impl Features {
    /// Reads the features of `a`.
    pub fn of(a: &Addr) -> Features {
        let mut f = Features::default();
        let mut classifier = Classifier::default();
        let mut first = true;
        let mut seen_udp = false;
        let mut seen_tcp = false;
        for c in addr::components(a.as_bytes()) {
            let Ok(c) = c else { break };
            classifier.push(c);
            match c {
                Component::Ip4(ip) => {
                    f.ip4 = true;
                    if first {
                        f.first_ip = Some(IpAddr::V4(ip));
                    }
                }
                Component::Ip6(ip) => {
                    f.ip6 = true;
                    if first {
                        f.first_ip = Some(IpAddr::V6(ip));
                    }
                }
                Component::Udp(p) => {
                    f.udp = true;
                    if !seen_udp {
                        f.udp_port = p;
                        seen_udp = true;
                    }
                }
                Component::Tcp(p) => {
                    f.tcp = true;
                    if !seen_tcp {
                        f.tcp_port = p;
                        seen_tcp = true;
                    }
                }
                Component::Quic => f.quic = true,
                Component::QuicV1 => f.quic_v1 = true,
                Component::WebTransport => f.webtransport = true,
                Component::Ws | Component::Wss => f.ws = true,
                Component::WebRtcDirect => f.webrtc_direct = true,
                Component::Circuit => f.relayed = true,
                Component::Unix => f.unix = true,
                _ => {}
            }
            first = false;
        }
        let info = classifier.finish();
        f.public = info.scope == Scope::Public;
        f.private = info.is_private();
        f
    }

    /// go-libp2p's `isQUICAddr` (true for WebTransport too: it runs on `/quic-v1`).
    pub fn is_quic(&self) -> bool {
        self.quic || self.quic_v1
    }

    /// Whether a dial takes a file-descriptor token (go-libp2p
    /// `shouldConsumeFd`: not relayed, and TCP or unix).
    pub fn uses_fd(&self) -> bool {
        !self.relayed && (self.tcp || self.unix)
    }

    /// go-libp2p's `score`: lower is dialed first.
    fn score(&self) -> u32 {
        let ip4 = if self.ip4 { 1 << 18 } else { 0 };
        let (udp, tcp) = (u32::from(self.udp_port), u32::from(self.tcp_port));
        if self.webtransport {
            ip4 + (1 << 19) + udp
        } else if self.quic {
            ip4 + udp + (1 << 17)
        } else if self.quic_v1 {
            ip4 + udp
        } else if self.tcp {
            ip4 + tcp + (1 << 20)
        } else if self.webrtc_direct {
            1 << 21
        } else {
            1 << 30
        }
    }
}

/// An address with its features, the unit the ranker works on.
pub(crate) type Entry = (Addr, Features);

/// Ranks `addrs` with `config`: removes duplicates, applies the
/// low-priority filter, then assigns each address its delay.
///
/// The result is in go-libp2p's order (private group, public group, relay
/// group, rest), not sorted by delay.
pub fn rank(addrs: impl IntoIterator<Item = Addr>, config: &RankerConfig) -> Vec<(Addr, Duration)> {
    let mut addrs: Vec<Addr> = addrs.into_iter().collect();
    dedup_addrs(&mut addrs);
    let mut entries: Vec<Entry> = addrs
        .into_iter()
        .map(|a| {
            let f = Features::of(&a);
            (a, f)
        })
        .collect();
    filter_low_priority_entries(&mut entries);
    rank_entries(entries, config)
        .into_iter()
        .map(|((a, _), d)| (a, d))
        .collect()
}

/// go-libp2p's `NoDelayDialRanker`: the same filter, every delay zero.
pub fn rank_no_delay(addrs: impl IntoIterator<Item = Addr>) -> Vec<(Addr, Duration)> {
    rank(addrs, &RankerConfig::NO_DELAY)
}

/// Removes addresses for which a better alternative exists on the same
/// ip:port (go-libp2p's `filterLowPriorityAddresses`), keeping the order.
pub fn filter_low_priority(addrs: &mut Vec<Addr>) {
    let mut entries: Vec<Entry> = addrs
        .drain(..)
        .map(|a| {
            let f = Features::of(&a);
            (a, f)
        })
        .collect();
    filter_low_priority_entries(&mut entries);
    addrs.extend(entries.into_iter().map(|(a, _)| a));
}

pub(crate) fn filter_low_priority_entries(entries: &mut Vec<Entry>) {
    let port = |f: &Features, udp: bool| {
        f.first_ip
            .map(|ip| (ip, if udp { f.udp_port } else { f.tcp_port }))
    };
    // Peers list a handful of addresses: linear scans beat hashing here.
    let mut quic_v1: SmallVec<[(IpAddr, u16); 8]> = SmallVec::new();
    let mut tcp: SmallVec<[(IpAddr, u16); 8]> = SmallVec::new();
    for (_, f) in entries.iter() {
        if f.webtransport {
        } else if f.quic_v1 && f.udp {
            quic_v1.extend(port(f, true));
        } else if f.ws {
        } else if f.tcp {
            tcp.extend(port(f, false));
        }
    }
    if quic_v1.is_empty() && tcp.is_empty() {
        return;
    }
    entries.retain(|(_, f)| {
        if f.webtransport || f.quic {
            !(f.udp && port(f, true).is_some_and(|k| quic_v1.contains(&k)))
        } else if f.ws {
            !(f.tcp && port(f, false).is_some_and(|k| tcp.contains(&k)))
        } else {
            true
        }
    });
}

/// Assigns delays to already filtered entries (go-libp2p's `DefaultDialRanker`).
pub(crate) fn rank_entries(entries: Vec<Entry>, cfg: &RankerConfig) -> Vec<(Entry, Duration)> {
    let mut relay = Vec::new();
    let mut private = Vec::new();
    let mut public = Vec::new();
    let mut rest = Vec::new();
    for e in entries {
        if e.1.relayed {
            relay.push(e);
        } else if e.1.private {
            private.push(e);
        } else if e.1.ip4 || e.1.ip6 {
            public.push(e);
        } else {
            rest.push(e);
        }
    }
    let relay_offset = if public.is_empty() {
        Duration::ZERO
    } else {
        cfg.relay_delay
    };
    let mut out = Vec::with_capacity(relay.len() + private.len() + public.len() + rest.len());
    let private_delays = GroupDelays {
        tcp: cfg.private_tcp_delay,
        quic: cfg.private_quic_delay,
        other: cfg.private_other_delay,
        offset: Duration::ZERO,
    };
    let public_delays = GroupDelays {
        tcp: cfg.public_tcp_delay,
        quic: cfg.public_quic_delay,
        other: cfg.public_other_delay,
        offset: Duration::ZERO,
    };
    rank_group(private, &private_delays, &mut out);
    rank_group(public, &public_delays, &mut out);
    rank_group(
        relay,
        &GroupDelays {
            offset: relay_offset,
            ..public_delays
        },
        &mut out,
    );
    // go-libp2p takes the delay of the *last* ranked address, not the largest.
    let last = out.last().map_or(Duration::ZERO, |(_, d)| *d);
    let rest_delay = last.saturating_add(cfg.public_other_delay);
    out.extend(rest.into_iter().map(|e| (e, rest_delay)));
    out
}

struct GroupDelays {
    tcp: Duration,
    quic: Duration,
    other: Duration,
    offset: Duration,
}

/// go-libp2p's `getAddrDelay` for one group.
fn rank_group(mut g: Vec<Entry>, d: &GroupDelays, out: &mut Vec<(Entry, Duration)>) {
    if g.is_empty() {
        return;
    }
    g.sort_by_key(|(_, f)| f.score());
    let n = g.len();
    let mut he_quic = false;
    let mut he_tcp = false;
    let mut i = 0;
    if g[0].1.is_quic() && g[0].1.ip6 {
        if let Some(j) = (1..n).find(|&j| g[j].1.is_quic() && g[j].1.ip4) {
            g[1..=j].rotate_right(1);
            he_quic = true;
            i = j + 1;
        }
    }
    let tcp_start = (i..n).find(|&k| g[k].1.tcp).unwrap_or(n);
    if tcp_start < n && g[tcp_start].1.ip6 {
        if let Some(j) = (tcp_start + 1..n).find(|&j| g[j].1.tcp && g[j].1.ip4) {
            g[tcp_start + 1..=j].rotate_right(1);
            he_tcp = true;
        }
    }
    let mut tcp_first = Duration::ZERO;
    let mut last = Duration::ZERO;
    for (i, e) in g.into_iter().enumerate() {
        let delay = if e.1.is_quic() {
            let delay = match i {
                0 => Duration::ZERO,
                1 => d.quic,
                _ if he_quic => d.quic.saturating_mul(2),
                _ => d.quic,
            };
            last = delay;
            tcp_first = delay.saturating_add(d.tcp);
            delay
        } else if e.1.tcp {
            let step = if i == tcp_start {
                Duration::ZERO
            } else if i == tcp_start + 1 {
                d.tcp
            } else if i > tcp_start + 1 && he_tcp {
                d.tcp.saturating_mul(2)
            } else {
                d.tcp
            };
            let delay = step.saturating_add(tcp_first);
            last = delay;
            delay
        } else {
            last.saturating_add(d.other)
        };
        out.push((e, d.offset.saturating_add(delay)));
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::dial::test_util::addr;
    use alloc::string::{String, ToString};
    use alloc::vec;
    use std::format;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Sorts by (delay, text) like go-libp2p's `sortAddrDelays`, so outputs
    /// compare regardless of order.
    fn sorted(mut v: Vec<(Addr, Duration)>) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = v
            .drain(..)
            .map(|(a, d)| (a.to_multiaddr().unwrap().to_string(), d))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn check(input: &[&str], expected: &[(&str, Duration)]) {
        let got = rank(input.iter().map(|s| addr(s)), &RankerConfig::default());
        let want: Vec<(Addr, Duration)> = expected.iter().map(|(s, d)| (addr(s), *d)).collect();
        assert_eq!(sorted(got), sorted(want), "input {input:?}");
    }

    /// go-libp2p's ranker tests call `DefaultDialRanker` directly, without
    /// the swarm's low-priority filter: so does this.
    fn check_go(input: &[&str], expected: &[(&str, Duration)]) {
        let entries: Vec<Entry> = input
            .iter()
            .map(|s| {
                let a = addr(s);
                let f = Features::of(&a);
                (a, f)
            })
            .collect();
        let got = rank_entries(entries, &RankerConfig::default())
            .into_iter()
            .map(|((a, _), d)| (a, d))
            .collect();
        let want: Vec<(Addr, Duration)> = expected.iter().map(|(s, d)| (addr(s), *d)).collect();
        assert_eq!(sorted(got), sorted(want), "input {input:?}");
    }

    // Names as in go-libp2p's dial_ranker_test.go.
    const Q1V1: &str = "/ip4/1.2.3.4/udp/1/quic-v1";
    const Q2V1: &str = "/ip4/1.2.3.4/udp/2/quic-v1";
    const Q3V1: &str = "/ip4/1.2.3.4/udp/3/quic-v1";
    const WT1: &str = "/ip4/1.2.3.4/udp/1/quic-v1/webtransport";
    const Q1V16: &str = "/ip6/1::2/udp/1/quic-v1";
    const Q2V16: &str = "/ip6/1::2/udp/2/quic-v1";
    const Q3V16: &str = "/ip6/1::2/udp/3/quic-v1";
    const T1: &str = "/ip4/1.2.3.5/tcp/1";
    const T1V6: &str = "/ip6/1::2/tcp/1";
    const T2: &str = "/ip4/1.2.3.4/tcp/2";
    const T3: &str = "/ip4/1.2.3.4/tcp/3";
    const WRTC1: &str = "/ip4/1.2.3.4/udp/1/webrtc-direct";
    const WRTC1V6: &str = "/ip6/1::2/udp/1/webrtc-direct";
    const ONION1: &str = "/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:1234";
    const ONLY_IP: &str = "/ip4/1.2.3.4";
    const PID: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    const Q: Duration = Duration::from_millis(250); // PublicQUICDelay
    const T: Duration = Duration::from_millis(250); // PublicTCPDelay
    const O: Duration = Duration::from_secs(1); // PublicOtherDelay
    const R: Duration = Duration::from_millis(500); // RelayDelay

    /// TestNoDelayDialRanker ("quic+webtransport filtered when quicv1").
    #[test]
    fn go_no_delay_ranker() {
        let input = [
            Q1V1,
            "/ip4/1.2.3.4/udp/4/quic-v1",
            Q2V1,
            Q3V1,
            WT1,
            T1,
            "/ip4/1.1.1.1/udp/1/webrtc-direct",
        ];
        let got = rank_no_delay(input.iter().map(|s| addr(s)));
        // go's vector lists q1..q4 and their v1 twins, which are the same
        // addresses: the duplicates collapse here, and /webtransport on the
        // /quic-v1 port is filtered.
        assert_eq!(got.len(), 6);
        assert!(got.iter().all(|(_, d)| *d == Duration::ZERO));
        assert!(!got.iter().any(|(a, _)| *a == addr(WT1)));
    }

    /// TestDelayRankerQUICDelay.
    #[test]
    fn go_quic_delay() {
        check_go(&[Q1V1, Q2V1, Q3V1], &[(Q1V1, MS(0)), (Q2V1, Q), (Q3V1, Q)]);
        check_go(
            &[Q1V16, Q2V16, Q3V16],
            &[(Q1V16, MS(0)), (Q2V16, Q), (Q3V16, Q)],
        );
        check_go(&[Q1V16, Q2V1], &[(Q1V16, MS(0)), (Q2V1, Q)]);
        // "quic-quic-v1-webtransport" (the swarm's filter would drop wt1,
        // which shares q1v1's port; the ranker alone keeps it).
        check_go(
            &[Q1V16, Q1V1, Q2V1, Q3V1, WT1],
            &[
                (Q1V16, MS(0)),
                (Q1V1, Q),
                (Q2V1, 2 * Q),
                (Q3V1, 2 * Q),
                (WT1, 2 * Q),
            ],
        );
        // "wt-ranking"
        check_go(
            &[Q1V16, Q2V16, Q3V16, WT1],
            &[(Q1V16, MS(0)), (WT1, Q), (Q2V16, 2 * Q), (Q3V16, 2 * Q)],
        );
    }

    /// TestDelayRankerTCPDelay.
    #[test]
    fn go_tcp_delay() {
        check_go(
            &[Q1V1, Q1V16, Q2V16, Q3V16, Q2V1, T1, T1V6, T2, T3],
            &[
                (Q1V16, MS(0)),
                (Q1V1, Q),
                (Q2V16, 2 * Q),
                (Q3V16, 2 * Q),
                (Q2V1, 2 * Q),
                (T1V6, 3 * Q),
                (T1, 4 * Q),
                (T2, 5 * Q),
                (T3, 5 * Q),
            ],
        );
        check_go(
            &[Q1V1, T2, T1V6, T1],
            &[(Q1V1, MS(0)), (T1V6, Q), (T1, 2 * Q), (T2, 3 * Q)],
        );
        check_go(
            &[Q1V1, T2, T3, T1],
            &[(Q1V1, MS(0)), (T1, T), (T2, 2 * Q), (T3, 2 * T)],
        );
        check_go(&[Q1V1, T1V6, T2], &[(Q1V1, MS(0)), (T1V6, T), (T2, 2 * T)]);
        check_go(
            &[T1, T2, T1V6, T3],
            &[(T1V6, MS(0)), (T1, T), (T2, 2 * T), (T3, 2 * T)],
        );
        check_go(&[], &[]);
    }

    /// TestDelayRankerRelay.
    #[test]
    fn go_relay() {
        let r1 = format!("/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/{PID}");
        let r2 = format!("/ip4/1.2.3.4/udp/1/quic/p2p-circuit/p2p/{PID}");
        check_go(
            &[Q1V1, Q2V1, &r1, &r2],
            &[(Q1V1, MS(0)), (Q2V1, Q), (&r2, R), (&r1, T + R)],
        );
        // Through the swarm's filter, r2 (QUIC draft-29 on q1's ip:port) is
        // dropped, as go-libp2p's `filterLowPriorityAddresses` does too.
        check(
            &[Q1V1, Q2V1, &r1, &r2],
            &[(Q1V1, MS(0)), (Q2V1, Q), (&r1, R)],
        );
    }

    /// TestDelayRankerOtherTransportDelay.
    #[test]
    fn go_other_transports() {
        check_go(
            &[Q1V1, Q1V16, WRTC1, WRTC1V6, ONION1, ONLY_IP],
            &[
                (Q1V16, MS(0)),
                (Q1V1, Q),
                (WRTC1, Q + O),
                (WRTC1V6, Q + O),
                (ONLY_IP, Q + O),
                (ONION1, Q + 2 * O),
            ],
        );
        check_go(
            &[Q1V1, T1, T1V6, WRTC1, WRTC1V6, ONION1, ONLY_IP],
            &[
                (Q1V1, MS(0)),
                (T1V6, Q),
                (T1, 2 * Q),
                (WRTC1, 2 * Q + O),
                (WRTC1V6, 2 * Q + O),
                (ONLY_IP, 2 * Q + O),
                (ONION1, 2 * Q + 2 * O),
            ],
        );
        check_go(&[ONION1], &[(ONION1, O)]);
    }

    /// The REFERENCE.md summary vector: q6 0, q4 250, other quic 500, t6 750,
    /// t4 1000, other tcp 1250.
    #[test]
    fn reference_public_vector() {
        check(
            &[
                "/ip6/1::2/udp/4001/quic-v1",
                "/ip4/1.2.3.4/udp/4001/quic-v1",
                "/ip4/1.2.3.4/udp/4002/quic-v1",
                "/ip6/1::2/tcp/4001",
                "/ip4/1.2.3.4/tcp/4001",
                "/ip4/1.2.3.4/tcp/4002",
            ],
            &[
                ("/ip6/1::2/udp/4001/quic-v1", MS(0)),
                ("/ip4/1.2.3.4/udp/4001/quic-v1", MS(250)),
                ("/ip4/1.2.3.4/udp/4002/quic-v1", MS(500)),
                ("/ip6/1::2/tcp/4001", MS(750)),
                ("/ip4/1.2.3.4/tcp/4001", MS(1000)),
                ("/ip4/1.2.3.4/tcp/4002", MS(1250)),
            ],
        );
    }

    #[test]
    fn private_addresses_use_private_delays() {
        check(
            &[
                "/ip4/192.168.1.2/tcp/1",
                "/ip4/192.168.1.2/udp/1/quic-v1",
                "/ip4/10.0.0.1/udp/2/quic-v1",
                "/ip4/127.0.0.1/tcp/2",
                "/ip4/192.168.1.2/udp/3/webrtc-direct",
            ],
            &[
                ("/ip4/192.168.1.2/udp/1/quic-v1", MS(0)),
                ("/ip4/10.0.0.1/udp/2/quic-v1", MS(30)),
                ("/ip4/192.168.1.2/tcp/1", MS(60)),
                ("/ip4/127.0.0.1/tcp/2", MS(90)),
                ("/ip4/192.168.1.2/udp/3/webrtc-direct", MS(190)),
            ],
        );
    }

    #[test]
    fn private_and_public_groups_run_in_parallel() {
        check(
            &[
                "/ip4/1.2.3.4/udp/1/quic-v1",
                "/ip4/192.168.0.1/udp/1/quic-v1",
                "/ip4/1.2.3.4/tcp/1",
                "/ip4/192.168.0.1/tcp/1",
            ],
            &[
                ("/ip4/192.168.0.1/udp/1/quic-v1", MS(0)),
                ("/ip4/1.2.3.4/udp/1/quic-v1", MS(0)),
                ("/ip4/192.168.0.1/tcp/1", MS(30)),
                ("/ip4/1.2.3.4/tcp/1", MS(250)),
            ],
        );
    }

    #[test]
    fn relay_only_is_not_delayed() {
        let r1 = format!("/ip4/1.2.3.4/tcp/1/p2p/{PID}/p2p-circuit");
        let r2 = format!("/ip4/1.2.3.4/udp/1/quic-v1/p2p/{PID}/p2p-circuit");
        check(&[&r1, &r2], &[(&r2, MS(0)), (&r1, MS(250))]);
        // A private direct address alone does not push relays back either.
        check(
            &[&r1, "/ip4/10.0.0.1/tcp/1"],
            &[("/ip4/10.0.0.1/tcp/1", MS(0)), (&r1, MS(0))],
        );
    }

    #[test]
    fn ipv6_only_and_dns() {
        check(
            &[
                "/ip6/2604:1380::1/tcp/2",
                "/ip6/2604:1380::1/tcp/1",
                "/ip6/2604:1380::1/udp/9/quic-v1",
            ],
            &[
                ("/ip6/2604:1380::1/udp/9/quic-v1", MS(0)),
                ("/ip6/2604:1380::1/tcp/1", MS(250)),
                ("/ip6/2604:1380::1/tcp/2", MS(500)),
            ],
        );
        // Unresolved DNS names are "rest": one second after the last ranked
        // address, or at one second alone; `.local` names are private.
        check(
            &[
                "/dns4/example.com/tcp/1",
                "/ip4/1.2.3.4/udp/1/quic-v1",
                "/dns/printer.local/tcp/1",
            ],
            &[
                ("/dns/printer.local/tcp/1", MS(0)),
                ("/ip4/1.2.3.4/udp/1/quic-v1", MS(0)),
                ("/dns4/example.com/tcp/1", MS(1000)),
            ],
        );
        check(
            &["/dns4/example.com/tcp/1", "/dns6/example.com/tcp/1"],
            &[
                ("/dns4/example.com/tcp/1", MS(1000)),
                ("/dns6/example.com/tcp/1", MS(1000)),
            ],
        );
    }

    #[test]
    fn low_priority_filter() {
        let mut v: Vec<Addr> = [
            "/ip4/1.2.3.4/udp/1/quic-v1",
            "/ip4/1.2.3.4/udp/1/quic",
            "/ip4/1.2.3.4/udp/1/quic-v1/webtransport",
            "/ip4/1.2.3.4/udp/2/quic",
            "/ip4/1.2.3.4/tcp/1",
            "/ip4/1.2.3.4/tcp/1/ws",
            "/ip4/1.2.3.4/tcp/1/tls/ws",
            "/ip4/1.2.3.4/tcp/2/wss",
            "/ip4/5.6.7.8/tcp/1/ws",
        ]
        .iter()
        .map(|s| addr(s))
        .collect();
        filter_low_priority(&mut v);
        let kept: Vec<Addr> = [
            "/ip4/1.2.3.4/udp/1/quic-v1",
            "/ip4/1.2.3.4/udp/2/quic",
            "/ip4/1.2.3.4/tcp/1",
            "/ip4/1.2.3.4/tcp/2/wss",
            "/ip4/5.6.7.8/tcp/1/ws",
        ]
        .iter()
        .map(|s| addr(s))
        .collect();
        assert_eq!(v, kept);
    }

    #[test]
    fn mixed_everything() {
        let relay = format!("/ip4/1.2.3.4/tcp/1/p2p/{PID}/p2p-circuit");
        check(
            &[T1, Q1V1, "/ip4/192.168.0.1/udp/5/quic-v1", &relay, ONION1],
            &[
                ("/ip4/192.168.0.1/udp/5/quic-v1", MS(0)),
                (Q1V1, MS(0)),
                (T1, T),
                (&relay, R),
                (ONION1, R + O),
            ],
        );
    }

    #[test]
    fn websocket_counts_as_tcp_and_uses_fd() {
        let ws = Features::of(&addr("/ip4/1.2.3.4/tcp/1/ws"));
        assert!(ws.tcp && ws.uses_fd() && !ws.is_quic());
        let relay = Features::of(&addr(&format!("/ip4/1.2.3.4/tcp/1/p2p/{PID}/p2p-circuit")));
        assert!(relay.relayed && !relay.uses_fd());
        let unix = Features::of(&addr("/unix/tmp%2Fx.sock"));
        assert!(unix.uses_fd());
        let wt = Features::of(&addr(WT1));
        assert!(wt.is_quic() && wt.public && wt.udp_port == 1);
        check(
            &["/ip4/1.2.3.4/tcp/2/ws", "/ip4/1.2.3.4/udp/1/quic-v1"],
            &[
                ("/ip4/1.2.3.4/udp/1/quic-v1", MS(0)),
                ("/ip4/1.2.3.4/tcp/2/ws", T),
            ],
        );
    }

    #[test]
    fn config_validation() {
        assert_eq!(RankerConfig::default().validate(), Ok(()));
        let mut c = RankerConfig::default();
        c.relay_delay = Duration::from_secs(7200);
        assert_eq!(
            c.validate(),
            Err(RankerConfigError::DelayTooLong("relay_delay"))
        );
        let _ = vec![0u8];
    }
}
