//! The real circuit-relay-v2 peers of `tests/relay_peers.rs` and
//! `tests/relay_interop.rs`: js-libp2p (`conformance/js/relay.mjs`) and
//! rust-libp2p (the `rust_relay_peer` binary, [`crate::rust_relay_peer`]),
//! child processes that speak the same JSON-lines protocol (described at
//! the top of `relay.mjs`), so that [`RelayPeer`] drives either. Also the
//! checks both test files make of what the peers report, and a voucher
//! opener built on rust-libp2p's envelope code.
//!
//! The js peer is installed on first use (`npm ci`, see
//! [`node_binary`]); the rust peer is the `rust_relay_peer` binary that
//! cargo builds next to the integration tests ([`rust_relay_peer_binary`]).

use libp2p::core::SignedEnvelope;
use libp2p::PeerId;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

use crate::peer_process::{fnv1a, js_dir, node_binary, pseudo_random_bytes, PeerProcess, TIMEOUT};

/// 1024 bytes.
pub const KIB: u64 = 1024;
/// 1024 KiB.
pub const MIB: u64 = 1024 * 1024;
/// The default data limit of both relays (js-libp2p's and rust-libp2p's).
pub const DEFAULT_DATA_LIMIT: u64 = 128 * KIB;
/// js-libp2p's relay's default duration limit as it writes it into
/// `Limit.duration`: milliseconds, where the spec and rust-libp2p say
/// seconds.
pub const JS_DEFAULT_DURATION_FIELD: u64 = 120_000;
/// rust-libp2p's relay's default duration limit, in seconds.
pub const RUST_DEFAULT_DURATION_SECS: u64 = 120;
/// The signed-envelope domain of reservation vouchers.
pub const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";
/// The payload type of a voucher envelope.
pub const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

// ---------------------------------------------------------------------------
// The peers

/// Which libp2p implementation a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// js-libp2p, `conformance/js/relay.mjs`.
    Js,
    /// rust-libp2p, the `rust_relay_peer` binary.
    Rust,
}

impl Impl {
    /// `"js"` or `"rust"`, as the peers' `ready` line says.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Js => "js",
            Impl::Rust => "rust",
        }
    }
}

/// The `rust_relay_peer` binary: cargo builds a package's binaries for its
/// integration tests, into the directory above the tests' own (`deps`).
///
/// # Panics
/// If it is not there.
pub fn rust_relay_peer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("rust_relay_peer{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test binary is in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: cargo builds it for the integration tests of sansp2p-conformance",
        bin.display()
    );
    bin
}

/// The peer id of the Ed25519 identity `[seed; 32]`, in every stack.
pub fn peer_id_of_seed(seed: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([seed; 32])
        .expect("a valid secret")
        .public()
        .to_peer_id()
}

/// A running relay peer (relay.mjs or rust_relay_peer), killed when dropped.
#[derive(Debug)]
pub struct RelayPeer {
    /// The process.
    pub process: PeerProcess,
    /// Its implementation.
    pub imp: Impl,
    /// Its peer id.
    pub peer: String,
    /// Its listen address, with `/p2p/<peer>`.
    pub addr: String,
}

impl RelayPeer {
    /// A peer with identity `[seed; 32]` and the given extra flags
    /// (`--relay-server` and its limits).
    ///
    /// # Panics
    /// If it does not start and say `ready` with that identity.
    pub fn spawn(imp: Impl, seed: u8, flags: &[String]) -> RelayPeer {
        let mut cmd = match imp {
            Impl::Js => {
                let mut cmd = Command::new(node_binary());
                cmd.arg("relay.mjs").current_dir(js_dir());
                cmd
            }
            Impl::Rust => Command::new(rust_relay_peer_binary()),
        };
        let name = format!("the {} peer (seed {seed})", imp.name());
        cmd.args(["--seed", &seed.to_string()]).args(flags);
        let process = PeerProcess::spawn(&name, cmd, TIMEOUT);
        let ready = process.wait_event("the peer to start", |e| e["event"] == "ready");
        let peer = ready["peer"].as_str().expect("a peer id").to_owned();
        // The same 32-byte seed makes the same identity in every stack.
        assert_eq!(peer, peer_id_of_seed(seed).to_string(), "{ready}");
        assert_eq!(ready["impl"], imp.name(), "{ready}");
        let addr = ready["addrs"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {ready}"))
            .to_owned();
        assert!(addr.ends_with(&format!("/p2p/{peer}")), "{ready}");
        RelayPeer {
            process,
            imp,
            peer,
            addr,
        }
    }

    /// A relay server whose circuits may carry `max_data` bytes (the
    /// implementation's default if None).
    pub fn relay(imp: Impl, seed: u8, max_data: Option<u64>) -> RelayPeer {
        let mut flags = vec!["--relay-server".to_owned()];
        if let Some(bytes) = max_data {
            flags.extend(["--max-data".to_owned(), bytes.to_string()]);
        }
        Self::spawn(imp, seed, &flags)
    }

    /// A relay client only.
    pub fn client(imp: Impl, seed: u8) -> RelayPeer {
        Self::spawn(imp, seed, &[])
    }

    /// Its peer id, parsed.
    pub fn id(&self) -> sansp2p::PeerId {
        self.peer.parse().expect("a peer id")
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

    /// The peer's recent events and its standard error.
    pub fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }

    /// Reserves a slot on the relay `relay_peer` at `relay_addr` (with
    /// `/p2p/<relay_peer>`); returns the `reserve` result and the address
    /// to dial us through that relay.
    pub fn reserve_at(&mut self, relay_addr: &str, relay_peer: &str) -> (Value, String) {
        let r = self.ok(&format!("reserve {relay_addr}"));
        assert_eq!(r["relay"], relay_peer, "{r}");
        let want = format!("{relay_addr}/p2p-circuit");
        let addrs = r["addrs"].as_array().expect("addrs");
        let circuit = addrs
            .iter()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with(&want))
            .unwrap_or_else(|| panic!("no address through {relay_addr} in {r}"));
        let dial = if circuit.ends_with(&format!("/p2p/{}", self.peer)) {
            circuit.to_owned()
        } else {
            format!("{circuit}/p2p/{}", self.peer)
        };
        (r, dial)
    }

    /// Reserves a slot on `relay`, as [`RelayPeer::reserve_at`].
    pub fn reserve(&mut self, relay: &RelayPeer) -> (Value, String) {
        self.reserve_at(&relay.addr, &relay.peer)
    }

    /// Dials `addr`, a circuit address of `target` (a peer id); returns
    /// the connection, checked to be outbound, limited, noise and yamux.
    pub fn dial_relayed(&mut self, addr: &str, target: &str) -> Value {
        let r = self.ok(&format!("dial {addr}"));
        let conn = r["connection"].clone();
        assert_eq!(conn["peer"], target, "{r}");
        assert_eq!(conn["direction"], "outbound", "{r}");
        assert_eq!(conn["remoteAddr"], addr, "{r}");
        assert_eq!(conn["limited"], true, "a relayed connection: {r}");
        assert_eq!(conn["encryption"], "/noise", "{r}");
        assert_eq!(conn["multiplexer"], "/yamux/1.0.0", "{r}");
        conn
    }

    /// The open connections to `peer` (an id).
    pub fn connections(&mut self, peer: &str) -> Vec<Value> {
        let r = self.ok(&format!("connections {peer}"));
        r["connections"].as_array().expect("a list").clone()
    }

    /// An `echo` of `len` bytes from `seed` to `peer` that must pass.
    pub fn echo_ok(&mut self, peer: &str, len: u64, seed: u32) -> Value {
        let r = self.command(&format!("echo {peer} {len} {seed}"));
        check_echo(&r, len, seed, self);
        r
    }
}

// ---------------------------------------------------------------------------
// Checks

/// An `echo` result that must have passed: everything came back unchanged.
pub fn check_echo(r: &Value, len: u64, seed: u32, peer: &RelayPeer) {
    let expected = u64::from(fnv1a(&pseudo_random_bytes(len as usize, seed)));
    assert_eq!(r["ok"], true, "echo failed: {r}\n{}", peer.diagnostics());
    assert_eq!(r["len"], len, "{r}");
    assert_eq!(r["sent"], expected, "the peer generated other bytes: {r}");
    assert_eq!(r["received"], len, "short echo: {r}");
    assert_eq!(r["checksum"], expected, "corrupt echo: {r}");
}

/// An `echo` result that must have failed part-way: the circuit was closed.
pub fn check_echo_cut(r: &Value, len: u64, peer: &RelayPeer) {
    assert_eq!(
        r["ok"],
        false,
        "the echo of {len} bytes passed the relay's limit: {r}\n{}",
        peer.diagnostics()
    );
    let received = r["received"].as_u64().unwrap_or_else(|| panic!("{r}"));
    assert!(received < len, "{r}");
}

/// A rust-libp2p relay closed a circuit for its data limit (js-libp2p's
/// relay reports nothing on its side).
pub fn check_rust_relay_cut(relay: &RelayPeer, what: &str) {
    assert_eq!(relay.imp, Impl::Rust, "only rust-libp2p's relay reports it");
    let closed = relay.wait_event(&format!("{what}: circuit:closed"), |e| {
        e["event"] == "circuit:closed"
    });
    assert!(
        closed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Max circuit bytes")),
        "{what}: {closed}"
    );
}

/// The relayed connection from `from` (a peer id) through `relay` (a peer
/// id) as `at` reported it when it opened: inbound, limited, its remote
/// address `…/p2p/<relay>/p2p-circuit/p2p/<from>`.
pub fn check_inbound_relayed(at: &RelayPeer, from: &str, relay: &str) -> Value {
    let through = format!("/p2p/{relay}/p2p-circuit");
    let open = at.wait_event("the relayed connection to open", |e| {
        e["event"] == "connection:open"
            && e["peer"] == from
            && e["remoteAddr"]
                .as_str()
                .is_some_and(|a| a.contains(&through))
    });
    assert_eq!(open["direction"], "inbound", "{open}");
    assert_eq!(open["limited"], true, "{open}");
    let remote = open["remoteAddr"].as_str().unwrap_or_default();
    assert!(remote.ends_with(&format!("{through}/p2p/{from}")), "{open}");
    open
}

// ---------------------------------------------------------------------------
// Vouchers

/// What a voucher envelope holds, its signature checked by rust-libp2p.
#[derive(Debug, PartialEq, Eq)]
pub struct Voucher {
    /// `Voucher.relay`.
    pub relay: PeerId,
    /// `Voucher.peer`.
    pub peer: PeerId,
    /// `Voucher.expiration`, unix seconds.
    pub expiration: u64,
    /// Whose key signed the envelope.
    pub signer: PeerId,
}

/// Bytes from hex (as the peers print vouchers).
pub fn hex_decode(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Hex of bytes, lower case.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint too long");
}

/// Opens a voucher envelope: checks the signature (rust-libp2p's
/// `SignedEnvelope`, domain and payload type of the spec) and decodes the
/// payload `Voucher{relay=1, peer=2, expiration=3}`.
///
/// # Panics
/// If it is not a validly signed voucher.
pub fn open_voucher(bytes: &[u8]) -> Voucher {
    let envelope = SignedEnvelope::from_protobuf_encoding(bytes).expect("an envelope");
    let (payload, key) = envelope
        .payload_and_signing_key(VOUCHER_DOMAIN.to_owned(), &VOUCHER_PAYLOAD_TYPE)
        .expect("a valid signature over a voucher");
    let mut fields: (Option<PeerId>, Option<PeerId>, Option<u64>) = (None, None, None);
    let mut at = 0;
    while at < payload.len() {
        let tag = read_varint(payload, &mut at);
        match (tag >> 3, tag & 7) {
            (n @ (1 | 2), 2) => {
                let len = read_varint(payload, &mut at) as usize;
                let id = PeerId::from_bytes(&payload[at..at + len]).expect("a peer id");
                at += len;
                if n == 1 {
                    fields.0 = Some(id);
                } else {
                    fields.1 = Some(id);
                }
            }
            (3, 0) => fields.2 = Some(read_varint(payload, &mut at)),
            other => panic!("unexpected voucher field {other:?}"),
        }
    }
    Voucher {
        relay: fields.0.expect("relay"),
        peer: fields.1.expect("peer"),
        expiration: fields.2.expect("expiration"),
        signer: key.to_peer_id(),
    }
}

/// [`open_voucher`] of a hex string.
pub fn open_voucher_hex(hex: &str) -> Voucher {
    open_voucher(&hex_decode(hex))
}
