//! Shutting a node down gracefully: no new connections, every connection
//! closed with a GoAway and flushed, listeners released, and one event when
//! the last socket may go.

use alloc::vec::Vec;

use super::{Action, CloseReason, DialId, Event, ListenerId, Node, TimerKey};
use crate::dial::DialErrorCause;
use crate::time::Instant;

impl Node {
    /// Shuts the node down. Dials under way fail with
    /// [`DialErrorCause::Cancelled`]; every connection is closed as
    /// [`Node::close_connection`] does (GoAway, what is owed flushed, FIN,
    /// linger); each bound listener gets [`Action::StopListening`]; AutoRelay,
    /// the heartbeat, peer maintenance and the connection manager stop.
    /// From then on, dials are refused with
    /// [`DialError::ShuttingDown`](super::DialError::ShuttingDown), inbound
    /// sockets with
    /// [`InboundError::ShuttingDown`](super::InboundError::ShuttingDown) and
    /// new listeners fail at once. [`Event::ShutdownComplete`] follows once
    /// the node holds no connection (at once if it holds none), bounded by
    /// the close flush timeout plus the linger. Calling it again does
    /// nothing.
    ///
    /// ```
    /// use sansp2p::identity::Keypair;
    /// use sansp2p::node::{Config, Event, Node};
    /// use sansp2p::Instant;
    ///
    /// let now = Instant::ZERO;
    /// let mut config = Config::new(Keypair::from_secret_bytes([7; 32]));
    /// config.rng_seed = [1; 32];
    /// let mut node = Node::new(now, config).unwrap();
    /// node.shutdown(now);
    /// assert!(node.is_shut_down());
    /// assert_eq!(node.poll_event(), Some(Event::ShutdownComplete));
    /// ```
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.tick(now);
        if self.closing {
            return;
        }
        self.closing = true;
        // The machines that would dial again or reopen streams go first.
        self.autorelay = None;
        self.liveness = None;
        self.maintain = None;
        self.trim = None;
        self.timers.retain(|(_, key)| {
            !matches!(
                key,
                TimerKey::AutoRelay | TimerKey::Liveness | TimerKey::Maintain | TimerKey::Trim
            )
        });
        let requests: Vec<_> = self.requests.keys().copied().collect();
        for request in requests {
            let _ = self.dialer.cancel(now, request);
        }
        self.drive_dialer();
        let peerless: Vec<DialId> = self.peerless.keys().copied().collect();
        for dial in peerless {
            if let Some(d) = self.peerless.remove(&dial) {
                self.events.push_back(Event::DialFailed {
                    dial,
                    peer: None,
                    cause: DialErrorCause::Cancelled,
                    errors: d.errors,
                });
            }
        }
        let conns: Vec<_> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_with(conn, CloseReason::Local);
        }
        for (listener, _) in core::mem::take(&mut self.listeners) {
            self.actions.push_back(Action::StopListening { listener });
        }
        self.listen_addrs.clear();
        self.check_shut_down();
    }

    /// Whether [`shutdown`](Self::shutdown) was called and no connection is
    /// left.
    pub fn is_shut_down(&self) -> bool {
        self.closing && self.conns.is_empty()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.closing
    }

    /// After a connection is forgotten: the last one ends the shutdown.
    pub(super) fn check_shut_down(&mut self) {
        if self.is_shut_down() && !self.shutdown_reported {
            self.shutdown_reported = true;
            self.events.push_back(Event::ShutdownComplete);
        }
    }

    /// A listener bound while shutting down is released at once.
    pub(super) fn listening_while_closing(&mut self, listener: ListenerId) -> bool {
        if self.closing {
            self.actions.push_back(Action::StopListening { listener });
        }
        self.closing
    }
}
