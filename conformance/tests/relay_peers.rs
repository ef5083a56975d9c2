//! The real-peer side of the circuit-relay-v2 interop tests: js-libp2p
//! (`conformance/js/relay.mjs`) and rust-libp2p (the `rust_relay_peer`
//! binary) talking to each other through each other's relays, so that the
//! peers are known to work before our own node is tested against them.
//!
//! Every peer is a child process driven over stdin/stdout in JSON lines
//! (the protocol is described at the top of `relay.mjs` and in
//! `sansp2p_conformance::rust_relay_peer`); [`RelayPeer`]
//! (`sansp2p_conformance::relay_peer`, shared with `tests/relay_interop.rs`)
//! drives either. The js peer is installed by the first test that needs it (`npm ci`, see
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

use sansp2p_conformance::relay_peer::{
    check_echo, check_echo_cut, check_inbound_relayed, check_rust_relay_cut, open_voucher_hex,
    peer_id_of_seed, Impl, RelayPeer, DEFAULT_DATA_LIMIT, JS_DEFAULT_DURATION_FIELD, KIB, MIB,
    RUST_DEFAULT_DURATION_SECS,
};
use serde_json::Value;

/// A data limit the echoes of the first two tests stay well within.
const ROOMY: u64 = MIB;

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

    dialer.dial_relayed(&addr, &client.peer);
    // rust-libp2p's client tells the limit the relay gave the circuit.
    let circuit = dialer.wait_event("the outbound circuit", |e| e["event"] == "circuit:outbound");
    assert_eq!(circuit["relay"], relay.peer.as_str(), "{circuit}");
    assert_eq!(circuit["limit"]["data"], ROOMY, "{circuit}");
    // js sees the same limit as its connection's budget.
    let open = check_inbound_relayed(&client, &dialer.peer, &relay.peer);
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
    let voucher = open_voucher_hex(granted["voucher"].as_str().expect("a voucher"));
    assert_eq!(voucher.relay.to_string(), relay.peer);
    assert_eq!(voucher.signer.to_string(), relay.peer);
    assert_eq!(voucher.peer.to_string(), client.peer);
    assert_eq!(Some(voucher.expiration), granted["expire"].as_u64());

    dialer.dial_relayed(&addr, &client.peer);
    let circuit = client.wait_event("the inbound circuit", |e| e["event"] == "circuit:inbound");
    assert_eq!(circuit["src"], dialer.peer.as_str(), "{circuit}");
    assert_eq!(circuit["limit"]["data"], ROOMY, "{circuit}");
    check_inbound_relayed(&client, &dialer.peer, &relay.peer);

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
        let conn = dialer.dial_relayed(&addrs[i], &client.peer);
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
            check_rust_relay_cut(relay, &what);
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
    let voucher = open_voucher_hex(hex);
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
    let voucher = open_voucher_hex(&hex);
    assert_eq!(voucher.relay, peer_id_of_seed(VOUCHER_RELAY_SEED));
    assert_eq!(voucher.signer, peer_id_of_seed(VOUCHER_RELAY_SEED));
    assert_eq!(voucher.peer, peer_id_of_seed(VOUCHER_CLIENT_SEED));
    assert_eq!(voucher.expiration, VOUCHER_EXPIRATION);
}
