//! Circuit relay v2 interop of our node (the smol host) with real peers:
//! js-libp2p (`conformance/js/relay.mjs`) and rust-libp2p (the
//! `rust_relay_peer` binary), driven by
//! [`sansp2p_conformance::relay_peer::RelayPeer`] as in
//! `tests/relay_peers.rs`, which shows the peers work among themselves.
//!
//! Our node in each role, against each implementation:
//! 1. a relay client that reserves on their relay and is dialed through it
//!    by their client; a relay with the default limits cuts the circuit of a
//!    1 MiB echo, one with a raised limit carries it;
//! 2. a dialer that reaches their client through their relay (every
//!    combination of relay and target implementation);
//! 3. the relay: their clients reserve on us and reach each other through
//!    us, in both directions.
//!
//! Every echo is of pseudo-random bytes checked with FNV-1a on both sides.
//! The js peer is installed by the first test that needs it (`npm ci`, see
//! `sansp2p_conformance::peer_process::node_binary`).
//!
//! What the peers' relays do that ours does not: both count the bytes of
//! the two directions of a circuit together against `Limit.data` (the spec
//! says per direction, as ours counts), so a 1 MiB echo through them needs
//! about 3 MiB; js-libp2p's relay writes `Limit.duration` in milliseconds
//! (120000 for its default of 2 min), which our client reads as seconds, as
//! the spec says; rust-libp2p's relay sends no voucher.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sansp2p::node::{CloseReason, Event};
use sansp2p::relay::server::ServerEvent;
use sansp2p::relay::{CircuitLimit, ServerConfig};
use sansp2p_conformance::relay_peer::{
    check_echo_cut, check_inbound_relayed, check_rust_relay_cut, hex_encode, open_voucher,
    open_voucher_hex, Impl, RelayPeer, DEFAULT_DATA_LIMIT, JS_DEFAULT_DURATION_FIELD, KIB, MIB,
    RUST_DEFAULT_DURATION_SECS,
};
use sansp2p_conformance::smol_host::{circuit, within, Ours};
use sansp2p_smol::Multiaddr;
use serde_json::json;

/// The echo that crosses every relay.
const LEN: u64 = MIB;
/// A data limit of their relays that a [`LEN`] echo fits in: they count
/// both directions together, plus noise, yamux and identify.
const ROOMY: u64 = 4 * MIB;
/// The data limit of our relay: per direction, so half of [`ROOMY`] does.
const OUR_RELAY_DATA: u64 = 2 * MIB;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The limit a relay of `imp` announces with data limit `data`, as our
/// client reads it: js-libp2p writes its duration in milliseconds.
fn their_limit(imp: Impl, data: u64) -> CircuitLimit {
    let duration = match imp {
        Impl::Js => JS_DEFAULT_DURATION_FIELD,
        Impl::Rust => RUST_DEFAULT_DURATION_SECS,
    };
    CircuitLimit {
        duration: Some(Duration::from_secs(duration)),
        data: Some(data),
    }
}

// ---------------------------------------------------------------------------
// 1. We reserve on their relay; their client dials us through it

/// Reserves on `relay` (data limit `data`) and checks what we hold against
/// what the relay says it granted; returns our address through it.
fn reserve_on(ours: &Ours, relay: &RelayPeer, data: u64) -> Multiaddr {
    let relay_addr: Multiaddr = relay.addr.parse().expect("valid");
    let held = within("our reservation", ours.host.reserve(&relay_addr)).unwrap_or_else(|e| {
        panic!(
            "reserving on {}: {e:?}\n{}",
            relay.addr,
            relay.diagnostics()
        )
    });
    let expires_unix = unix_now()
        + held
            .expires
            .saturating_duration_since(Instant::now())
            .as_secs();
    let ours_through = circuit(&relay.addr, ours.peer);
    assert_eq!(held.relay, relay.id(), "{held:?}");
    assert_eq!(held.addrs, vec![ours_through.clone()], "{held:?}");
    assert!(ours.host.relay_addrs().contains(&ours_through), "{held:?}");
    assert_eq!(held.limit, Some(their_limit(relay.imp, data)), "{held:?}");

    let granted = relay.wait_event("the reservation", |e| {
        e["event"] == "reservation:granted" && e["peer"] == ours.peer.to_string().as_str()
    });
    assert_eq!(granted["limit"]["data"], data, "{granted}");
    let expire = granted["expire"].as_u64().expect("an expiry");
    assert!(expires_unix.abs_diff(expire) <= 3, "{held:?} vs {granted}");
    match relay.imp {
        Impl::Js => {
            // The voucher js signed reached us as it signed it, and it
            // opens with rust-libp2p's envelope code too.
            let voucher = held.voucher.as_deref().expect("js relays send a voucher");
            assert_eq!(granted["voucherValid"], true, "{granted}");
            assert_eq!(granted["voucher"], hex_encode(voucher), "{granted}");
            let opened = open_voucher(voucher);
            assert_eq!(opened.relay.to_string(), relay.peer);
            assert_eq!(opened.signer.to_string(), relay.peer);
            assert_eq!(opened.peer.to_string(), ours.peer.to_string());
            assert_eq!(opened.expiration, expire);
        }
        Impl::Rust => assert_eq!(held.voucher, None, "rust relays send no voucher"),
    }
    ours.log.wait("ReservationAccepted", |e| match e {
        Event::ReservationAccepted { relay: r, .. } if *r == held.relay => Some(()),
        _ => None,
    });
    ours_through
}

fn they_dial_us_through_their_relay(imp: Impl, seed: u8) {
    let ours = Ours::start(seed);
    let tight = RelayPeer::relay(imp, seed + 1, None);
    let roomy = RelayPeer::relay(imp, seed + 2, Some(ROOMY));
    let mut dialer = RelayPeer::client(imp, seed + 3);
    let dialer_id = dialer.id();
    let us = ours.peer.to_string();

    let via_tight = reserve_on(&ours, &tight, DEFAULT_DATA_LIMIT);
    let via_roomy = reserve_on(&ours, &roomy, ROOMY);

    // Through the relay with the default limit: the circuit is cut.
    let conn = dialer.dial_relayed(&via_tight.to_string(), &us);
    if imp == Impl::Js {
        let budget = conn["limits"]["bytes"].as_u64().unwrap_or_default();
        assert!(budget > 0 && budget <= DEFAULT_DATA_LIMIT, "{conn}");
    }
    let remote = circuit(&tight.addr, dialer_id);
    let cut = ours.log.inbound(dialer_id, &remote);
    ours.check_only_limited(dialer_id, cut, &remote);
    let r = dialer.command(&format!("echo {us} {LEN} 3"));
    check_echo_cut(&r, LEN, &dialer);
    let reason = ours.log.closed(cut);
    assert!(
        matches!(
            reason,
            CloseReason::CircuitLimit | CloseReason::CircuitClosed
        ),
        "{reason:?}"
    );
    dialer.wait_event("the cut connection to close", |e| {
        e["event"] == "connection:close" && e["remoteAddr"] == via_tight.to_string().as_str()
    });
    if imp == Impl::Rust {
        check_rust_relay_cut(&tight, "the tight relay");
    }

    // Through the relay with a raised limit: both ways.
    dialer.dial_relayed(&via_roomy.to_string(), &us);
    let remote = circuit(&roomy.addr, dialer_id);
    let conn = ours.log.inbound(dialer_id, &remote);
    ours.check_only_limited(dialer_id, conn, &remote);
    let r = dialer.echo_ok(&us, LEN, 4);
    assert_eq!(r["connection"]["limited"], true, "{r}");
    ours.echo_ok(dialer_id, 256 * KIB, 5);
    ours.check_only_limited(dialer_id, conn, &remote);
    let conns = dialer.connections(&us);
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(
        conns[0]["remoteAddr"],
        via_roomy.to_string().as_str(),
        "{conns:?}"
    );
}

#[test]
fn js_dials_us_through_js_relay() {
    they_dial_us_through_their_relay(Impl::Js, 50);
}

#[test]
fn rust_dials_us_through_rust_relay() {
    they_dial_us_through_their_relay(Impl::Rust, 60);
}

// ---------------------------------------------------------------------------
// 2. We dial their client through their relay

#[test]
fn we_dial_their_clients_through_their_relays() {
    let seed = 70;
    let ours = Ours::start(seed);
    let relays = [
        RelayPeer::relay(Impl::Js, seed + 1, Some(ROOMY)),
        RelayPeer::relay(Impl::Rust, seed + 2, Some(ROOMY)),
    ];
    let mut targets = [
        RelayPeer::client(Impl::Js, seed + 3),
        RelayPeer::client(Impl::Rust, seed + 4),
    ];
    let us = ours.peer.to_string();
    // (relay, target, circuit address)
    let mut routes = Vec::new();
    for (t, target) in targets.iter_mut().enumerate() {
        for (r, relay) in relays.iter().enumerate() {
            let (_, addr) = target.reserve(relay);
            assert_eq!(addr, circuit(&relay.addr, &target.peer).to_string());
            routes.push((r, t, addr));
        }
    }
    // Across implementations first, then each with its own.
    routes.sort_by_key(|&(r, t, _)| (r == t, r));
    for (i, (r, t, addr)) in routes.into_iter().enumerate() {
        let (relay, target) = (&relays[r], &mut targets[t]);
        let what = format!("{} relay, {} target", relay.imp.name(), target.imp.name());
        let target_id = target.id();
        let addr: Multiaddr = addr.parse().expect("valid");
        let reached = within(&what, ours.host.dial(&addr))
            .unwrap_or_else(|e| panic!("{what}: dialing {addr}: {e:?}\n{}", target.diagnostics()));
        assert_eq!(reached, target_id, "{what}");
        let conns = ours.host.connections(&target_id);
        assert_eq!(conns.len(), 1, "{what}: {conns:?}");
        ours.check_only_limited(target_id, conns[0].conn, &addr);
        let open = check_inbound_relayed(target, &us, &relay.peer);
        assert_eq!(
            open["remoteAddr"],
            circuit(&relay.addr, ours.peer).to_string().as_str(),
            "{what}: {open}"
        );

        ours.echo_ok(target_id, LEN, 10 + i as u32);
        // And the other way, on the same connection.
        let r = target.echo_ok(&us, 256 * KIB, 20 + i as u32);
        assert_eq!(r["connection"]["limited"], true, "{what}: {r}");
        ours.check_only_limited(target_id, conns[0].conn, &addr);

        // Gone at both ends before the next route to the same target.
        ours.host.disconnect(&target_id);
        ours.log.closed(conns[0].conn);
        target.wait_event(&format!("{what}: our connection to close"), |e| {
            e["event"] == "connection:close"
                && e["peer"] == us.as_str()
                && e["remoteAddr"] == open["remoteAddr"]
        });
    }
}

// ---------------------------------------------------------------------------
// 3. We are the relay

#[test]
fn their_clients_reach_each_other_through_our_relay() {
    let seed = 80;
    let ours = Ours::start_with(seed, |host| {
        let mut config = ServerConfig::default();
        config.circuit_data = OUR_RELAY_DATA;
        host.serve_relay(config);
    });
    let us = ours.peer.to_string();
    let our_addr = ours.addr.to_string();
    let mut js = RelayPeer::client(Impl::Js, seed + 1);
    let mut rust = RelayPeer::client(Impl::Rust, seed + 2);
    let our_limit = json!({ "duration": 120, "data": OUR_RELAY_DATA });

    // js checks our voucher itself; it opens with rust-libp2p's code too.
    let (r, js_addr) = js.reserve_at(&our_addr, &us);
    assert_eq!(r["voucherValid"], true, "{r}");
    let voucher = open_voucher_hex(r["voucher"].as_str().expect("our voucher"));
    assert_eq!(voucher.relay.to_string(), us);
    assert_eq!(voucher.signer.to_string(), us);
    assert_eq!(voucher.peer.to_string(), js.peer);
    let expire = r["expire"].as_u64().expect("an expiry");
    assert_eq!(voucher.expiration, expire, "{r}");
    let ttl = expire.saturating_sub(unix_now());
    assert!((3590..=3601).contains(&ttl), "an hour: {r}");
    let held = js.wait_event("js's reservation", |e| e["event"] == "reservation");
    assert_eq!(held["relay"], us.as_str(), "{held}");
    assert_eq!(held["voucherValid"], true, "{held}");
    // rust-libp2p reports the limit we announced.
    let (r, rust_addr) = rust.reserve_at(&our_addr, &us);
    assert_eq!(r["limit"], our_limit, "{r}");
    let held = rust.wait_event("rust's reservation", |e| e["event"] == "reservation");
    assert_eq!(held["relay"], us.as_str(), "{held}");
    assert_eq!(held["renewal"], false, "{held}");
    assert_eq!(held["limit"], our_limit, "{held}");
    for peer in [&js, &rust] {
        let id = peer.id();
        let renewed = ours.log.wait("our relay's Reserved", |e| match e {
            Event::RelayServer(ServerEvent::Reserved { peer, renewed }) if *peer == id => {
                Some(*renewed)
            }
            _ => None,
        });
        assert!(
            !renewed,
            "{} renewed a reservation it did not hold",
            peer.peer
        );
    }

    // js -> rust through us.
    let conn = js.dial_relayed(&rust_addr, &rust.peer);
    let budget = conn["limits"]["bytes"].as_u64().unwrap_or_default();
    assert!(budget > 0 && budget <= OUR_RELAY_DATA, "{conn}");
    // We write the duration in seconds, as js reads it.
    let seconds = conn["limits"]["seconds"].as_u64().unwrap_or_default();
    assert!((119..=120).contains(&seconds), "{conn}");
    check_inbound_relayed(&rust, &js.peer, &us);
    let inbound = rust.wait_event("the inbound circuit", |e| e["event"] == "circuit:inbound");
    assert_eq!(inbound["src"], js.peer.as_str(), "{inbound}");
    assert_eq!(inbound["limit"], our_limit, "{inbound}");
    let r = js.echo_ok(&rust.peer, LEN, 30);
    assert_eq!(r["connection"]["limited"], true, "{r}");
    js.ok(&format!("close {}", rust.peer));
    rust.wait_event("the js connection to close", |e| {
        e["event"] == "connection:close" && e["peer"] == js.peer.as_str()
    });

    // rust -> js through us.
    rust.dial_relayed(&js_addr, &js.peer);
    let outbound = rust.wait_event("the outbound circuit", |e| e["event"] == "circuit:outbound");
    assert_eq!(outbound["relay"], us.as_str(), "{outbound}");
    assert_eq!(outbound["limit"], our_limit, "{outbound}");
    let open = js.wait_event("the circuit from rust", |e| {
        e["event"] == "connection:open"
            && e["peer"] == rust.peer.as_str()
            && e["direction"] == "inbound"
    });
    assert_eq!(open["limited"], true, "{open}");
    assert_eq!(
        open["remoteAddr"],
        format!("{our_addr}/p2p-circuit/p2p/{}", rust.peer).as_str(),
        "{open}"
    );
    let r = rust.echo_ok(&js.peer, LEN, 31);
    assert_eq!(r["connection"]["limited"], true, "{r}");

    // Our relay refused nothing and ended no reservation; it has direct
    // connections to both clients only.
    let others = ours.log.all(|e| match e {
        Event::RelayServer(ServerEvent::Reserved { .. }) => None,
        Event::RelayServer(e) => Some(*e),
        _ => None,
    });
    assert!(others.is_empty(), "{others:?}");
    for peer in [&js, &rust] {
        let conns = ours.host.connections(&peer.id());
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert!(!ours.host.is_limited(conns[0].conn), "{conns:?}");
    }

    // A relay of ours with the default limit, 128 KiB per direction, cuts
    // the circuit of a 1 MiB echo: both ends see it close.
    js.ok(&format!("close {}", rust.peer));
    rust.wait_event("the rust -> js connection to close", |e| {
        e["event"] == "connection:close" && e["remoteAddr"] == js_addr.as_str()
    });
    let tight = Ours::start_with(seed + 3, |host| host.serve_relay(ServerConfig::default()));
    let tight_id = tight.peer.to_string();
    let (r, via_tight) = rust.reserve_at(&tight.addr.to_string(), &tight_id);
    let default_limit = json!({ "duration": 120, "data": DEFAULT_DATA_LIMIT });
    assert_eq!(r["limit"], default_limit, "{r}");
    js.dial_relayed(&via_tight, &rust.peer);
    let r = js.command(&format!("echo {} {LEN} 32", rust.peer));
    check_echo_cut(&r, LEN, &js);
    js.wait_event("the cut connection to close", |e| {
        e["event"] == "connection:close" && e["remoteAddr"] == via_tight.as_str()
    });
    let through = format!("/p2p/{tight_id}/p2p-circuit/p2p/{}", js.peer);
    rust.wait_event("the cut connection to close", |e| {
        e["event"] == "connection:close"
            && e["remoteAddr"]
                .as_str()
                .is_some_and(|a| a.ends_with(&through))
    });
}
