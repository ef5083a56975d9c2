//! The connection manager inside the node: [`ConnManager`] hears every
//! connection open and close on its way out of the node, holds the same
//! protection tags as [`Node::protect`] (static peers, AutoRelay's relays,
//! the application's), and the connections it picks are closed with
//! [`CloseReason::Trimmed`].

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{CloseReason, ConnectionId, Endpoint, Event, Node, TimerKey};
use crate::identity::PeerId;
use crate::peers::connmgr::{
    Action, ConnManager, ConnManagerConfig, ConnManagerConfigError, TagError,
};
use crate::time::Instant;

#[derive(Debug)]
pub(super) struct Trim {
    manager: ConnManager<ConnectionId>,
    timer: Option<Instant>,
}

impl Node {
    /// The connection manager of [`enable_conn_manager`](Self::enable_conn_manager).
    pub fn conn_manager(&self) -> Option<&ConnManager<ConnectionId>> {
        self.trim.as_ref().map(|t| &t.manager)
    }

    /// Starts go-libp2p's connection manager: above `high_water`
    /// connections, the least valuable are closed down to `low_water`
    /// ([`CloseReason::Trimmed`]); protected peers and connections younger
    /// than the grace period never are. Connections open now count.
    pub fn enable_conn_manager(
        &mut self,
        now: Instant,
        config: ConnManagerConfig,
    ) -> Result<(), ConnManagerConfigError> {
        let now = self.tick(now);
        let mut manager = ConnManager::new(now, config)?;
        for (peer, tags) in &self.protected {
            for tag in tags {
                let _ = manager.protect(*peer, tag);
            }
        }
        let mut open: Vec<(ConnectionId, PeerId, bool)> = Vec::new();
        for (peer, conns) in &self.peers {
            for conn in conns {
                if let Some(c) = self.conns.get(conn) {
                    open.push((*conn, *peer, c.endpoint == Endpoint::Listener));
                }
            }
        }
        open.sort();
        for (conn, peer, inbound) in open {
            manager.handle_connected(now, conn, peer, inbound);
        }
        self.trim = Some(Box::new(Trim {
            manager,
            timer: None,
        }));
        self.run_trim();
        Ok(())
    }

    /// Gives `peer` a tag with `weight` (its value is the sum of its tags;
    /// the least valuable are trimmed first).
    pub fn tag_peer(&mut self, peer: PeerId, tag: &str, weight: i32) -> Result<(), TagError> {
        let Some(t) = self.trim.as_mut() else {
            return Ok(());
        };
        t.manager.tag_peer(peer, tag, weight)
    }

    pub(super) fn trim_protect(&mut self, peer: PeerId, tag: &str, on: bool) {
        let Some(t) = self.trim.as_mut() else {
            return;
        };
        if on {
            let _ = t.manager.protect(peer, tag);
        } else {
            t.manager.unprotect(&peer, tag);
        }
        self.run_trim();
    }

    pub(super) fn trim_timeout(&mut self, now: Instant) {
        let Some(t) = self.trim.as_mut() else {
            return;
        };
        t.timer = None;
        t.manager.handle_timeout(now);
        self.run_trim();
    }

    /// An event on its way to the application: connections opening and
    /// closing.
    pub(super) fn trim_observe(&mut self, event: &Event) {
        let now = self.now;
        let Some(t) = self.trim.as_mut() else {
            return;
        };
        match event {
            Event::ConnectionEstablished {
                conn,
                peer,
                endpoint,
                ..
            } => t
                .manager
                .handle_connected(now, *conn, *peer, *endpoint == Endpoint::Listener),
            Event::ConnectionClosed { conn, .. } => t.manager.handle_disconnected(now, *conn),
            _ => return,
        }
        self.run_trim();
    }

    fn run_trim(&mut self) {
        loop {
            let Some(t) = self.trim.as_mut() else {
                return;
            };
            let mut closes = Vec::new();
            while let Some(Action::Close { conn, .. }) = t.manager.poll_action() {
                closes.push(conn);
            }
            while t.manager.poll_event().is_some() {}
            if closes.is_empty() {
                break;
            }
            for conn in closes {
                self.close_with(conn, CloseReason::Trimmed);
            }
        }
        let Some(t) = self.trim.as_mut() else {
            return;
        };
        let next = t.manager.poll_timeout();
        if next != t.timer {
            if let Some(old) = t.timer.take() {
                self.timers.remove(&(old, TimerKey::Trim));
            }
            if let Some(at) = next {
                t.timer = Some(at);
                self.timers.insert((at, TimerKey::Trim));
            }
        }
    }

    /// Closes `conn` with a GoAway, for `reason`.
    pub(super) fn close_with(&mut self, conn: ConnectionId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let super::ConnState::Muxed(session) = &mut c.state {
            let _ = session.go_away(crate::yamux::GoAwayCode::NORMAL);
        }
        self.shut(conn, reason);
    }
}
