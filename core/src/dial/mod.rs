//! Dialing: address ranking, per-peer dial workers, dial limits, backoff,
//! black-hole detection, and an Ethereum-style scheduler of whom to dial.
//!
//! Every type here is a pure machine: no clock, no socket, no randomness.
//! The pieces, and the go-libp2p / go-ethereum code each one follows:
//!
//! | module | what | after |
//! | --- | --- | --- |
//! | [`rank`](mod@rank) | delay per address (happy eyeballs, QUIC before TCP, relays last) | go-libp2p `dial_ranker.go`, `filterLowPriorityAddresses` |
//! | [`backoff`] | per (peer, address) backoff after failed dials | go-libp2p `DialBackoff` (`swarm_dial.go`) |
//! | [`black_hole`] | UDP / IPv6 black-hole detection | go-libp2p `black_hole_detector.go` |
//! | [`limiter`] | file-descriptor and per-peer dial limits | go-libp2p `limiter.go` |
//! | [`worker`] | the [`Dialer`]: dial sync, per-peer workers, timeouts | go-libp2p `dial_worker.go`, `dial_sync.go` |
//! | [`scheduler`] | whom to dial: static nodes, candidates, bootnodes | go-ethereum `p2p/dial.go` |
//!
//! **When to call again (every machine):** after any input (`handle_*`) or
//! command, drain the outputs (`poll_action`, `poll_event`, …) until they
//! return `None`, then sleep until `poll_timeout()` or the next input.
//!
//! Addresses are kept as binary multiaddrs ([`Addr`]) so the module works
//! without `std`; under the `std` feature an [`Addr`] converts from and to a
//! [`multiaddr::Multiaddr`].

use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use crate::addr::{self, AddrError, AddrInfo, Classifier};

pub mod backoff;
pub mod black_hole;
pub mod limiter;
pub mod rank;
pub mod scheduler;
mod timers;
pub mod worker;

pub use backoff::{Backoff, BackoffConfig};
pub use black_hole::{
    BlackHoleConfig, BlackHoleCounter, BlackHoleFilter, BlackHoleFilterConfig, BlackHoleState,
};
pub use limiter::{Limiter, LimiterConfig};
pub use rank::{rank, rank_no_delay, RankerConfig};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use worker::{
    Action, AddrFailure, AttemptId, ConnectionRef, DialError, DialErrorCause, DialOpts, Dialer,
    DialerConfig, DialerError, Event, FailureClass, RequestId,
};

/// A validated binary multiaddr.
///
/// Cheap to clone (the bytes are shared). Construction checks that
/// [`addr::classify`] understands every component, so [`Addr::info`] never
/// fails afterwards.
///
/// ```
/// use sansp2p::dial::Addr;
/// use sansp2p::addr::Transport;
///
/// // /ip4/1.2.3.4/tcp/4001
/// let a = Addr::from_bytes(vec![0x04, 1, 2, 3, 4, 0x06, 0x0f, 0xa1]).unwrap();
/// assert_eq!(a.info().transport, Transport::Tcp);
/// assert!(Addr::from_bytes(vec![0x04, 1]).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(Bytes);

impl Addr {
    /// Wraps binary multiaddr bytes after checking they classify.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<Self, AddrError> {
        let bytes = bytes.into();
        addr::classify(&bytes)?;
        Ok(Addr(bytes))
    }

    /// The binary multiaddr.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The classification of this address.
    pub fn info(&self) -> AddrInfo {
        // Validated at construction; the fallback is unreachable.
        addr::classify(&self.0).unwrap_or_else(|_| Classifier::default().finish())
    }

    /// The text form, when the `multiaddr` crate can read the bytes.
    #[cfg(feature = "std")]
    pub fn to_multiaddr(&self) -> Option<multiaddr::Multiaddr> {
        multiaddr::Multiaddr::try_from(self.0.to_vec()).ok()
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "std")]
        if let Some(ma) = self.to_multiaddr() {
            return write!(f, "Addr({ma})");
        }
        f.write_str("Addr(0x")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(feature = "std")]
impl TryFrom<&multiaddr::Multiaddr> for Addr {
    type Error = AddrError;
    fn try_from(ma: &multiaddr::Multiaddr) -> Result<Self, AddrError> {
        // Checked with the same classifier the `multiaddr` path uses.
        addr::classify_multiaddr(ma)?;
        Addr::from_bytes(ma.to_vec())
    }
}

#[cfg(feature = "std")]
impl TryFrom<multiaddr::Multiaddr> for Addr {
    type Error = AddrError;
    fn try_from(ma: multiaddr::Multiaddr) -> Result<Self, AddrError> {
        Addr::try_from(&ma)
    }
}

/// Removes later duplicates, keeping the first occurrence of each address.
pub(crate) fn dedup_addrs(addrs: &mut Vec<Addr>) {
    if addrs.len() <= 16 {
        let mut i = 0;
        while i < addrs.len() {
            if addrs[..i].contains(&addrs[i]) {
                addrs.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen =
            crate::collections::HashSet::with_capacity_and_hasher(addrs.len(), Default::default());
        addrs.retain(|a| seen.insert(a.clone()));
    }
}

#[allow(clippy::field_reassign_with_default)]
#[cfg(all(test, feature = "std"))]
mod proptests;

/// Test helpers shared by the dial modules.
#[cfg(all(test, feature = "std"))]
pub(crate) mod test_util {
    use super::Addr;
    use crate::identity::PeerId;

    /// An address from its text form.
    pub fn addr(text: &str) -> Addr {
        let ma: multiaddr::Multiaddr = text.parse().expect(text);
        Addr::try_from(&ma).expect(text)
    }

    /// A distinct peer id per `n` (identity multihash of `n`).
    pub fn peer(n: u64) -> PeerId {
        let mut mh = [0u8; 10];
        mh[1] = 8;
        mh[2..].copy_from_slice(&n.to_be_bytes());
        PeerId::from_bytes(&mh).unwrap()
    }
}
