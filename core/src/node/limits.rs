//! Admission of inbound connections: how many may be upgrading at once,
//! and how many may come from one IP subnet (go-libp2p's resource manager
//! defaults; loopback is exempt).

use core::net::IpAddr;

use crate::collections::HashMap;

use super::{InboundError, InboundLimits};

/// The subnets one inbound address counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subnet {
    V4(u32),
    V6Slash56(u64),
    V6Slash48(u64),
}

/// Live inbound connections per subnet, and those still upgrading.
#[derive(Debug, Default)]
pub(super) struct InboundCounts {
    pending: usize,
    subnets: HashMap<Subnet, usize>,
}

fn subnets(ip: IpAddr) -> impl Iterator<Item = Subnet> {
    let (a, b, c) = match ip {
        IpAddr::V4(v4) => (Some(Subnet::V4(u32::from(v4))), None, None),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (
                None,
                Some(Subnet::V6Slash56((bits >> 72) as u64)),
                Some(Subnet::V6Slash48((bits >> 80) as u64)),
            )
        }
    };
    [a, b, c].into_iter().flatten()
}

fn limit(limits: &InboundLimits, s: Subnet) -> usize {
    match s {
        Subnet::V4(_) => limits.per_ipv4,
        Subnet::V6Slash56(_) => limits.per_ipv6_56,
        Subnet::V6Slash48(_) => limits.per_ipv6_48,
    }
}

impl InboundCounts {
    /// Admits a connection from `remote` (a binary multiaddr) or says why
    /// not. On success returns the IP it counts against (none for loopback
    /// or non-IP addresses); pass it to [`leave`](Self::leave) later.
    pub(super) fn admit(
        &mut self,
        limits: &InboundLimits,
        remote: &[u8],
    ) -> Result<Option<IpAddr>, InboundError> {
        if self.pending >= limits.max_pending {
            return Err(InboundError::PendingLimit);
        }
        let ip = match crate::addr::classify(remote) {
            Ok(info) if info.scope != crate::addr::Scope::Loopback => match info.host {
                crate::addr::Host::Ip(ip) => Some(ip),
                _ => None,
            },
            _ => None,
        };
        if let Some(ip) = ip {
            for s in subnets(ip) {
                if self.subnets.get(&s).copied().unwrap_or(0) >= limit(limits, s) {
                    return Err(InboundError::SubnetLimit);
                }
            }
            for s in subnets(ip) {
                *self.subnets.entry(s).or_default() += 1;
            }
        }
        self.pending += 1;
        Ok(ip)
    }

    /// An admitted connection finished its upgrade (or gave up on it).
    pub(super) fn upgraded(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// An admitted connection is gone.
    pub(super) fn leave(&mut self, ip: IpAddr) {
        for s in subnets(ip) {
            if let Some(n) = self.subnets.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.subnets.remove(&s);
                }
            }
        }
    }
}
