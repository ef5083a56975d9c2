use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

use super::handshake::*;
use super::proto::{self, Frame, HopMessage, Limit, StopMessage};
use super::server::{Server, ServerEvent};
use super::*;
use crate::Keypair;

const UNIX: u64 = 1_700_000_000;

fn t(secs: u64) -> Instant {
    Instant::from_duration(Duration::from_secs(secs))
}

fn key(n: u8) -> Keypair {
    Keypair::from_secret_bytes([n; 32])
}

fn clock() -> WallClock {
    WallClock::new(t(0), Duration::from_secs(UNIX))
}

/// `/ip4/1.2.3.4/tcp/4001`
fn tcp_addr(last: u8) -> Vec<u8> {
    vec![0x04, 1, 2, 3, last, 0x06, 0x0f, 0xa1]
}

/// Feeds `bytes` to a machine `step` bytes at a time; returns what it did
/// not take.
fn feed(mut handle: impl FnMut(&[u8]) -> usize, bytes: &[u8], step: usize) -> Vec<u8> {
    let mut pos = 0;
    while pos < bytes.len() {
        let end = (pos + step).min(bytes.len());
        let used = handle(&bytes[pos..end]);
        pos += used;
        if used == 0 {
            break;
        }
    }
    bytes[pos..].to_vec()
}

fn reserve_answer(m: &HopMessage, step: usize) -> (Result<Reservation, RelayError>, Vec<u8>) {
    let relay = key(1).peer_id();
    let mut r = Reserve::new(
        t(10),
        relay,
        key(2).peer_id(),
        clock(),
        &ClientConfig::default(),
    );
    let mut sent = Vec::new();
    r.poll_transmit(&mut sent);
    assert_eq!(sent, [0x02, 0x08, 0x00], "RESERVE with its type written");
    let mut wire = m.to_frame();
    wire.extend_from_slice(b"after");
    let rest = feed(|b| r.handle_read(t(10), b), &wire, step);
    (r.poll_outcome().expect("decided"), rest)
}

fn ok_reservation(expire: u64, voucher: Option<Vec<u8>>) -> HopMessage {
    HopMessage {
        reservation: Some(proto::Reservation {
            expire,
            addrs: vec![tcp_addr(4)],
            voucher,
        }),
        limit: Some(Limit {
            duration: Some(120),
            data: Some(0),
        }),
        ..HopMessage::with_status(Status::Ok)
    }
}

#[test]
fn a_reservation_is_read_one_byte_at_a_time_and_converted() {
    let relay = key(1).peer_id();
    let voucher = make_voucher(&key(1), &key(2).peer_id(), UNIX + 3600);
    for step in [1, 2, 5, 4096] {
        let (got, rest) = reserve_answer(&ok_reservation(UNIX + 3600, Some(voucher.clone())), step);
        let got = got.unwrap();
        assert_eq!(rest, b"after", "nothing read past the message");
        assert_eq!(got.relay, relay);
        assert_eq!(got.expire, t(3600));
        assert_eq!(got.expire_unix, UNIX + 3600);
        let mut want = tcp_addr(4);
        want.extend_from_slice(&p2p_suffix(&relay));
        assert_eq!(got.addrs, vec![want]);
        assert_eq!(
            got.limit,
            Some(CircuitLimit {
                duration: Some(Duration::from_secs(120)),
                data: None,
            })
        );
        assert_eq!(got.voucher, Some(voucher.clone()));
    }
}

#[test]
fn a_reservation_answer_that_does_not_hold_is_a_typed_error() {
    let (alice, relay, other) = (key(2).peer_id(), key(1), key(3));
    let cases = [
        (
            ok_reservation(UNIX + 5, None),
            RelayError::Expired {
                expire_unix: UNIX + 5,
            },
        ),
        (
            HopMessage::with_status(Status::Ok),
            RelayError::MissingField("reservation"),
        ),
        (HopMessage::reserve(), RelayError::Unexpected),
        (
            HopMessage {
                status: None,
                ..HopMessage::with_status(Status::Ok)
            },
            RelayError::MissingField("status"),
        ),
        (
            ok_reservation(
                UNIX + 60,
                Some(make_voucher(&relay, &other.peer_id(), UNIX + 60)),
            ),
            RelayError::Voucher(VoucherError::WrongPeer),
        ),
        (
            ok_reservation(UNIX + 60, Some(make_voucher(&other, &alice, UNIX + 60))),
            RelayError::Voucher(VoucherError::WrongRelay),
        ),
        (
            ok_reservation(UNIX + 60, Some(vec![1, 2, 3])),
            RelayError::Voucher(VoucherError::Envelope(
                crate::identity::EnvelopeError::Protobuf,
            )),
        ),
        (
            ok_reservation(
                UNIX + 60,
                Some(crate::identity::Envelope::seal(
                    &relay,
                    VOUCHER_DOMAIN,
                    &[0x03, 0x01],
                    b"",
                )),
            ),
            RelayError::Voucher(VoucherError::PayloadType),
        ),
    ];
    for (answer, want) in cases {
        // The clock says 10 s after UNIX, so UNIX + 5 is past.
        assert_eq!(reserve_answer(&answer, 3).0, Err(want));
    }
}

#[test]
fn every_refusal_status_reaches_the_client() {
    for status in [
        Status::ReservationRefused,
        Status::ResourceLimitExceeded,
        Status::PermissionDenied,
        Status::ConnectionFailed,
        Status::NoReservation,
        Status::MalformedMessage,
        Status::UnexpectedMessage,
    ] {
        let answer = HopMessage::with_status(status);
        assert_eq!(
            reserve_answer(&answer, 1).0,
            Err(RelayError::Refused(status))
        );
        let mut c = Connect::new(t(0), key(5).peer_id(), &ClientConfig::default());
        assert_eq!(
            c.handle_read(t(0), &answer.to_frame()),
            answer.to_frame().len()
        );
        assert_eq!(c.poll_outcome(), Some(Err(RelayError::Refused(status))));
        let mut s = StopRequester::new(t(0), key(5).peer_id(), None, &ServerConfig::default());
        let stop = StopMessage::with_status(status).to_frame();
        assert_eq!(s.handle_read(t(0), &stop), stop.len());
        assert_eq!(s.poll_outcome(), Some(Err(RelayError::Refused(status))));
    }
}

#[test]
fn deadlines_and_early_ends() {
    let config = ClientConfig::default();
    let mut r = Reserve::new(t(0), key(1).peer_id(), key(2).peer_id(), clock(), &config);
    assert_eq!(r.poll_timeout(), Some(t(60)));
    r.handle_timeout(t(59));
    assert_eq!(r.poll_outcome(), None);
    r.handle_timeout(t(60));
    assert_eq!(r.poll_outcome(), Some(Err(RelayError::Timeout)));
    assert_eq!(r.poll_timeout(), None, "nothing left to wake for");
    assert_eq!(r.handle_read(t(61), &[0x00]), 0, "done: reads nothing");

    let mut c = Connect::new(t(0), key(1).peer_id(), &config);
    assert_eq!(c.handle_read(t(0), &[0x05, 0x08]), 2);
    c.handle_eof();
    assert_eq!(c.poll_outcome(), Some(Err(RelayError::Closed)));

    let mut c = Connect::new(t(0), key(1).peer_id(), &config);
    assert_eq!(c.handle_read(t(0), &[0xff, 0x7f]), 2);
    assert!(matches!(
        c.poll_outcome(),
        Some(Err(RelayError::Message(
            proto::MessageError::TooLong { .. }
        )))
    ));
}

/// Runs a STOP CONNECT into a responder; returns its status answer.
fn stop_answer(
    admit: Admit,
    decide: impl FnOnce(&mut StopResponder),
) -> (Status, Option<Result<InboundCircuit, RelayError>>) {
    let alice = key(2).peer_id();
    let mut s = StopResponder::new(t(0), admit, &ClientConfig::default());
    let limit = Limit {
        duration: Some(60),
        data: Some(1024),
    };
    let mut wire = StopMessage::connect(alice.to_bytes(), Some(limit)).to_frame();
    wire.extend_from_slice(b"tail");
    let rest = feed(|b| s.handle_read(t(1), b), &wire, 1);
    assert_eq!(rest, b"tail");
    decide(&mut s);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    let (m, used) = proto::decode::<StopMessage>(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(m.kind(), Some(proto::StopType::Status));
    (m.status_code().unwrap(), s.poll_outcome())
}

#[test]
fn stop_requests_are_offered_accepted_refused_and_timed_out() {
    let alice = key(2).peer_id();
    let limit = Some(CircuitLimit {
        duration: Some(Duration::from_secs(60)),
        data: Some(1024),
    });
    let (status, outcome) = stop_answer(Admit::Offer, |s| {
        assert_eq!(
            s.poll_event(),
            Some(StopEvent::Request {
                initiator: alice,
                limit
            })
        );
        assert_eq!(s.poll_timeout(), Some(t(11)), "10 s to decide");
        s.accept();
    });
    assert_eq!(status, Status::Ok);
    assert_eq!(
        outcome,
        Some(Ok(InboundCircuit {
            initiator: alice,
            limit
        }))
    );

    let (status, outcome) = stop_answer(Admit::Offer, |s| s.refuse(Status::PermissionDenied));
    assert_eq!(status, Status::PermissionDenied);
    assert_eq!(
        outcome,
        Some(Err(RelayError::Declined(Status::PermissionDenied)))
    );

    let (status, _) = stop_answer(Admit::Offer, |s| {
        s.handle_timeout(t(10));
        assert!(!s.is_done());
        s.handle_timeout(t(11));
        s.accept(); // too late: no effect
    });
    assert_eq!(status, Status::ConnectionFailed);

    for refusal in [Status::NoReservation, Status::PermissionDenied] {
        let (status, outcome) = stop_answer(Admit::Refuse(refusal), |s| {
            assert_eq!(s.poll_event(), None, "not offered");
        });
        assert_eq!(status, refusal);
        assert_eq!(outcome, Some(Err(RelayError::Declined(refusal))));
    }
}

#[test]
fn responders_answer_broken_requests_with_a_status() {
    let config = ClientConfig::default();
    let cases: [(Vec<u8>, Status); 4] = [
        (
            StopMessage::with_status(Status::Ok).to_frame(),
            Status::UnexpectedMessage,
        ),
        (
            StopMessage {
                peer: None,
                ..StopMessage::connect(vec![], None)
            }
            .to_frame(),
            Status::MalformedMessage,
        ),
        (
            StopMessage::connect(vec![1, 2, 3], None).to_frame(),
            Status::MalformedMessage,
        ),
        (vec![0x03, 0x08, 0x80, 0x80], Status::MalformedMessage),
    ];
    for (wire, want) in cases {
        let mut s = StopResponder::new(t(0), Admit::Offer, &config);
        let _ = s.handle_read(t(0), &wire);
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        let (m, _) = proto::decode::<StopMessage>(&out).unwrap().unwrap();
        assert_eq!(m.status_code(), Some(want));
        assert!(s.poll_outcome().unwrap().is_err());
    }
    let mut h = HopResponder::new(t(0), &ServerConfig::default());
    let _ = h.handle_read(t(0), &HopMessage::with_status(Status::Ok).to_frame());
    let mut out = Vec::new();
    h.poll_transmit(&mut out);
    let (m, _) = proto::decode::<HopMessage>(&out).unwrap().unwrap();
    assert_eq!(m.status_code(), Some(Status::UnexpectedMessage));
}

/// Moves bytes between two machines until neither writes.
macro_rules! exchange {
    ($a:expr, $b:expr, $now:expr) => {{
        for _ in 0..4 {
            let mut wire = Vec::new();
            $a.poll_transmit(&mut wire);
            let rest = feed(|x| $b.handle_read($now, x), &wire, 1);
            assert!(rest.is_empty());
            let mut wire = Vec::new();
            $b.poll_transmit(&mut wire);
            let rest = feed(|x| $a.handle_read($now, x), &wire, 1);
            assert!(rest.is_empty());
        }
    }};
}

#[test]
fn our_client_reserves_and_connects_through_our_server() {
    let (relay_key, alice, bob) = (key(1), key(2).peer_id(), key(3).peer_id());
    let relay = relay_key.peer_id();
    let mut server = Server::new(t(0), relay_key, clock(), ServerConfig::default());
    server.set_public_addrs([tcp_addr(9)]);
    let config = ClientConfig::default();

    // Bob reserves.
    let mut reserve = Reserve::new(t(0), relay, bob, clock(), &config);
    let mut hop = HopResponder::new(t(0), server.config());
    exchange!(reserve, hop, t(0));
    assert_eq!(hop.poll_event(), Some(HopRequest::Reserve));
    let grant = server.handle_reserve(t(0), bob, None, false).unwrap();
    hop.grant_reservation(grant.reservation, grant.limit);
    exchange!(reserve, hop, t(0));
    let reservation = reserve.poll_outcome().unwrap().unwrap();
    assert_eq!(reservation.expire, t(3600));
    let mut want_addr = tcp_addr(9);
    want_addr.extend_from_slice(&p2p_suffix(&relay));
    assert_eq!(reservation.addrs, vec![want_addr]);
    assert_eq!(
        reservation.limit,
        Some(CircuitLimit {
            duration: Some(Duration::from_secs(120)),
            data: Some(128 * 1024),
        })
    );
    assert!(reservation.voucher.is_some(), "our relay signs a voucher");
    assert_eq!(hop.poll_outcome(), Some(Ok(HopRequest::Reserve)));

    // Alice connects to Bob; the relay tells Bob over stop.
    let mut connect = Connect::new(t(1), bob, &config);
    let mut hop = HopResponder::new(t(1), server.config());
    exchange!(connect, hop, t(1));
    assert_eq!(hop.poll_event(), Some(HopRequest::Connect { target: bob }));
    let circuit = server.handle_connect(t(1), alice, bob, false).unwrap();
    let limit = server.circuit_limit().map(Limit::from);
    let mut stop = StopRequester::new(t(1), alice, limit, server.config());
    let mut target = StopResponder::new(t(1), Admit::Offer, &config);
    exchange!(stop, target, t(1));
    assert!(
        matches!(target.poll_event(), Some(StopEvent::Request { initiator, .. }) if initiator == alice)
    );
    target.accept();
    exchange!(stop, target, t(1));
    assert_eq!(stop.poll_outcome(), Some(Ok(())));
    hop.accept_connect(limit);
    exchange!(connect, hop, t(1));
    assert_eq!(
        connect.poll_outcome().unwrap().unwrap().limit,
        reservation.limit
    );
    assert_eq!(server.circuit_ends(circuit), Some((alice, bob)));
    server.handle_circuit_closed(circuit);
    assert_eq!(server.circuits(), 0);
}

#[test]
fn normalised_reservation_addresses() {
    let relay = key(1).peer_id();
    let other = key(2).peer_id();
    let suffix = p2p_suffix(&relay);
    let with = |mut a: Vec<u8>, n: usize| {
        for _ in 0..n {
            a.extend_from_slice(&suffix);
        }
        a
    };
    let mut foreign = tcp_addr(1);
    foreign.extend_from_slice(&p2p_suffix(&other));
    let got = normalize_addrs(
        vec![
            tcp_addr(1),
            with(tcp_addr(2), 1),
            with(tcp_addr(3), 2),
            vec![0xff, 0xff, 0x03], // unknown protocol code
            vec![0x04, 1, 2],       // truncated
            foreign,
            with(tcp_addr(1), 1), // a duplicate once normalised
            suffix.clone(),       // nothing but the suffix
        ],
        &relay,
    );
    assert_eq!(
        got,
        vec![
            with(tcp_addr(1), 1),
            with(tcp_addr(2), 1),
            with(tcp_addr(3), 1)
        ]
    );
}

fn ip(n: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
}

/// The `i`th of many distinct peers.
fn numbered_peer(i: u32) -> PeerId {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Keypair::from_secret_bytes(seed).peer_id()
}

fn server_with(config: ServerConfig) -> Server {
    Server::new(t(0), key(1), clock(), config)
}

#[test]
fn the_server_keeps_its_reservation_limits() {
    let config = ServerConfig {
        max_reservations: 4,
        max_reservations_per_ip: 2,
        ..ServerConfig::default()
    };
    let mut s = server_with(config);
    let peers: Vec<PeerId> = (10..20).map(|n| key(n).peer_id()).collect();
    assert!(s.handle_reserve(t(0), peers[0], ip(1), false).is_ok());
    assert!(s.handle_reserve(t(0), peers[1], ip(1), false).is_ok());
    assert_eq!(
        s.handle_reserve(t(0), peers[2], ip(1), false).unwrap_err(),
        Status::ReservationRefused,
        "third on one IP"
    );
    // A refresh from the same IP replaces the reservation, not adding one.
    let again = s.handle_reserve(t(1), peers[1], ip(1), false).unwrap();
    assert!(again.renewed);
    assert_eq!(s.reservations(), 2);
    assert!(s.handle_reserve(t(1), peers[2], ip(2), false).is_ok());
    assert!(s.handle_reserve(t(1), peers[3], ip(3), false).is_ok());
    assert_eq!(
        s.handle_reserve(t(1), peers[4], ip(4), false).unwrap_err(),
        Status::ReservationRefused,
        "full"
    );
    assert_eq!(
        s.handle_reserve(t(1), peers[4], ip(4), true).unwrap_err(),
        Status::PermissionDenied,
        "over a relayed connection"
    );
    // The last connection closes: the slot is free.
    s.handle_peer_disconnected(&peers[0]);
    assert!(!s.has_reservation(&peers[0]));
    assert!(s.handle_reserve(t(1), peers[4], ip(4), false).is_ok());

    // Expiry: peers[1] renewed at 1 s, the others at 0 s / 1 s.
    assert_eq!(s.poll_timeout(), Some(t(3601)));
    s.handle_timeout(t(3601));
    assert_eq!(s.reservations(), 0);
    let ended = core::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, ServerEvent::ReservationEnded { expired: true, .. }))
        .count();
    assert_eq!(ended, 4);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn reserve_floods_are_rate_limited_per_peer_and_per_ip() {
    let mut s = server_with(ServerConfig::default());
    let p = key(10).peer_id();
    assert!(s.handle_reserve(t(0), p, ip(1), false).is_ok());
    assert!(s.handle_reserve(t(1), p, ip(1), false).is_ok());
    assert_eq!(
        s.handle_reserve(t(2), p, ip(1), false).unwrap_err(),
        Status::ResourceLimitExceeded
    );
    assert!(
        s.handle_reserve(t(121), p, ip(1), false).is_ok(),
        "one token back after 2 min"
    );

    // One IP, many peers: the IP's bucket (60) runs dry.
    let config = ServerConfig {
        max_reservations_per_ip: 1000,
        max_reservations: 1000,
        ..ServerConfig::default()
    };
    let mut s = server_with(config);
    let granted = (0..100u32)
        .filter(|&i| {
            let peer = numbered_peer(i);
            s.handle_reserve(t(0), peer, ip(7), false).is_ok()
        })
        .count();
    assert_eq!(granted, 60);
}

#[test]
fn refreshes_of_a_short_reservation_are_not_rate_limited_but_early_ones_are() {
    // A 30 s TTL, far below the 2 min rate interval: refreshes in the
    // second half of each lifetime always pass, for as long as they come.
    let mut s = server_with(ServerConfig {
        reservation_ttl: Duration::from_secs(30),
        ..ServerConfig::default()
    });
    let p = key(10).peer_id();
    assert!(s.handle_reserve(t(0), p, ip(1), false).is_ok());
    for k in 1..=20u64 {
        let at = t(k * 22);
        assert!(s.handle_reserve(at, p, ip(1), false).is_ok(), "refresh {k}");
    }
    // Early refreshes are charged: the bucket (2) runs dry.
    let now = 20 * 22;
    assert!(s.handle_reserve(t(now + 1), p, ip(1), false).is_ok());
    assert!(s.handle_reserve(t(now + 2), p, ip(1), false).is_ok());
    assert_eq!(
        s.handle_reserve(t(now + 3), p, ip(1), false).unwrap_err(),
        Status::ResourceLimitExceeded
    );
    // From another IP, nothing is free.
    let q = key(11).peer_id();
    assert!(s.handle_reserve(t(1000), q, ip(2), false).is_ok());
    assert!(s.handle_reserve(t(1001), q, ip(2), false).is_ok());
    assert!(s.handle_reserve(t(1020), q, ip(3), false).is_err());
}

#[test]
fn circuits_are_bounded_per_peer_and_in_total() {
    let config = ServerConfig {
        max_circuits: 3,
        max_circuits_per_peer: 2,
        ..ServerConfig::default()
    };
    let mut s = server_with(config);
    let (a, b, c, d) = (
        key(10).peer_id(),
        key(11).peer_id(),
        key(12).peer_id(),
        key(13).peer_id(),
    );
    for p in [b, c] {
        s.handle_reserve(t(0), p, None, false).unwrap();
    }
    assert_eq!(
        s.handle_connect(t(0), a, d, false),
        Err(Status::NoReservation)
    );
    assert_eq!(
        s.handle_connect(t(0), a, b, true),
        Err(Status::PermissionDenied)
    );
    let first = s.handle_connect(t(0), a, b, false).unwrap();
    s.handle_connect(t(0), a, b, false).unwrap();
    assert_eq!(
        s.handle_connect(t(0), a, c, false),
        Err(Status::ResourceLimitExceeded),
        "a has two"
    );
    s.handle_connect(t(0), d, c, false).unwrap();
    assert_eq!(
        s.handle_connect(t(0), c, b, false),
        Err(Status::ResourceLimitExceeded),
        "three in total"
    );
    s.handle_circuit_closed(first);
    s.handle_circuit_closed(first); // twice is harmless
    assert!(s.handle_connect(t(0), a, c, false).is_ok());
    assert_eq!(s.circuits(), 3);
}

#[test]
fn a_flood_from_many_peers_keeps_every_table_bounded() {
    let config = ServerConfig {
        max_rate_entries: 64,
        ..ServerConfig::default()
    };
    let mut s = server_with(config);
    for i in 0..5000u32 {
        let peer = numbered_peer(i);
        let _ = s.handle_reserve(t(u64::from(i / 10)), peer, ip((i % 200) as u8), false);
        let _ = s.handle_connect(t(u64::from(i / 10)), peer, peer, false);
        while s.poll_event().is_some() {}
    }
    assert_eq!(s.reservations(), 128);
    assert!(s.circuits() <= 16);
    assert!(s.rate_entries() <= 2 * 64);
}

/// A voucher a js-libp2p relay (`@libp2p/circuit-relay-v2` 4.2.13) put in
/// its RESERVE answer, captured by the conformance tests; how and with
/// which keys is in the `.txt` beside it.
const JS_VOUCHER: &str = include_str!("../../../conformance/tests/data/js_relay_voucher.hex");

#[test]
fn a_voucher_signed_by_js_libp2p_verifies_and_ours_is_byte_identical() {
    let bytes = data_encoding::HEXLOWER
        .decode(JS_VOUCHER.trim().as_bytes())
        .unwrap();
    let (relay, client) = (key(21), key(23));
    let voucher = verify_voucher(&bytes, &relay.peer_id(), &client.peer_id()).unwrap();
    assert_eq!(voucher.expiration, 1_796_260_507);
    // Ed25519 is deterministic: the same envelope, field for field.
    assert_eq!(
        make_voucher(&relay, &client.peer_id(), 1_796_260_507),
        bytes
    );
    // The wrong peer, the wrong relay, a bit flipped in the signature.
    assert_eq!(
        verify_voucher(&bytes, &relay.peer_id(), &relay.peer_id()),
        Err(VoucherError::WrongPeer)
    );
    assert!(verify_voucher(&bytes, &client.peer_id(), &client.peer_id()).is_err());
    let mut forged = bytes.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(verify_voucher(&forged, &relay.peer_id(), &client.peer_id()).is_err());
}

#[test]
fn circuit_addresses_are_one_hop_with_both_ids() {
    let (relay, target) = (key(1).peer_id(), key(2).peer_id());
    let circuit = || {
        let mut a = Vec::new();
        varint::push(addr::code::P2P_CIRCUIT, &mut a);
        a
    };
    let join = |parts: &[&[u8]]| parts.concat();
    let (r, t, c, tcp) = (
        p2p_suffix(&relay),
        p2p_suffix(&target),
        circuit(),
        tcp_addr(1),
    );
    let full = join(&[&tcp, &r, &c, &t]);
    let parsed = CircuitAddr::parse(&full).unwrap();
    assert_eq!(parsed.relay_addr, join(&[&tcp, &r]).as_slice());
    assert_eq!((parsed.relay, parsed.target), (relay, target));
    // No transport: the relay part is its id alone.
    let bare = join(&[&r, &c, &t]);
    assert_eq!(CircuitAddr::parse(&bare).unwrap().relay_addr, r.as_slice());
    for bad in [
        join(&[&tcp, &c, &t]),         // no relay id
        join(&[&r, &tcp, &c, &t]),     // the relay id is not the hop's
        join(&[&tcp, &r, &c]),         // no target
        join(&[&tcp, &r, &c, &t, &c]), // two hops
        join(&[&tcp, &r, &c, &t, &tcp]),
        join(&[&tcp, &r]),
        full[..full.len() - 1].to_vec(),
    ] {
        assert_eq!(CircuitAddr::parse(&bad), None, "{bad:02x?}");
    }
}

// Found by the fuzz target `relay_handshakes`: `Admit::Refuse(Ok)` wrote a
// STATUS OK while reporting the circuit declined, so the relay spliced a
// circuit the target had refused.
#[test]
fn a_stop_refused_with_ok_on_admission_is_connection_failed() {
    let (status, outcome) = stop_answer(Admit::Refuse(Status::Ok), |s| {
        assert_eq!(s.poll_event(), None, "not offered");
    });
    assert_eq!(status, Status::ConnectionFailed);
    assert_eq!(
        outcome,
        Some(Err(RelayError::Declined(Status::ConnectionFailed)))
    );
}

// Found by `relay_handshakes`: an answer of the wrong kind (accept_connect
// on a RESERVE) dropped the request, so it was never answered and its
// deadline ended in a silent Timeout instead of CONNECTION_FAILED.
#[test]
fn a_hop_answer_of_the_wrong_kind_leaves_the_request_to_answer() {
    let mut h = HopResponder::new(t(0), &ServerConfig::default());
    let _ = h.handle_read(t(0), &HopMessage::reserve().to_frame());
    assert_eq!(h.poll_event(), Some(HopRequest::Reserve));
    h.accept_connect(None);
    let mut out = Vec::new();
    h.poll_transmit(&mut out);
    assert!(out.is_empty() && !h.is_done(), "no effect on a RESERVE");
    h.handle_timeout(t(60));
    h.poll_transmit(&mut out);
    let (m, _) = proto::decode::<HopMessage>(&out).unwrap().unwrap();
    assert_eq!(m.status_code(), Some(Status::ConnectionFailed));
    assert_eq!(
        h.poll_outcome(),
        Some(Err(RelayError::Declined(Status::ConnectionFailed)))
    );

    let target = key(3).peer_id();
    let mut h = HopResponder::new(t(0), &ServerConfig::default());
    let _ = h.handle_read(t(0), &HopMessage::connect(target.to_bytes()).to_frame());
    h.grant_reservation(proto::Reservation::default(), None);
    assert!(!h.is_done(), "no effect on a CONNECT");
    h.accept_connect(None);
    assert_eq!(h.poll_outcome(), Some(Ok(HopRequest::Connect { target })));
}

// Found by `relay_handshakes`: an answer after the other side closed first
// (outcome Closed) was still written, an OK the deciding side had given up on.
#[test]
fn no_answer_is_written_once_the_peer_closed_first() {
    let config = ClientConfig::default();
    let mut s = StopResponder::new(t(0), Admit::Offer, &config);
    let connect = StopMessage::connect(key(2).peer_id().to_bytes(), None).to_frame();
    let _ = s.handle_read(t(0), &connect);
    assert!(s.poll_event().is_some());
    s.handle_eof();
    s.accept();
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    assert!(out.is_empty(), "an OK after the relay closed: {out:02x?}");
    assert_eq!(s.poll_outcome(), Some(Err(RelayError::Closed)));

    for answer in 0..3 {
        let mut h = HopResponder::new(t(0), &ServerConfig::default());
        let _ = h.handle_read(t(0), &HopMessage::reserve().to_frame());
        h.handle_eof();
        match answer {
            0 => h.grant_reservation(proto::Reservation::default(), None),
            1 => h.refuse(Status::ReservationRefused),
            _ => h.handle_timeout(t(3600)),
        }
        h.poll_transmit(&mut out);
        assert!(out.is_empty(), "answer {answer} written after EOF");
        assert_eq!(h.poll_outcome(), Some(Err(RelayError::Closed)));
    }
}

// Found by the fuzz target `relay_server`: a circuit from a peer to itself
// takes two of its slots, and was admitted with only one free, leaving the
// per-peer table above `max_circuits_per_peer`.
#[test]
fn a_circuit_to_oneself_needs_two_free_slots() {
    let config = ServerConfig {
        max_circuits_per_peer: 1,
        ..ServerConfig::default()
    };
    let mut s = server_with(config);
    let p = key(10).peer_id();
    s.handle_reserve(t(0), p, None, false).unwrap();
    assert_eq!(
        s.handle_connect(t(0), p, p, false),
        Err(Status::ResourceLimitExceeded)
    );
    let mut s = server_with(ServerConfig {
        max_circuits_per_peer: 2,
        ..ServerConfig::default()
    });
    s.handle_reserve(t(0), p, None, false).unwrap();
    let id = s.handle_connect(t(0), p, p, false).unwrap();
    assert_eq!(
        s.handle_connect(t(0), key(11).peer_id(), p, false),
        Err(Status::ResourceLimitExceeded),
        "both of p's slots are taken"
    );
    s.handle_circuit_closed(id);
    assert!(s.handle_connect(t(0), key(11).peer_id(), p, false).is_ok());
}
