//! AutoRelay inside the node: the [`Finder`] fed from the node's own
//! events and its actions executed with the node's dialer and relay
//! client, so every adapter gets it by one call to
//! [`Node::enable_autorelay`].
//!
//! The finder watches each event on its way out of the node (identify,
//! ping, disconnections, reservation outcomes, the finder's own dials);
//! its actions become dials, reservations and protection tags, and its
//! peer-source queries become [`Event::RelayCandidatesWanted`], which the
//! application answers with [`Node::add_relay_candidates`].

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::collections::HashMap;

use super::{DialId, Event, Node, TimerKey};
use crate::identity::PeerId;
use crate::relay::finder::{
    Action, Finder, FinderConfig, FinderConfigError, Granted, PeerInfo, Reachability,
    ReserveFailure, PROTECT_TAG,
};
use crate::relay::{RelayError, WallClock, HOP_PROTOCOL};
use crate::time::Instant;

/// The node's side of the finder.
#[derive(Debug)]
pub(super) struct AutoRelay {
    finder: Finder,
    clock: WallClock,
    /// Dials made for the finder, and what follows them.
    dials: HashMap<DialId, (PeerId, Then)>,
    /// The finder's deadline registered in the timer table.
    timer: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Identify follows the connection.
    Probe,
    /// Reserve once connected.
    Reserve,
}

impl Node {
    // ------------------------------------------------------------ getters

    /// The relay finder, when [`enable_autorelay`](Self::enable_autorelay)
    /// started it: its relays, candidates and addresses.
    pub fn autorelay(&self) -> Option<&Finder> {
        self.autorelay.as_deref().map(|a| &a.finder)
    }

    // ------------------------------------------------------------ commands

    /// Starts AutoRelay: the node looks for relays (the config's static
    /// relays, else peers it meets that speak the hop protocol and those
    /// the application supplies on [`Event::RelayCandidatesWanted`]), keeps
    /// reservations with them, refreshes and replaces them, and reports
    /// [`Event::AutoRelay`]. It runs while reachability is not
    /// [`Public`](Reachability::Public). `clock` dates reservations.
    pub fn enable_autorelay(
        &mut self,
        now: Instant,
        clock: WallClock,
        config: FinderConfig,
    ) -> Result<(), FinderConfigError> {
        let now = self.tick(now);
        let finder = Finder::new(now, config)?;
        self.autorelay = Some(Box::new(AutoRelay {
            finder,
            clock,
            dials: HashMap::default(),
            timer: None,
        }));
        // Peers already identified are candidates now.
        let known: Vec<(PeerId, bool)> = self
            .peer_protocols
            .iter()
            .map(|(p, protos)| (*p, protos.iter().any(|x| x == HOP_PROTOCOL)))
            .collect();
        for (peer, supports_hop) in known {
            let direct = self.direct_connection(&peer).is_some();
            self.feed_finder(|f, now| {
                let info = PeerInfo {
                    direct,
                    supports_hop,
                    addrs: Vec::new(),
                    rtt: None,
                };
                f.handle_identified(now, peer, info);
            });
        }
        self.run_finder();
        Ok(())
    }

    /// Tells AutoRelay whether we are publicly reachable (from AutoNAT or
    /// the application); `Private` forces it on, `Public` stops it.
    pub fn set_reachability(&mut self, now: Instant, reachability: Reachability) {
        self.tick(now);
        self.feed_finder(|f, now| f.handle_reachability(now, reachability));
    }

    /// Answers [`Event::RelayCandidatesWanted`]: peers (with addresses) that
    /// might be relays; they are probed. More batches may follow.
    pub fn add_relay_candidates(&mut self, now: Instant, peers: Vec<(PeerId, Vec<Vec<u8>>)>) {
        self.tick(now);
        self.feed_finder(|f, now| f.handle_peer_source(now, peers));
    }

    /// The application has no more candidates for the last
    /// [`Event::RelayCandidatesWanted`].
    pub fn relay_candidates_exhausted(&mut self, now: Instant) {
        self.tick(now);
        self.feed_finder(|f, now| f.handle_peer_source_exhausted(now));
    }

    // ------------------------------------------------------------ internals

    /// The finder's deadline passed.
    pub(super) fn autorelay_timeout(&mut self, now: Instant) {
        if let Some(a) = self.autorelay.as_mut() {
            a.timer = None;
        }
        self.feed_finder(|f, _| f.handle_timeout(now));
    }

    /// Feeds the finder one input, then carries out what it asks.
    fn feed_finder(&mut self, input: impl FnOnce(&mut Finder, Instant)) {
        let now = self.now;
        let Some(a) = self.autorelay.as_mut() else {
            return;
        };
        input(&mut a.finder, now);
        self.run_finder();
    }

    /// An event on its way to the application: what the finder learns
    /// from it.
    pub(super) fn autorelay_observe(&mut self, event: &Event) {
        if self.autorelay.is_none() {
            return;
        }
        match event {
            Event::Identified { peer, conn, info } => {
                let info = PeerInfo {
                    direct: !self.is_relayed(*conn),
                    supports_hop: info.protocols.iter().any(|p| p == HOP_PROTOCOL),
                    addrs: info.listen_addrs.clone(),
                    rtt: None,
                };
                let peer = *peer;
                self.feed_finder(|f, now| f.handle_identified(now, peer, info));
            }
            Event::PingSuccess { peer, rtt, .. } => {
                let (peer, rtt) = (*peer, *rtt);
                self.feed_finder(|f, _| f.handle_rtt(peer, rtt));
            }
            Event::ConnectionClosed {
                peer: Some(peer), ..
            } if self.connections_to(peer).next().is_none() => {
                let peer = *peer;
                self.feed_finder(|f, now| f.handle_disconnected(now, peer));
            }
            Event::ReservationLost { relay } => {
                let relay = *relay;
                self.feed_finder(|f, now| f.handle_disconnected(now, relay));
            }
            Event::ReservationAccepted { relay, reservation } => {
                let granted = Granted {
                    expire: reservation.expire,
                    addrs: reservation.addrs.clone(),
                };
                let relay = *relay;
                self.feed_finder(|f, now| f.handle_reservation(now, relay, Ok(granted)));
            }
            Event::ReservationFailed { relay, error } => {
                let failure = failure_of(error);
                let relay = *relay;
                self.feed_finder(|f, now| f.handle_reservation(now, relay, Err(failure)));
            }
            Event::Dialed { dial, peer, .. } => {
                let Some((_, then)) = self.autorelay.as_mut().and_then(|a| a.dials.remove(dial))
                else {
                    return;
                };
                match then {
                    // A new connection brings identify; an existing one
                    // already did.
                    Then::Probe => self.probe_known(*peer),
                    Then::Reserve => self.reserve_for_finder(*peer),
                }
            }
            Event::DialFailed { dial, .. } => {
                let Some((peer, then)) = self.autorelay.as_mut().and_then(|a| a.dials.remove(dial))
                else {
                    return;
                };
                self.feed_finder(|f, now| match then {
                    Then::Probe => f.handle_probe_failed(now, peer),
                    Then::Reserve => {
                        f.handle_reservation(now, peer, Err(ReserveFailure::Unreachable))
                    }
                });
            }
            _ => {}
        }
    }

    /// Carries out the finder's actions and hands on its events, until it
    /// has none; then registers its deadline.
    fn run_finder(&mut self) {
        loop {
            let Some(a) = self.autorelay.as_mut() else {
                return;
            };
            let mut actions = Vec::new();
            while let Some(action) = a.finder.poll_action() {
                actions.push(action);
            }
            while let Some(event) = a.finder.poll_event() {
                self.events.push_back(Event::AutoRelay(event));
            }
            if actions.is_empty() {
                break;
            }
            for action in actions {
                self.finder_action(action);
            }
        }
        let Some(a) = self.autorelay.as_mut() else {
            return;
        };
        let next = a.finder.poll_timeout();
        if next != a.timer {
            if let Some(old) = a.timer.take() {
                self.timers.remove(&(old, TimerKey::AutoRelay));
            }
            if let Some(at) = next {
                a.timer = Some(at);
                self.timers.insert((at, TimerKey::AutoRelay));
            }
        }
    }

    fn finder_action(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::QueryPeerSource { max } => {
                self.events.push_back(Event::RelayCandidatesWanted { max });
            }
            Action::Probe { peer, addrs } => {
                if self.direct_connection(&peer).is_some() {
                    self.probe_known(peer);
                } else {
                    self.dial_for_finder(now, peer, addrs, Then::Probe);
                }
            }
            Action::Reserve { peer, addrs } => {
                if self.direct_connection(&peer).is_some() {
                    self.reserve_for_finder(peer);
                } else {
                    self.dial_for_finder(now, peer, addrs, Then::Reserve);
                }
            }
            Action::Refresh { peer } => self.reserve_for_finder(peer),
            Action::Protect { peer } => self.protect(peer, PROTECT_TAG),
            Action::Unprotect { peer } => {
                self.unprotect(&peer, PROTECT_TAG);
            }
        }
    }

    fn dial_for_finder(&mut self, now: Instant, peer: PeerId, addrs: Vec<Vec<u8>>, then: Then) {
        match self.dial(now, Some(peer), addrs) {
            Ok(dial) => {
                if let Some(a) = self.autorelay.as_mut() {
                    a.dials.insert(dial, (peer, then));
                }
            }
            Err(_) => {
                let Some(a) = self.autorelay.as_mut() else {
                    return;
                };
                match then {
                    Then::Probe => a.finder.handle_probe_failed(now, peer),
                    Then::Reserve => {
                        let failure = Err(ReserveFailure::Unreachable);
                        a.finder.handle_reservation(now, peer, failure);
                    }
                }
            }
        }
    }

    /// A probe reached a peer we are already connected to: what identify
    /// told us then is the answer.
    fn probe_known(&mut self, peer: PeerId) {
        let supports_hop = self
            .peer_protocols
            .get(&peer)
            .map(|protos| protos.iter().any(|p| p == HOP_PROTOCOL));
        let direct = self.direct_connection(&peer).is_some();
        let Some(a) = self.autorelay.as_mut() else {
            return;
        };
        let now = self.now;
        // Not identified yet: the Identified event will answer.
        if let Some(supports_hop) = supports_hop {
            let info = PeerInfo {
                direct,
                supports_hop,
                addrs: Vec::new(),
                rtt: None,
            };
            a.finder.handle_identified(now, peer, info);
        }
    }

    fn reserve_for_finder(&mut self, peer: PeerId) {
        let now = self.now;
        let Some(clock) = self.autorelay.as_ref().map(|a| a.clock) else {
            return;
        };
        match self.reserve(now, clock, peer) {
            // A reservation under way (the application's) answers for both.
            Ok(()) | Err(super::RelayCommandError::ReservePending) => {}
            Err(_) => {
                if let Some(a) = self.autorelay.as_mut() {
                    let failure = Err(ReserveFailure::Unreachable);
                    a.finder.handle_reservation(now, peer, failure);
                }
            }
        }
    }
}

/// A refusal or a bad answer backs the relay off; a broken exchange does not.
fn failure_of(error: &RelayError) -> ReserveFailure {
    match error {
        RelayError::Timeout | RelayError::Closed => ReserveFailure::Unreachable,
        _ => ReserveFailure::Refused,
    }
}
