//! Outbound dials: the node's side of [`dial::Dialer`] (ranking, per-peer
//! workers, limits, backoff, black-hole detection), and the one case the
//! dialer cannot serve, a dial to an address whose peer id is unknown.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::{
    addr_peer, split_p2p, Action, AttemptError, Conn, ConnState, ConnectionId, DialError, DialId,
    Endpoint, Event, Node, Origin, TimerKey, TransportError, UpgradeError,
};
use crate::dial::{self, AddrFailure, DialErrorCause};
use crate::identity::PeerId;
use crate::security::noise::NoiseError;
use crate::security::plaintext::PlaintextError;
use crate::time::Instant;

/// A dial without a peer id: there is no peer to key workers, dial sync or
/// backoff on, so its addresses are tried one at a time in ranked order,
/// each with the dialer's per-attempt timeout.
#[derive(Debug)]
pub(super) struct Peerless {
    addrs: VecDeque<Vec<u8>>,
    current: Option<Vec<u8>>,
    pub(super) errors: Vec<(Vec<u8>, AttemptError)>,
}

impl Node {
    /// Connects to a peer. With `peer` (or a `/p2p/<id>` suffix on the
    /// addresses) the dial goes through the dialer: addresses are ranked
    /// (QUIC before TCP, happy eyeballs, relays last), dialed in batches,
    /// limited, backed off after failures and filtered by black-hole
    /// detection; concurrent dials to one peer share one worker; the
    /// connection must authenticate as that peer. An existing connection
    /// answers at once. Without any peer id, addresses are tried one after
    /// another. The answer is [`Event::Dialed`] or [`Event::DialFailed`].
    pub fn dial(
        &mut self,
        now: Instant,
        peer: Option<PeerId>,
        addrs: Vec<Vec<u8>>,
    ) -> Result<DialId, DialError> {
        self.dial_with_opts(now, peer, addrs, dial::DialOpts::default())
    }

    /// [`dial`](Self::dial) with options (force a direct dial past backoff,
    /// dial every address at once, a custom deadline).
    pub fn dial_with_opts(
        &mut self,
        now: Instant,
        peer: Option<PeerId>,
        addrs: Vec<Vec<u8>>,
        opts: dial::DialOpts,
    ) -> Result<DialId, DialError> {
        let now = self.tick(now);
        if self.closing {
            return Err(DialError::ShuttingDown);
        }
        let named = peer.or_else(|| addrs.iter().find_map(|a| addr_peer(a)));
        if named == Some(self.local_peer) {
            return Err(DialError::DialSelf);
        }
        let Some(peer) = named else {
            return self.dial_peerless(addrs);
        };
        let dial = DialId(self.fresh_id());
        if let Some(conn) = self.best_connection(&peer) {
            self.events.push_back(Event::Dialed { dial, peer, conn });
            return Ok(dial);
        }
        if addrs.is_empty() {
            return Err(DialError::NoAddresses);
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(DialError::ConnectionLimit);
        }
        let mut usable = Vec::with_capacity(addrs.len());
        let mut errors = Vec::new();
        for a in addrs {
            let base = match split_p2p(&a) {
                Some((base, suffix)) if suffix.is_none_or(|s| s == peer) => base,
                _ => {
                    errors.push((a, AttemptError::InvalidAddress));
                    continue;
                }
            };
            match dial::Addr::from_bytes(base) {
                Ok(addr) => usable.push(addr),
                Err(_) => errors.push((a, AttemptError::InvalidAddress)),
            }
        }
        if usable.is_empty() {
            let cause = DialErrorCause::NoGoodAddresses;
            self.events.push_back(Event::DialFailed {
                dial,
                peer: Some(peer),
                cause,
                errors,
            });
            return Ok(dial);
        }
        let request = self
            .dialer
            .dial(now, peer, usable, opts)
            .map_err(|e| match e {
                dial::DialerError::DialToSelf => DialError::DialSelf,
                _ => DialError::TooManyRequests,
            })?;
        self.requests.insert(request, dial);
        self.drive_dialer();
        Ok(dial)
    }

    /// Whether dials of `peer` at `addr` (binary multiaddr, no `/p2p/`) are
    /// in backoff after recent failures.
    pub fn is_backed_off(&self, peer: &PeerId, addr: &[u8]) -> bool {
        dial::Addr::from_bytes(addr.to_vec())
            .is_ok_and(|a| self.dialer.backoff().is_backed_off(self.now, peer, &a))
    }

    /// The dialer (limits, backoff and black-hole state, for diagnostics).
    pub fn dialer(&self) -> &dial::Dialer {
        &self.dialer
    }

    fn dial_peerless(&mut self, addrs: Vec<Vec<u8>>) -> Result<DialId, DialError> {
        if addrs.is_empty() {
            return Err(DialError::NoAddresses);
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(DialError::ConnectionLimit);
        }
        let dial = DialId(self.fresh_id());
        // Same order the dialer would use, without its delays.
        let mut ordered: Vec<Vec<u8>> = Vec::with_capacity(addrs.len());
        let mut invalid = Vec::new();
        let valid: Vec<dial::Addr> = addrs
            .into_iter()
            .filter_map(|a| match dial::Addr::from_bytes(a.clone()) {
                Ok(x) => Some(x),
                Err(_) => {
                    invalid.push((a, AttemptError::InvalidAddress));
                    None
                }
            })
            .collect();
        ordered.extend(
            dial::rank(valid, &self.config.dialer.ranker)
                .into_iter()
                .map(|(a, _)| a.as_bytes().to_vec()),
        );
        self.peerless.insert(
            dial,
            Peerless {
                addrs: ordered.into(),
                current: None,
                errors: invalid,
            },
        );
        self.next_peerless_attempt(dial);
        Ok(dial)
    }

    fn next_peerless_attempt(&mut self, dial: DialId) {
        let Some(d) = self.peerless.get_mut(&dial) else {
            return;
        };
        if let Some(addr) = d.addrs.pop_front() {
            let conn = ConnectionId(self.next_id);
            self.next_id += 1;
            d.current = Some(addr.clone());
            let deadline = self.now + self.config.dialer.dial_timeout;
            let c = Conn::new(
                Endpoint::Dialer,
                addr.clone(),
                ConnState::Connecting,
                Origin::Peerless(dial),
                Some(deadline),
            );
            self.conns.insert(conn, c);
            self.actions.push_back(Action::Connect { conn, addr });
            self.reschedule(conn);
            return;
        }
        let d = self.peerless.remove(&dial).expect("present");
        let cause = DialErrorCause::AllDialsFailed;
        self.events.push_back(Event::DialFailed {
            dial,
            peer: None,
            cause,
            errors: d.errors,
        });
    }

    /// A dial's connection failed before it was established: record why and
    /// let the dialer (or the peerless dial) go on.
    pub(super) fn attempt_failed(&mut self, conn: ConnectionId, error: AttemptError) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(c.state, ConnState::Connecting | ConnState::Upgrading(_)) {
            return;
        }
        let origin = core::mem::replace(&mut c.origin, Origin::Abandoned);
        c.deadline = None;
        let addr = c.remote_addr.clone();
        let expected = c.expected;
        if matches!(error, AttemptError::Transport(_)) {
            // The connect failed: the adapter holds no socket.
            self.forget(conn);
        } else {
            self.shut(conn, super::CloseReason::Local);
        }
        match origin {
            Origin::Attempt(attempt) => {
                self.attempts.remove(&attempt);
                let coarse = coarse_error(&error);
                if let Some(peer) = expected {
                    let errors = self.attempt_errors.entry(peer).or_default();
                    errors.retain(|(a, _)| *a != addr);
                    errors.push((addr, error));
                }
                let _ = self.dialer.handle_dial_failed(self.now, attempt, coarse);
                self.drive_dialer();
            }
            Origin::Peerless(dial) => {
                if let Some(d) = self.peerless.get_mut(&dial) {
                    if let Some(addr) = d.current.take() {
                        d.errors.push((addr, error));
                    }
                }
                self.next_peerless_attempt(dial);
            }
            Origin::Circuit(dial) => {
                self.events.push_back(Event::CircuitDialFailed {
                    dial,
                    error: super::CircuitDialError::Upgrade(error),
                });
                self.shut(conn, super::CloseReason::Local);
            }
            Origin::Inbound | Origin::Abandoned => {}
        }
    }

    /// A connection to `peer` is established: answer whoever dialed it.
    pub(super) fn dial_succeeded(&mut self, conn: ConnectionId, origin: Origin, peer: PeerId) {
        let cref = dial::ConnectionRef(conn.get());
        match origin {
            Origin::Attempt(attempt) => {
                self.attempts.remove(&attempt);
                let _ = self.dialer.handle_dial_succeeded(self.now, attempt, cref);
            }
            Origin::Peerless(dial) => {
                self.peerless.remove(&dial);
                self.events.push_back(Event::Dialed { dial, peer, conn });
                self.dialer.handle_peer_connected(self.now, peer, cref);
            }
            Origin::Circuit(dial) => {
                self.events.push_back(Event::Dialed { dial, peer, conn });
                self.dialer.handle_peer_connected(self.now, peer, cref);
            }
            Origin::Inbound | Origin::Abandoned => {
                self.dialer.handle_peer_connected(self.now, peer, cref)
            }
        }
        self.drive_dialer();
    }

    /// Carries out the dialer's actions and turns its answers into events.
    pub(super) fn drive_dialer(&mut self) {
        while let Some(action) = self.dialer.poll_action() {
            match action {
                dial::Action::Dial {
                    attempt,
                    peer,
                    addr,
                } => {
                    let conn = ConnectionId(self.fresh_id());
                    let bytes = addr.as_bytes().to_vec();
                    let mut c = Conn::new(
                        Endpoint::Dialer,
                        bytes.clone(),
                        ConnState::Connecting,
                        Origin::Attempt(attempt),
                        None,
                    );
                    c.expected = Some(peer);
                    self.conns.insert(conn, c);
                    self.attempts.insert(attempt, conn);
                    self.actions
                        .push_back(Action::Connect { conn, addr: bytes });
                }
                dial::Action::CancelAttempt { attempt } => {
                    let Some(conn) = self.attempts.remove(&attempt) else {
                        continue;
                    };
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if matches!(c.state, ConnState::Connecting | ConnState::Upgrading(_)) {
                            c.origin = Origin::Abandoned;
                            c.deadline = None;
                            self.shut(conn, super::CloseReason::Local);
                        }
                    }
                }
            }
        }
        while let Some(event) = self.dialer.poll_event() {
            let dial::Event::RequestDone {
                request,
                peer,
                result,
            } = event;
            let Some(dial) = self.requests.remove(&request) else {
                continue;
            };
            match result {
                Ok(cref) => self.events.push_back(Event::Dialed {
                    dial,
                    peer,
                    conn: ConnectionId(cref.0),
                }),
                Err(err) => {
                    let errors = err
                        .errors
                        .into_iter()
                        .map(|(addr, failure)| {
                            let bytes = addr.as_bytes().to_vec();
                            let detail = match failure {
                                AddrFailure::Attempt(coarse) => self
                                    .attempt_errors
                                    .get_mut(&peer)
                                    .and_then(|list| {
                                        let at = list.iter().position(|(a, _)| *a == bytes)?;
                                        Some(list.swap_remove(at).1)
                                    })
                                    .unwrap_or_else(|| from_coarse(coarse)),
                                AddrFailure::TimedOut => AttemptError::Timeout,
                                AddrFailure::Backoff => AttemptError::Backoff,
                                AddrFailure::BlackHoled => AttemptError::BlackHoled,
                                _ => AttemptError::TooManyDials,
                            };
                            (bytes, detail)
                        })
                        .collect();
                    self.events.push_back(Event::DialFailed {
                        dial,
                        peer: Some(peer),
                        cause: err.cause,
                        errors,
                    });
                }
            }
            if !self.dialer.is_dialing(&peer) {
                self.attempt_errors.remove(&peer);
            }
        }
        self.reschedule_dialer();
    }

    fn reschedule_dialer(&mut self) {
        let wanted = self.dialer.poll_timeout();
        if wanted != self.dialer_timer {
            if let Some(old) = self.dialer_timer {
                self.timers.remove(&(old, TimerKey::Dialer));
            }
            if let Some(new) = wanted {
                self.timers.insert((new, TimerKey::Dialer));
            }
            self.dialer_timer = wanted;
        }
    }
}

/// What the dialer needs to know of a failure (it decides backoff on it).
fn coarse_error(e: &AttemptError) -> dial::FailureClass {
    match e {
        AttemptError::Transport(TransportError::Refused) => dial::FailureClass::Refused,
        AttemptError::Transport(TransportError::Unreachable) => dial::FailureClass::Unreachable,
        AttemptError::Transport(TransportError::Unsupported) | AttemptError::InvalidAddress => {
            dial::FailureClass::NoTransport
        }
        AttemptError::Timeout | AttemptError::Upgrade(UpgradeError::Timeout) => {
            dial::FailureClass::Timeout
        }
        AttemptError::Upgrade(
            UpgradeError::Plaintext(PlaintextError::UnexpectedPeer { .. })
            | UpgradeError::Noise(NoiseError::UnexpectedPeer { .. }),
        ) => dial::FailureClass::WrongPeer,
        AttemptError::Upgrade(_) => dial::FailureClass::Upgrade,
        _ => dial::FailureClass::Other,
    }
}

fn from_coarse(e: dial::FailureClass) -> AttemptError {
    match e {
        dial::FailureClass::Refused => AttemptError::Transport(TransportError::Refused),
        dial::FailureClass::Unreachable => AttemptError::Transport(TransportError::Unreachable),
        dial::FailureClass::NoTransport => AttemptError::Transport(TransportError::Unsupported),
        dial::FailureClass::Timeout => AttemptError::Timeout,
        _ => AttemptError::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn reaching_the_wrong_peer_is_one_class_whatever_the_security() {
        let (a, b) = (
            Keypair::from_secret_bytes([1; 32]).peer_id(),
            Keypair::from_secret_bytes([2; 32]).peer_id(),
        );
        let plaintext = PlaintextError::UnexpectedPeer {
            expected: a,
            actual: b,
        };
        let noise = NoiseError::UnexpectedPeer {
            expected: a,
            found: b,
        };
        for e in [
            UpgradeError::Plaintext(plaintext),
            UpgradeError::Noise(noise),
        ] {
            assert_eq!(
                coarse_error(&AttemptError::Upgrade(e)),
                dial::FailureClass::WrongPeer
            );
        }
    }
}
