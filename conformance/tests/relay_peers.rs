//! The real-peer side of the circuit-relay-v2 interop tests: js-libp2p
//! (`conformance/js/relay.mjs`) and rust-libp2p (the `rust_relay_peer`
//! binary) talking to each other through each other's relays, so that the
//! peers are known to work before our own node is tested against them.
//!
//! Every peer is a child process driven over stdin/stdout in JSON lines
//! (the protocol is described at the top of `relay.mjs` and in
//! `sansp2p_conformance::rust_relay_peer`); [`RelayPeer`] drives either.
//! The js peer is installed by the first test that needs it (`npm ci`, see
//! `sansp2p_conformance::peer_process::node_binary`).
//!
//! What the tests show about the peers:
//! - a reservation, a dial through the relay and a `/echo/1.0.0` stream over
//!   the relayed connection, which both ends report as limited;
//! - the data limit of a circuit: both relays count the bytes of the two
//!   directions together against `Limit.data` (the spec says "per
//!   direction"), so a 1 MiB echo needs a limit of 2 MiB plus the overhead
//!   of noise, yamux and identify; with the default 128 KiB even a 64 KiB
//!   echo is cut off, which is why the first two tests raise the limit;
//! - the voucher js-libp2p's relay signs, checked here with rust-libp2p's
//!   envelope code and kept in `tests/data/js_relay_voucher.hex` (written
//!   again when `SANSP2P_CAPTURE_VOUCHER=1` is set).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use libp2p_core::SignedEnvelope;
use libp2p_identity::PeerId;
use sansp2p_conformance::peer_process::{
    fnv1a, js_dir, node_binary, pseudo_random_bytes, PeerProcess,
};
use serde_json::Value;

/// Longest wait for one command or event (the peers give up on their own
/// network operations after 15 s and answer with an error line first).
const TIMEOUT: Duration = Duration::from_secs(20);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// The default data limit of both relays, and js-libp2p's relay's default
/// duration limit as it writes it into `Limit.duration` (milliseconds, where
/// the spec and rust-libp2p say seconds).
const DEFAULT_DATA_LIMIT: u64 = 128 * KIB;
const JS_DEFAULT_DURATION_FIELD: u64 = 120_000;
/// rust-libp2p's relay's default duration limit, in seconds.
const RUST_DEFAULT_DURATION_SECS: u64 = 120;
/// A data limit the echoes of the first two tests stay well within.
const ROOMY: u64 = MIB;
const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";
const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

// ---------------------------------------------------------------------------
// The peers

/// Which libp2p implementation a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Js,
    Rust,
}

/// A running relay peer (relay.mjs or rust_relay_peer), killed when dropped.
struct RelayPeer {
    process: PeerProcess,
    /// Its peer id.
    peer: String,
    /// Its listen address, with `/p2p/<peer>`.
    addr: String,
}

impl RelayPeer {
    /// A peer with identity `[seed; 32]` and the given extra flags
    /// (`--relay-server` and its limits).
    fn spawn(imp: Impl, seed: u8, flags: &[String]) -> RelayPeer {
        let seed_arg = seed.to_string();
        let (name, mut cmd) = match imp {
            Impl::Js => {
                let mut cmd = Command::new(node_binary());
                cmd.arg("relay.mjs").current_dir(js_dir());
                (format!("the js peer (seed {seed})"), cmd)
            }
            Impl::Rust => (
                format!("the rust peer (seed {seed})"),
                Command::new(env!("CARGO_BIN_EXE_rust_relay_peer")),
            ),
        };
        cmd.args(["--seed", &seed_arg]).args(flags);
        let process = PeerProcess::spawn(&name, cmd, TIMEOUT);
        let ready = process.wait_event("the peer to start", |e| e["event"] == "ready");
        let peer = ready["peer"].as_str().expect("a peer id").to_owned();
        // The same 32-byte seed makes the same identity in every stack.
        let expected = libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("a valid secret")
            .public()
            .to_peer_id();
        assert_eq!(peer, expected.to_string(), "{ready}");
        assert_eq!(
            ready["impl"],
            if imp == Impl::Js { "js" } else { "rust" },
            "{ready}"
        );
        let addr = ready["addrs"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {ready}"))
            .to_owned();
        assert!(addr.ends_with(&format!("/p2p/{peer}")), "{ready}");
        RelayPeer {
            process,
            peer,
            addr,
        }
    }

    /// A relay server whose circuits may carry `max_data` bytes (the
    /// implementation's default if None).
    fn relay(imp: Impl, seed: u8, max_data: Option<u64>) -> RelayPeer {
        let mut flags = vec!["--relay-server".to_owned()];
        if let Some(bytes) = max_data {
            flags.extend(["--max-data".to_owned(), bytes.to_string()]);
        }
        Self::spawn(imp, seed, &flags)
    }

    fn client(imp: Impl, seed: u8) -> RelayPeer {
        Self::spawn(imp, seed, &[])
    }

    fn ok(&mut self, line: &str) -> Value {
        self.process.ok(line)
    }

    fn command(&mut self, line: &str) -> Value {
        self.process.command(line)
    }

    fn wait_event(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.process.wait_event(what, matches)
    }

    fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }

    /// Reserves a slot on `relay`; returns the `reserve` result and the
    /// address to dial us through that relay.
    fn reserve(&mut self, relay: &RelayPeer) -> (Value, String) {
        let r = self.ok(&format!("reserve {}", relay.addr));
        assert_eq!(r["relay"], relay.peer.as_str(), "{r}");
        let want = format!("{}/p2p-circuit", relay.addr);
        let addrs = r["addrs"].as_array().expect("addrs");
        let circuit = addrs
            .iter()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with(&want))
            .unwrap_or_else(|| panic!("no address through {} in {r}", relay.addr));
        let dial = if circuit.ends_with(&format!("/p2p/{}", self.peer)) {
            circuit.to_owned()
        } else {
            format!("{circuit}/p2p/{}", self.peer)
        };
        (r, dial)
    }

    /// Dials `addr` (a circuit address of `target`); returns the connection.
    fn dial_relayed(&mut self, addr: &str, target: &RelayPeer) -> Value {
        let r = self.ok(&format!("dial {addr}"));
        let conn = r["connection"].clone();
        assert_eq!(conn["peer"], target.peer.as_str(), "{r}");
        assert_eq!(conn["direction"], "outbound", "{r}");
        assert_eq!(conn["remoteAddr"], addr, "{r}");
        assert_eq!(conn["limited"], true, "a relayed connection: {r}");
        assert_eq!(conn["encryption"], "/noise", "{r}");
        assert_eq!(conn["multiplexer"], "/yamux/1.0.0", "{r}");
        conn
    }

    /// The open connections to `peer` (an id).
    fn connections(&mut self, peer: &str) -> Vec<Value> {
        let r = self.ok(&format!("connections {peer}"));
        r["connections"].as_array().expect("a list").clone()
    }
}

// ---------------------------------------------------------------------------
// Checks

/// An `echo` result that must have passed: everything came back unchanged.
fn check_echo(r: &Value, len: u64, seed: u32, peer: &RelayPeer) {
    let expected = u64::from(fnv1a(&pseudo_random_bytes(len as usize, seed)));
    assert_eq!(r["ok"], true, "echo failed: {r}\n{}", peer.diagnostics());
    assert_eq!(r["len"], len, "{r}");
    assert_eq!(r["sent"], expected, "the peer generated other bytes: {r}");
    assert_eq!(r["received"], len, "short echo: {r}");
    assert_eq!(r["checksum"], expected, "corrupt echo: {r}");
}

/// An `echo` result that must have failed part-way: the circuit was closed.
fn check_echo_cut(r: &Value, len: u64, peer: &RelayPeer) {
    assert_eq!(
        r["ok"],
        false,
        "the echo of {len} bytes passed the relay's limit: {r}\n{}",
        peer.diagnostics()
    );
    let received = r["received"].as_u64().unwrap_or_else(|| panic!("{r}"));
    assert!(received < len, "{r}");
}

/// The relayed connection from `from` as `at` reported it when it opened:
/// inbound, limited, through the relay.
fn check_inbound_relayed(at: &RelayPeer, from: &RelayPeer, relay: &RelayPeer) -> Value {
    let open = at.wait_event("the relayed connection to open", |e| {
        e["event"] == "connection:open" && e["peer"] == from.peer.as_str() && e["limited"] == true
    });
    assert_eq!(open["direction"], "inbound", "{open}");
    let remote = open["remoteAddr"].as_str().unwrap_or_default();
    assert!(
        remote.contains(&format!("/p2p/{}/p2p-circuit", relay.peer)),
        "{open}"
    );
    open
}

/// Both ends list exactly one open connection between them, limited.
fn check_both_limited(a: &mut RelayPeer, b: &mut RelayPeer) {
    let (a_id, b_id) = (a.peer.clone(), b.peer.clone());
    for (x, y) in [(a, b_id), (b, a_id)] {
        let conns = x.connections(&y);
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0]["limited"], true, "{conns:?}");
        assert!(
            conns[0]["remoteAddr"]
                .as_str()
                .is_some_and(|a| a.contains("/p2p-circuit")),
            "{conns:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Vouchers

/// What a voucher envelope holds, its signature checked by rust-libp2p.
#[derive(Debug, PartialEq, Eq)]
struct Voucher {
    relay: PeerId,
    peer: PeerId,
    expiration: u64,
    signer: PeerId,
}

fn hex_decode(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
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
fn open_voucher(hex: &str) -> Voucher {
    let bytes = hex_decode(hex);
    let envelope = SignedEnvelope::from_protobuf_encoding(&bytes).expect("an envelope");
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

fn voucher_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/js_relay_voucher.hex")
}

/// The seeds of the peers whose voucher the data file keeps, and its
/// expiration (see `tests/data/js_relay_voucher.txt`; update all three with
/// the file).
const VOUCHER_RELAY_SEED: u8 = 21;
const VOUCHER_CLIENT_SEED: u8 = 23;
const VOUCHER_EXPIRATION: u64 = 1_796_260_507;

// ---------------------------------------------------------------------------
// (a) js client reserves on a rust relay; rust dials it through the relay

#[test]
fn js_client_on_rust_relay_rust_dials() {
    let relay = RelayPeer::relay(Impl::Rust, 11, Some(ROOMY));
    let mut client = RelayPeer::client(Impl::Js, 12);
    let mut dialer = RelayPeer::client(Impl::Rust, 13);

    let (r, addr) = client.reserve(&relay);
    // js reads the expiry rust-libp2p wrote, and no voucher: rust sends none.
    assert!(r["expire"].as_u64().is_some_and(|e| e > 0), "{r}");
    assert_eq!(r["voucher"], Value::Null, "{r}");
    let granted = relay.wait_event("the reservation", |e| {
        e["event"] == "reservation:granted" && e["peer"] == client.peer.as_str()
    });
    assert_eq!(granted["limit"]["data"], ROOMY, "{granted}");
    assert_eq!(
        granted["limit"]["duration"], RUST_DEFAULT_DURATION_SECS,
        "{granted}"
    );

    dialer.dial_relayed(&addr, &client);
    // rust-libp2p's client tells the limit the relay gave the circuit.
    let circuit = dialer.wait_event("the outbound circuit", |e| e["event"] == "circuit:outbound");
    assert_eq!(circuit["relay"], relay.peer.as_str(), "{circuit}");
    assert_eq!(circuit["limit"]["data"], ROOMY, "{circuit}");
    // js sees the same limit as its connection's budget.
    let open = check_inbound_relayed(&client, &dialer, &relay);
    assert_eq!(
        open["limits"]["seconds"], RUST_DEFAULT_DURATION_SECS,
        "{open}"
    );
    assert!(
        open["limits"]["bytes"].as_u64().is_some_and(|b| b <= ROOMY),
        "{open}"
    );
    relay.wait_event("the circuit on the relay", |e| {
        e["event"] == "circuit:accepted"
            && e["src"] == dialer.peer.as_str()
            && e["dst"] == client.peer.as_str()
    });

    let len = 64 * KIB;
    let r = dialer.ok(&format!("echo {} {len} 5", client.peer));
    check_echo(&r, len, 5, &dialer);
    assert_eq!(r["connection"]["limited"], true, "{r}");
    // And the other way on the same relayed connection.
    let r = client.command(&format!("echo {} {len} 6", dialer.peer));
    check_echo(&r, len, 6, &client);
    assert_eq!(r["connection"]["limited"], true, "{r}");
    check_both_limited(&mut dialer, &mut client);
}

// ---------------------------------------------------------------------------
// (b) rust client reserves on a js relay; js dials it through the relay

#[test]
fn rust_client_on_js_relay_js_dials() {
    let relay = RelayPeer::relay(Impl::Js, 14, Some(ROOMY));
    let mut client = RelayPeer::client(Impl::Rust, 15);
    let mut dialer = RelayPeer::client(Impl::Js, 16);

    let (r, addr) = client.reserve(&relay);
    // rust-libp2p reports the limit of the reservation, as js wrote it: the
    // duration field holds js's default in milliseconds.
    assert_eq!(r["limit"]["data"], ROOMY, "{r}");
    assert_eq!(r["limit"]["duration"], JS_DEFAULT_DURATION_FIELD, "{r}");
    // The relay signed a voucher for the client (rust-libp2p ignores it).
    let granted = relay.wait_event("the reservation", |e| {
        e["event"] == "reservation:granted" && e["peer"] == client.peer.as_str()
    });
    assert_eq!(granted["voucherValid"], true, "{granted}");
    let voucher = open_voucher(granted["voucher"].as_str().expect("a voucher"));
    assert_eq!(voucher.relay.to_string(), relay.peer);
    assert_eq!(voucher.signer.to_string(), relay.peer);
    assert_eq!(voucher.peer.to_string(), client.peer);
    assert_eq!(Some(voucher.expiration), granted["expire"].as_u64());

    dialer.dial_relayed(&addr, &client);
    let circuit = client.wait_event("the inbound circuit", |e| e["event"] == "circuit:inbound");
    assert_eq!(circuit["src"], dialer.peer.as_str(), "{circuit}");
    assert_eq!(circuit["limit"]["data"], ROOMY, "{circuit}");
    check_inbound_relayed(&client, &dialer, &relay);

    let len = 64 * KIB;
    let r = dialer.ok(&format!("echo {} {len} 7", client.peer));
    check_echo(&r, len, 7, &dialer);
    assert_eq!(r["connection"]["limited"], true, "{r}");
    let r = client.command(&format!("echo {} {len} 8", dialer.peer));
    check_echo(&r, len, 8, &client);
    check_both_limited(&mut dialer, &mut client);
}

// ---------------------------------------------------------------------------
// (c) the data limit of a circuit

/// Three relays of `relay_impl` (default limit, 2 MiB, 3 MiB), one client
/// that reserves on all of them, one dialer: a 1 MiB echo over each relay in
/// turn. Only the 3 MiB relay lets it through: both implementations count
/// the two directions together (1 MiB each way plus the overhead of noise,
/// yamux and identify is more than 2 MiB).
fn one_mib_echo_against_limits(relay_impl: Impl, client_impl: Impl, dialer_impl: Impl, seed: u8) {
    let len = MIB;
    let limits = [None, Some(2 * MIB), Some(3 * MIB)];
    let relays: Vec<RelayPeer> = limits
        .iter()
        .enumerate()
        .map(|(i, &limit)| RelayPeer::relay(relay_impl, seed + i as u8, limit))
        .collect();
    let mut client = RelayPeer::client(client_impl, seed + 3);
    let mut dialer = RelayPeer::client(dialer_impl, seed + 4);
    let addrs: Vec<String> = relays.iter().map(|relay| client.reserve(relay).1).collect();

    for (i, (relay, limit)) in relays.iter().zip(limits).enumerate() {
        let what = format!("relay {i} (data limit {limit:?})");
        let conn = dialer.dial_relayed(&addrs[i], &client);
        if dialer_impl == Impl::Js {
            let budget = conn["limits"]["bytes"].as_u64().unwrap_or_default();
            assert!(
                budget <= limit.unwrap_or(DEFAULT_DATA_LIMIT),
                "{what}: {conn}"
            );
        }
        let r = dialer.command(&format!("echo {} {len} {}", client.peer, 10 + i));
        if limit == Some(3 * MIB) {
            check_echo(&r, len, 10 + i as u32, &dialer);
            continue;
        }
        check_echo_cut(&r, len, &dialer);
        // The relay closed the circuit: the relayed connection is gone at
        // both ends.
        for (at, other) in [(&dialer, &client), (&client, &dialer)] {
            at.wait_event(&format!("{what}: the relayed connection to close"), |e| {
                e["event"] == "connection:close"
                    && e["peer"] == other.peer.as_str()
                    && e["limited"] == true
                    && e["remoteAddr"]
                        .as_str()
                        .is_some_and(|a| a.contains(&relay.peer))
            });
        }
        if relay_impl == Impl::Rust {
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
    }
}

#[test]
fn one_mib_echo_against_rust_relay_limits() {
    one_mib_echo_against_limits(Impl::Rust, Impl::Js, Impl::Rust, 30);
}

#[test]
fn one_mib_echo_against_js_relay_limits() {
    one_mib_echo_against_limits(Impl::Js, Impl::Rust, Impl::Js, 40);
}

// ---------------------------------------------------------------------------
// The js relay's voucher, as its client receives it

#[test]
fn js_relay_voucher_reaches_js_client() {
    let relay = RelayPeer::relay(Impl::Js, VOUCHER_RELAY_SEED, None);
    let mut client = RelayPeer::client(Impl::Js, VOUCHER_CLIENT_SEED);
    let (r, _) = client.reserve(&relay);
    let granted = relay.wait_event("the reservation", |e| {
        e["event"] == "reservation:granted" && e["peer"] == client.peer.as_str()
    });
    // What the client got is what the relay signed.
    assert_eq!(r["voucherValid"], true, "{r}");
    assert_eq!(r["voucher"], granted["voucher"], "{r}\n{granted}");
    assert_eq!(r["expire"], granted["expire"], "{r}\n{granted}");
    assert_eq!(granted["limit"]["data"], DEFAULT_DATA_LIMIT, "{granted}");
    assert_eq!(
        granted["limit"]["duration"], JS_DEFAULT_DURATION_FIELD,
        "{granted}"
    );
    let hex = r["voucher"].as_str().expect("a voucher");
    let voucher = open_voucher(hex);
    assert_eq!(voucher.relay.to_string(), relay.peer);
    assert_eq!(voucher.signer.to_string(), relay.peer);
    assert_eq!(voucher.peer.to_string(), client.peer);
    assert_eq!(Some(voucher.expiration), r["expire"].as_u64());

    if std::env::var_os("SANSP2P_CAPTURE_VOUCHER").is_some() {
        fs::write(voucher_file(), format!("{hex}\n")).expect("write the voucher file");
        eprintln!(
            "captured {}: relay seed {VOUCHER_RELAY_SEED}, client seed {VOUCHER_CLIENT_SEED}, expiration {}",
            voucher_file().display(),
            voucher.expiration
        );
    }
}

/// The kept voucher still opens, for the peers of its seeds.
#[test]
fn kept_js_relay_voucher_is_valid() {
    let hex = fs::read_to_string(voucher_file()).expect("tests/data/js_relay_voucher.hex");
    let voucher = open_voucher(&hex);
    let id = |seed: u8| {
        libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("a valid secret")
            .public()
            .to_peer_id()
    };
    assert_eq!(voucher.relay, id(VOUCHER_RELAY_SEED));
    assert_eq!(voucher.signer, id(VOUCHER_RELAY_SEED));
    assert_eq!(voucher.peer, id(VOUCHER_CLIENT_SEED));
    assert_eq!(voucher.expiration, VOUCHER_EXPIRATION);
}
