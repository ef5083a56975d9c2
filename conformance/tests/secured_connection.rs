//! The two layers together, as a connection upgrade: multistream-select
//! agrees on `/plaintext/2.0.0`, then the plaintext handshake runs on the
//! same stream, against rust-libp2p's `multistream-select` and
//! `libp2p-plaintext` composed by hand. Bytes our negotiator read past its
//! last message must reach our handshake, and bytes our handshake read past
//! the peer's `Exchange` must reach the application.

use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use multistream_select::{dialer_select_proto, listener_select_proto, Version};
use sansp2p::multistream::{Event as MsEvent, Message, Negotiator};
use sansp2p::security::plaintext::{Event as PtEvent, Handshake, PROTOCOL};
use sansp2p::{Keypair, PeerId};
use sansp2p_conformance::{
    drive, exchange_local, exchange_remote, flush, join, payload, spawn_remote, tcp_pair,
    wait_for_bytes, BYTE_BY_BYTE, LARGE_READS,
};

fn their_config(seed: u8) -> (libp2p_identity::Keypair, libp2p_plaintext::Config) {
    let key = libp2p_identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    let config = libp2p_plaintext::Config::new(&key);
    (key, config)
}

fn their_peer_id(key: &libp2p_identity::Keypair) -> PeerId {
    PeerId::from_bytes(&key.public().to_peer_id().to_bytes()).unwrap()
}

/// What the rust-libp2p side agreed on, who it met, and what data it got.
type RemoteResult = (String, libp2p_identity::PeerId, Vec<u8>);

fn assert_negotiated(events: &[MsEvent], protocol: &str) {
    assert!(
        matches!(events, [MsEvent::Negotiated { protocol: p }] if p == protocol),
        "expected only Negotiated({protocol}), got {events:?}"
    );
}

fn assert_done(events: &[PtEvent], peer: PeerId) {
    assert!(
        matches!(events, [PtEvent::Done { peer: p, .. }] if *p == peer),
        "expected Done({peer}), got {events:?}"
    );
}

/// Length on the wire of the dialer's opening (header and one proposal), as
/// our encoder writes it; only used as a threshold for waiting.
fn opening_len(protocol: &str) -> usize {
    let mut wire = Vec::new();
    Message::Header.encode(&mut wire);
    Message::Protocol(protocol).encode(&mut wire);
    wire.len()
}

/// Our dialer negotiates their plaintext and runs our handshake on the
/// result; their listener selects and upgrades inbound.
#[test]
fn our_dialer_upgrades_to_their_plaintext() {
    // `coalesce`: wait until their Exchange is in the socket behind their
    // header and echo, so our negotiator's last read carries plaintext bytes.
    for (read_size, coalesce) in [
        (BYTE_BY_BYTE, false),
        (LARGE_READS, false),
        (LARGE_READS, true),
    ] {
        let ctx = format!("reads of {read_size}, coalesce {coalesce}");
        let ours = Keypair::from_secret_bytes([21; 32]);
        let (their_key, config) = their_config(22);
        let to_us = payload("secured data from rust-libp2p", 2222);
        let to_them = payload("secured data from sansp2p", 1111);
        let (mut dialer, listener) = tcp_pair().unwrap();

        let remote = spawn_remote(listener, {
            let to_us = to_us.clone();
            move |io| async move {
                let (protocol, io) = listener_select_proto(io, config.protocol_info()).await?;
                let (peer, mut secured) = config.upgrade_inbound(io, protocol).await.unwrap();
                let received = exchange_remote(&mut secured, &to_us).await?;
                Ok::<RemoteResult, std::io::Error>((protocol.to_owned(), peer, received))
            }
        });

        let mut negotiator = Negotiator::dialer([PROTOCOL]).unwrap();
        if coalesce {
            flush(&mut negotiator, &mut dialer).unwrap();
            wait_for_bytes(&dialer, opening_len(PROTOCOL) + 1).unwrap();
        }
        let negotiation = drive(&mut negotiator, &mut dialer, &[], read_size).unwrap();
        assert_negotiated(&negotiation.events, PROTOCOL);
        if coalesce {
            assert!(
                !negotiation.leftover.is_empty(),
                "{ctx}: plaintext bytes in the last read"
            );
        }

        let mut handshake = Handshake::new(&ours.public(), Some(their_peer_id(&their_key)));
        let secured = drive(
            &mut handshake,
            &mut dialer,
            &negotiation.leftover,
            read_size,
        )
        .unwrap();
        assert_done(&secured.events, their_peer_id(&their_key));
        let received = exchange_local(&mut dialer, secured.leftover, &to_them).unwrap();
        let (their_protocol, their_peer, their_received) = join(remote).expect(&ctx);

        assert_eq!(their_protocol, PROTOCOL, "{ctx}");
        assert_eq!(their_peer.to_bytes(), ours.peer_id().as_bytes(), "{ctx}");
        assert!(received == to_us, "{ctx}: data from them lost or doubled");
        assert!(
            their_received == to_them,
            "{ctx}: data to them lost or doubled"
        );
    }
}

/// Their dialer negotiates plaintext and upgrades outbound; our listener
/// negotiates and runs our handshake. With `V1Lazy` their dialer does not
/// wait for our echo: its `Exchange` follows the proposal directly, so our
/// negotiator must leave those bytes for our handshake.
#[test]
fn their_dialer_upgrades_to_our_plaintext() {
    let cases = [
        (Version::V1, BYTE_BY_BYTE, false),
        (Version::V1, LARGE_READS, false),
        (Version::V1Lazy, BYTE_BY_BYTE, false),
        (Version::V1Lazy, LARGE_READS, false),
        (Version::V1Lazy, LARGE_READS, true),
    ];
    for (version, read_size, coalesce) in cases {
        let ctx = format!("{version:?}, reads of {read_size}, coalesce {coalesce}");
        let ours = Keypair::from_secret_bytes([23; 32]);
        let (their_key, config) = their_config(24);
        let to_us = payload("secured dialer data", 1500);
        let to_them = payload("secured listener data", 2500);
        let (dialer, mut listener) = tcp_pair().unwrap();

        let remote = spawn_remote(dialer, {
            let to_us = to_us.clone();
            move |io| async move {
                let (protocol, io) =
                    dialer_select_proto(io, config.protocol_info(), version).await?;
                let (peer, mut secured) = config.upgrade_outbound(io, protocol).await.unwrap();
                let received = exchange_remote(&mut secured, &to_us).await?;
                Ok::<RemoteResult, std::io::Error>((protocol.to_owned(), peer, received))
            }
        });

        if coalesce {
            // Their lazy opening and their Exchange behind it.
            wait_for_bytes(&listener, opening_len(PROTOCOL) + 1).unwrap();
        }
        let mut negotiator = Negotiator::listener([PROTOCOL]).unwrap();
        let negotiation = drive(&mut negotiator, &mut listener, &[], read_size).unwrap();
        assert_negotiated(&negotiation.events, PROTOCOL);
        if coalesce {
            assert!(
                !negotiation.leftover.is_empty(),
                "{ctx}: plaintext bytes in the last read"
            );
        }

        let mut handshake = Handshake::new(&ours.public(), None);
        let secured = drive(
            &mut handshake,
            &mut listener,
            &negotiation.leftover,
            read_size,
        )
        .unwrap();
        assert_done(&secured.events, their_peer_id(&their_key));
        let received = exchange_local(&mut listener, secured.leftover, &to_them).unwrap();
        let (their_protocol, their_peer, their_received) = join(remote).expect(&ctx);

        assert_eq!(their_protocol, PROTOCOL, "{ctx}");
        assert_eq!(their_peer.to_bytes(), ours.peer_id().as_bytes(), "{ctx}");
        assert!(received == to_us, "{ctx}: data from them lost or doubled");
        assert!(
            their_received == to_them,
            "{ctx}: data to them lost or doubled"
        );
    }
}
