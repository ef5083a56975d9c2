//! The js-libp2p peer of go-filecoin's heartbeat protocol
//! (`fil/heartbeat/1.0.0`), `conformance/js/heartbeat.mjs`, as a child
//! process: always an aggregator (it prints every heartbeat it receives as a
//! `beat` event), and a beater on command (`beat MULTIADDR PERIOD_MS
//! [NICKNAME]`, `stop`). The command and event protocol is described at the
//! top of `heartbeat.mjs`; [`HeartbeatPeer`] drives it, see
//! `tests/heartbeat_peers.rs`.
//!
//! The js peer is installed on first use (`npm ci`, see [`node_binary`]).

use std::process::Command;

use serde_json::Value;

use crate::peer_process::{js_dir, node_binary, Inbox, PeerProcess, TIMEOUT};
use crate::relay_peer::peer_id_of_seed;

/// The heartbeat protocol id (no leading slash, as go-filecoin names it).
pub const HEARTBEAT_PROTOCOL: &str = "fil/heartbeat/1.0.0";

/// A running `heartbeat.mjs`, killed when dropped.
#[derive(Debug)]
pub struct HeartbeatPeer {
    /// The process.
    pub process: PeerProcess,
    /// Its peer id.
    pub peer: String,
    /// Its listen address, with `/p2p/<peer>`.
    pub addr: String,
}

impl HeartbeatPeer {
    /// A peer with identity `[seed; 32]` listening on loopback TCP `port`
    /// (0 picks a free one; give a restarted peer its old [`port`] back).
    ///
    /// [`port`]: HeartbeatPeer::port
    ///
    /// # Panics
    /// If it does not start and say `ready` with that identity and port.
    pub fn spawn(seed: u8, port: u16) -> HeartbeatPeer {
        let mut cmd = Command::new(node_binary());
        cmd.arg("heartbeat.mjs").current_dir(js_dir()).args([
            "--seed",
            &seed.to_string(),
            "--port",
            &port.to_string(),
        ]);
        let name = format!("the js heartbeat peer (seed {seed})");
        let process = PeerProcess::spawn(&name, cmd, TIMEOUT);
        let ready = process.wait_event("the peer to start", |e| e["event"] == "ready");
        let peer = ready["peer"].as_str().expect("a peer id").to_owned();
        assert_eq!(peer, peer_id_of_seed(seed).to_string(), "{ready}");
        assert_eq!(ready["impl"], "js", "{ready}");
        let addr = ready["addrs"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {ready}"))
            .to_owned();
        assert!(addr.ends_with(&format!("/p2p/{peer}")), "{ready}");
        let peer = HeartbeatPeer {
            process,
            peer,
            addr,
        };
        if port != 0 {
            assert_eq!(peer.port(), port, "{ready}");
        }
        peer
    }

    /// Its peer id, parsed.
    pub fn id(&self) -> sansp2p::PeerId {
        self.peer.parse().expect("a peer id")
    }

    /// The TCP port it listens on.
    ///
    /// # Panics
    /// If its address is not `/ip4/<ip>/tcp/<port>/...`.
    pub fn port(&self) -> u16 {
        let parts: Vec<&str> = self.addr.split('/').collect();
        match parts.as_slice() {
            ["", "ip4", _, "tcp", port, ..] => port.parse().expect("a port number"),
            _ => panic!("not a TCP address: {}", self.addr),
        }
    }

    /// Sends a command that must succeed; returns its result line.
    pub fn ok(&mut self, line: &str) -> Value {
        self.process.ok(line)
    }

    /// Sends a command; returns its result line, whatever it says.
    pub fn command(&mut self, line: &str) -> Value {
        self.process.command(line)
    }

    /// The first event (since the start) that `matches`, waiting for it.
    pub fn wait_event(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.process.wait_event(what, matches)
    }

    /// The first event from the `from`th on (counting from 0, as an index
    /// into [`events`]) that `matches`, waiting for it; with the length of
    /// [`events`] taken earlier, the first such event after that moment.
    ///
    /// [`events`]: HeartbeatPeer::events
    pub fn wait_event_since(
        &self,
        from: usize,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        self.process.wait(what, |inbox| {
            inbox.events.iter().skip(from).find(|e| matches(e)).cloned()
        })
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.process.events()
    }

    /// The peer's recent events and its standard error.
    pub fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }

    /// The heartbeats received from `peer` (an id) so far, parsed, in the
    /// order they arrived (over every stream).
    pub fn beats_from(&self, peer: &str) -> Vec<Value> {
        beats_in(&self.process.events(), peer)
    }

    /// Waits until at least `count` heartbeats have come from `peer`;
    /// returns all of them so far, as [`HeartbeatPeer::beats_from`].
    pub fn wait_beats_from(&self, peer: &str, count: usize) -> Vec<Value> {
        self.process.wait(
            &format!("{count} heartbeats from {peer}"),
            |inbox: &mut Inbox| {
                let beats = beats_in(&inbox.events, peer);
                (beats.len() >= count).then_some(beats)
            },
        )
    }

    /// Starts beating to `aggregator` (an address with `/p2p/<id>`) every
    /// `period_ms`, as `nickname`; returns the target peer id.
    pub fn beat(&mut self, aggregator: &str, period_ms: u64, nickname: &str) -> String {
        let r = self.ok(&format!("beat {aggregator} {period_ms} {nickname}"));
        r["target"].as_str().expect("the target").to_owned()
    }
}

/// The `beat` objects of the `beat` events from `peer` among `events`.
fn beats_in(events: &[Value], peer: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == "beat" && e["peer"] == peer)
        .map(|e| e["beat"].clone())
        .collect()
}
