//! Black-hole detection for UDP and IPv6, after go-libp2p's
//! `p2p/net/swarm/black_hole_detector.go`.
//!
//! A [`BlackHoleCounter`] keeps the outcomes of the last `n` dials (default
//! 100) of one address class and answers each peer-dial request with a
//! [`BlackHoleState`]:
//!
//! - **Probing** until `n` outcomes are known: every dial is allowed.
//! - **Allowed** when at least `min_successes` (default 5) of the last `n`
//!   dials succeeded.
//! - **Blocked** otherwise: requests are refused, except that every `n`-th
//!   request (counted over all requests since the last reset) is let through
//!   as a probe.
//! - A success recorded while Blocked resets the counter (outcomes and request
//!   count) to Probing.
//!
//! A [`BlackHoleFilter`] applies one counter to public UDP addresses and one
//! to public IPv6 addresses, once per peer-dial request (filtering at the
//! request level makes sure probes really get dialed, whatever the ranking).
//!
//! ## go-libp2p's code versus its comments
//!
//! The comments and the code disagree in three places; this module follows
//! the **code**, because the code is what runs in every go-libp2p node and
//! what its tests (`black_hole_detector_test.go`) pin down:
//!
//! 1. `RecordResult`'s inline comment says a success while Blocked resets
//!    "to allowed"; the code calls `reset()`, whose `updateState()` with no
//!    outcomes yields **Probing** (and `TestBlackHoleSuccessCounterReset`
//!    expects Probing). We reset to Probing.
//! 2. `RecordResult`'s doc speaks of a "success fraction" below
//!    `minSuccessFraction`; the code compares a **count** of successes with
//!    `MinSuccesses`. We use the count.
//! 3. The type doc says that after a reset "N subsequent requests are allowed
//!    before reevaluating"; the code re-evaluates after N *results* (state is
//!    Probing while fewer than N outcomes are known, however many requests
//!    came). We count results.
//!
//! Also from the code: outcomes of dials cancelled because another dial
//! succeeded are recorded as failures (`dialAddr` records every error; its
//! comment argues the 5 % threshold tolerates it), and the probe cadence
//! counts every request since the last reset (`requests % N == 0`), not the
//! requests since entering Blocked.
//!
//! ```
//! use sansp2p::dial::{BlackHoleConfig, BlackHoleCounter, BlackHoleState};
//!
//! let mut c = BlackHoleCounter::new(BlackHoleConfig::default()).unwrap();
//! for _ in 0..100 {
//!     assert_eq!(c.handle_request(), BlackHoleState::Probing);
//!     c.record_result(false);
//! }
//! assert_eq!(c.state(), BlackHoleState::Blocked);
//! ```

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::rank::Features;
use super::Addr;

/// What a [`BlackHoleCounter`] says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlackHoleState {
    /// Too few outcomes to judge: dial.
    Probing,
    /// Enough successes: dial.
    Allowed,
    /// Too few successes: do not dial (except the periodic probe).
    Blocked,
}

/// Window and threshold of one [`BlackHoleCounter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlackHoleConfig {
    /// Outcomes in the sliding window, and the probe period while Blocked
    /// (go-libp2p `N`, 100).
    pub n: usize,
    /// Successes in the window needed to be Allowed (go-libp2p
    /// `MinSuccesses`, 5).
    pub min_successes: usize,
}

impl Default for BlackHoleConfig {
    fn default() -> Self {
        BlackHoleConfig {
            n: 100,
            min_successes: 5,
        }
    }
}

/// A [`BlackHoleConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlackHoleConfigError {
    /// The window is empty.
    #[error("black-hole window must hold at least one result")]
    ZeroWindow,
    /// More successes needed than the window holds.
    #[error("black-hole min_successes {min_successes} exceeds the window {n}")]
    ThresholdAboveWindow {
        /// The window.
        n: usize,
        /// The threshold.
        min_successes: usize,
    },
    /// The window is larger than [`MAX_WINDOW`].
    #[error("black-hole window larger than {MAX_WINDOW}")]
    WindowTooLarge,
}

/// The largest window accepted.
pub const MAX_WINDOW: usize = 1 << 20;

impl BlackHoleConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), BlackHoleConfigError> {
        if self.n == 0 {
            Err(BlackHoleConfigError::ZeroWindow)
        } else if self.n > MAX_WINDOW {
            Err(BlackHoleConfigError::WindowTooLarge)
        } else if self.min_successes > self.n {
            Err(BlackHoleConfigError::ThresholdAboveWindow {
                n: self.n,
                min_successes: self.min_successes,
            })
        } else {
            Ok(())
        }
    }
}

/// go-libp2p's `BlackHoleSuccessCounter`: see the [module docs](self).
///
/// It has no timers; its inputs are [`handle_request`](Self::handle_request)
/// (one per peer-dial request that has an address of its class) and
/// [`record_result`](Self::record_result) (one per finished dial).
#[derive(Debug, Clone)]
pub struct BlackHoleCounter {
    config: BlackHoleConfig,
    requests: u64,
    results: VecDeque<bool>,
    successes: usize,
    state: BlackHoleState,
}

impl BlackHoleCounter {
    /// A counter in the Probing state.
    pub fn new(config: BlackHoleConfig) -> Result<Self, BlackHoleConfigError> {
        config.validate()?;
        Ok(BlackHoleCounter {
            config,
            requests: 0,
            results: VecDeque::with_capacity(config.n),
            successes: 0,
            state: BlackHoleState::Probing,
        })
    }

    /// The current state (what the last outcome left).
    pub fn state(&self) -> BlackHoleState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &BlackHoleConfig {
        &self.config
    }

    /// Successes among the outcomes in the window.
    pub fn successes(&self) -> usize {
        self.successes
    }

    /// Outcomes in the window.
    pub fn results(&self) -> usize {
        self.results.len()
    }

    /// While Blocked, how many requests until the next probe (go-libp2p's
    /// `nextProbeAfter`); zero otherwise.
    pub fn next_probe_after(&self) -> u64 {
        if self.state == BlackHoleState::Blocked {
            let n = self.config.n as u64;
            n - self.requests % n
        } else {
            0
        }
    }

    /// One peer-dial request: counts it and says whether to dial
    /// (go-libp2p's `HandleRequest`).
    pub fn handle_request(&mut self) -> BlackHoleState {
        self.requests = self.requests.wrapping_add(1);
        match self.state {
            BlackHoleState::Allowed => BlackHoleState::Allowed,
            BlackHoleState::Probing => BlackHoleState::Probing,
            BlackHoleState::Blocked if self.requests.is_multiple_of(self.config.n as u64) => {
                BlackHoleState::Probing
            }
            BlackHoleState::Blocked => BlackHoleState::Blocked,
        }
    }

    /// The outcome of one dial of this class (go-libp2p's `RecordResult`).
    pub fn record_result(&mut self, success: bool) {
        if self.state == BlackHoleState::Blocked && success {
            self.successes = 0;
            self.results.clear();
            self.requests = 0;
            self.update_state();
            return;
        }
        if success {
            self.successes += 1;
        }
        self.results.push_back(success);
        if self.results.len() > self.config.n && self.results.pop_front() == Some(true) {
            self.successes -= 1;
        }
        self.update_state();
    }

    fn update_state(&mut self) {
        self.state = if self.results.len() < self.config.n {
            BlackHoleState::Probing
        } else if self.successes >= self.config.min_successes {
            BlackHoleState::Allowed
        } else {
            BlackHoleState::Blocked
        };
    }
}

/// Which counters a [`BlackHoleFilter`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlackHoleFilterConfig {
    /// The UDP counter (on by default, go-libp2p `N: 100, MinSuccesses: 5`).
    pub udp: Option<BlackHoleConfig>,
    /// The IPv6 counter (on by default, same values).
    pub ipv6: Option<BlackHoleConfig>,
    /// Read-only mode (go-libp2p's, for AutoNAT): outcomes are not recorded
    /// and anything not Allowed is refused.
    pub read_only: bool,
}

impl Default for BlackHoleFilterConfig {
    fn default() -> Self {
        BlackHoleFilterConfig {
            udp: Some(BlackHoleConfig::default()),
            ipv6: Some(BlackHoleConfig::default()),
            read_only: false,
        }
    }
}

/// go-libp2p's `blackHoleDetector`: a UDP and an IPv6 [`BlackHoleCounter`]
/// applied to public addresses.
#[derive(Debug, Clone)]
pub struct BlackHoleFilter {
    udp: Option<BlackHoleCounter>,
    ipv6: Option<BlackHoleCounter>,
    read_only: bool,
}

impl BlackHoleFilter {
    /// A filter with the configured counters.
    pub fn new(config: BlackHoleFilterConfig) -> Result<Self, BlackHoleConfigError> {
        Ok(BlackHoleFilter {
            udp: config.udp.map(BlackHoleCounter::new).transpose()?,
            ipv6: config.ipv6.map(BlackHoleCounter::new).transpose()?,
            read_only: config.read_only,
        })
    }

    /// The UDP counter, if enabled.
    pub fn udp(&self) -> Option<&BlackHoleCounter> {
        self.udp.as_ref()
    }

    /// The IPv6 counter, if enabled.
    pub fn ipv6(&self) -> Option<&BlackHoleCounter> {
        self.ipv6.as_ref()
    }

    /// One peer-dial request: removes the black-holed addresses from `addrs`
    /// and returns them (go-libp2p's `FilterAddrs`).
    pub fn filter_addrs(&mut self, addrs: &mut Vec<Addr>) -> Vec<Addr> {
        let mut entries: Vec<(Addr, Features)> = addrs
            .drain(..)
            .map(|a| {
                let f = Features::of(&a);
                (a, f)
            })
            .collect();
        let removed = self.filter_entries(&mut entries);
        addrs.extend(entries.into_iter().map(|(a, _)| a));
        removed.into_iter().map(|(a, _)| a).collect()
    }

    /// Records the outcome of a dial to `addr`.
    pub fn record_result(&mut self, addr: &Addr, success: bool) {
        let f = Features::of(addr);
        self.record_kind(f.public, f.udp, f.ip6, success);
    }

    pub(crate) fn filter_entries(
        &mut self,
        entries: &mut Vec<(Addr, Features)>,
    ) -> Vec<(Addr, Features)> {
        let has_udp = entries.iter().any(|(_, f)| f.public && f.udp);
        let has_ipv6 = entries.iter().any(|(_, f)| f.public && f.ip6);
        let read_only = self.read_only;
        let ask = |c: &mut Option<BlackHoleCounter>, present: bool| match c {
            Some(c) if present => {
                if read_only {
                    if c.state() == BlackHoleState::Allowed {
                        BlackHoleState::Allowed
                    } else {
                        BlackHoleState::Blocked
                    }
                } else {
                    c.handle_request()
                }
            }
            _ => BlackHoleState::Allowed,
        };
        let udp = ask(&mut self.udp, has_udp);
        let ipv6 = ask(&mut self.ipv6, has_ipv6);
        if udp != BlackHoleState::Blocked && ipv6 != BlackHoleState::Blocked {
            return Vec::new();
        }
        let mut removed = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let f = &entries[i].1;
            let keep = if !f.public
                || (udp == BlackHoleState::Probing && f.udp)
                || (ipv6 == BlackHoleState::Probing && f.ip6)
            {
                true
            } else {
                !((udp == BlackHoleState::Blocked && f.udp)
                    || (ipv6 == BlackHoleState::Blocked && f.ip6))
            };
            if keep {
                i += 1;
            } else {
                removed.push(entries.remove(i));
            }
        }
        removed
    }

    /// Records a dial outcome for an address of this kind.
    pub(crate) fn record_kind(&mut self, public: bool, udp: bool, ip6: bool, success: bool) {
        if self.read_only || !public {
            return;
        }
        if udp {
            if let Some(c) = &mut self.udp {
                c.record_result(success);
            }
        }
        if ip6 {
            if let Some(c) = &mut self.ipv6 {
                c.record_result(success);
            }
        }
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::dial::test_util::addr;
    use alloc::vec;

    fn counter(n: usize, min: usize) -> BlackHoleCounter {
        let mut c = BlackHoleConfig::default();
        c.n = n;
        c.min_successes = min;
        BlackHoleCounter::new(c).unwrap()
    }

    /// go-libp2p TestBlackHoleSuccessCounterReset.
    #[test]
    fn go_reset_vector() {
        let n = 10;
        let mut c = counter(n, 2);
        for _ in 1..=n {
            assert_eq!(c.handle_request(), BlackHoleState::Probing);
            assert_eq!(c.state(), BlackHoleState::Probing);
            c.record_result(false);
        }
        for i in n + 1..42 {
            let want = if i % n == 0 {
                BlackHoleState::Probing
            } else {
                BlackHoleState::Blocked
            };
            assert_eq!(c.handle_request(), want, "request {i}");
            assert_eq!(c.state(), BlackHoleState::Blocked);
        }
        c.record_result(true);
        for _ in 0..n {
            assert_eq!(c.handle_request(), BlackHoleState::Probing);
            c.record_result(false);
        }
        assert_eq!(c.handle_request(), BlackHoleState::Blocked);
    }

    /// go-libp2p TestBlackHoleSuccessCounterSuccessFraction.
    #[test]
    fn go_success_count_vector() {
        use BlackHoleState::*;
        for (min, successes, want) in [
            (5, 5, Allowed),
            (3, 3, Allowed),
            (5, 4, Blocked),
            (5, 7, Allowed),
            (3, 1, Blocked),
            (0, 0, Allowed),
            (10, 10, Allowed),
        ] {
            let mut c = counter(10, min);
            for _ in 0..successes {
                c.record_result(true);
            }
            for _ in 0..10 - successes {
                c.record_result(false);
            }
            assert_eq!(c.handle_request(), want, "{min} {successes}");
        }
    }

    #[test]
    fn blocks_after_100_failures_and_recovers_through_probes() {
        let mut f = BlackHoleFilter::new(BlackHoleFilterConfig::default()).unwrap();
        let quic = addr("/ip4/1.2.3.4/udp/1/quic-v1");
        let tcp = addr("/ip4/1.2.3.4/tcp/1");
        // 100 requests, each dialing its QUIC address, all failing.
        for _ in 0..100 {
            let mut addrs = vec![quic.clone(), tcp.clone()];
            assert!(f.filter_addrs(&mut addrs).is_empty());
            f.record_result(&quic, false);
        }
        assert_eq!(f.udp().unwrap().state(), BlackHoleState::Blocked);
        // Requests 101..=199 lose their UDP address; request 200 probes.
        let mut probes = 0;
        for i in 101..=200 {
            let mut addrs = vec![quic.clone(), tcp.clone()];
            let removed = f.filter_addrs(&mut addrs);
            if removed.is_empty() {
                probes += 1;
                assert_eq!(i, 200);
                // The probe succeeds: back to Probing, everything allowed.
                f.record_result(&quic, true);
            } else {
                assert_eq!(
                    (removed, addrs.clone()),
                    (vec![quic.clone()], vec![tcp.clone()])
                );
            }
        }
        assert_eq!(probes, 1);
        assert_eq!(f.udp().unwrap().state(), BlackHoleState::Probing);
        // Then 5 successes in the next 100 outcomes make it Allowed.
        for i in 0..100 {
            f.record_result(&quic, i < 5);
        }
        assert_eq!(f.udp().unwrap().state(), BlackHoleState::Allowed);
    }

    #[test]
    fn private_addresses_and_tcp_are_never_counted_or_filtered() {
        // go-libp2p TestBlackHoleDetectorInApplicableAddress, with N = 10.
        let mut cfg = BlackHoleFilterConfig::default();
        let mut small = BlackHoleConfig::default();
        small.n = 10;
        cfg.udp = Some(small);
        cfg.ipv6 = Some(small);
        let mut f = BlackHoleFilter::new(cfg).unwrap();
        let all = vec![
            addr("/ip4/1.2.3.4/tcp/1234"),
            addr("/ip4/1.2.3.4/tcp/1233"),
            addr("/ip6/::1/udp/1234/quic-v1"),
            addr("/ip4/192.168.1.5/udp/1234/quic-v1"),
        ];
        for _ in 0..1000 {
            let mut addrs = all.clone();
            assert!(f.filter_addrs(&mut addrs).is_empty());
            assert_eq!(addrs, all);
            for a in &all {
                f.record_result(a, false);
            }
        }
        assert_eq!(f.udp().unwrap().results(), 0);
    }

    #[test]
    fn ipv6_probing_keeps_blocked_udp_ipv6_addresses() {
        let mut cfg = BlackHoleFilterConfig::default();
        let mut small = BlackHoleConfig::default();
        small.n = 2;
        small.min_successes = 1;
        cfg.udp = Some(small);
        cfg.ipv6 = Some(small);
        let mut f = BlackHoleFilter::new(cfg).unwrap();
        let q4 = addr("/ip4/1.2.3.4/udp/1/quic-v1");
        let q6 = addr("/ip6/2604:1380::1/udp/1/quic-v1");
        let t6 = addr("/ip6/2604:1380::1/tcp/1");
        f.record_result(&q4, false);
        f.record_result(&q4, false);
        assert_eq!(f.udp().unwrap().state(), BlackHoleState::Blocked);
        // UDP blocked (request 1, not a probe), IPv6 probing: the IPv6 QUIC
        // address stays, the IPv4 one goes.
        let mut addrs = vec![q4.clone(), q6.clone(), t6.clone()];
        assert_eq!(f.filter_addrs(&mut addrs), vec![q4.clone()]);
        assert_eq!(addrs, vec![q6, t6]);
    }

    #[test]
    fn read_only_refuses_until_allowed_and_records_nothing() {
        let mut cfg = BlackHoleFilterConfig::default();
        cfg.read_only = true;
        cfg.ipv6 = None;
        let mut f = BlackHoleFilter::new(cfg).unwrap();
        let q4 = addr("/ip4/1.2.3.4/udp/1/quic-v1");
        let mut addrs = vec![q4.clone()];
        assert_eq!(f.filter_addrs(&mut addrs), vec![q4.clone()]);
        f.record_result(&q4, true);
        assert_eq!(f.udp().unwrap().results(), 0);
    }

    #[test]
    fn config_validation() {
        let mut c = BlackHoleConfig::default();
        c.min_successes = 101;
        assert!(matches!(
            BlackHoleCounter::new(c),
            Err(BlackHoleConfigError::ThresholdAboveWindow { .. })
        ));
        c.n = 0;
        assert_eq!(c.validate(), Err(BlackHoleConfigError::ZeroWindow));
        let c = counter(10, 2);
        assert_eq!(c.next_probe_after(), 0);
    }
}
