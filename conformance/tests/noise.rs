//! `/noise` conformance: our XX handshake and transport against
//! `libp2p-noise`, driven through rust-libp2p's connection-upgrade traits
//! over loopback TCP, in both roles, with reads from 1 byte to 64 KiB and
//! data larger than one noise frame each way.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};

use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use sansp2p::security::noise::{Event, Handshake, NoiseError, Transport, PROTOCOL};
use sansp2p::{Keypair, PeerId};
use sansp2p_conformance::{
    drive, exchange_remote, join, payload, spawn_remote, tcp_pair, BYTE_BY_BYTE, LARGE_READS,
};

fn their_keypair(seed: u8) -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn their_config(key: &libp2p_identity::Keypair) -> (libp2p_noise::Config, &'static str) {
    let config = libp2p_noise::Config::new(key).expect("their noise config");
    let names: Vec<&'static str> = config.protocol_info().collect();
    assert_eq!(names.len(), 1, "noise announces one protocol: {names:?}");
    (config, names[0])
}

fn as_our_peer_id(id: &libp2p_identity::PeerId) -> PeerId {
    PeerId::from_bytes(&id.to_bytes()).expect("their peer id is a valid multihash")
}

/// Fresh-looking secrets for one handshake (tests need no real randomness,
/// only distinct values).
fn secrets(seed: u8) -> ([u8; 32], [u8; 32]) {
    (
        [seed.wrapping_mul(7); 32],
        [seed.wrapping_mul(13).wrapping_add(1); 32],
    )
}

#[test]
fn we_announce_the_protocol_name_they_do() {
    let (_, info) = their_config(&their_keypair(1));
    assert_eq!(PROTOCOL, info);
}

fn done(events: Vec<Event>) -> (PeerId, Box<Transport>) {
    assert_eq!(events.len(), 1, "{events:?}");
    match events.into_iter().next() {
        Some(Event::Done {
            peer, transport, ..
        }) => (peer, transport),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Sends `to_them` encrypted, closes our sending side, and decrypts all they
/// send until they close, starting with `leftover`.
fn exchange_encrypted(
    stream: &mut TcpStream,
    transport: &mut Transport,
    leftover: &[u8],
    to_them: &[u8],
    read_size: usize,
) -> Vec<u8> {
    let mut wire = Vec::new();
    transport.encrypt(to_them, &mut wire).unwrap();
    stream.write_all(&wire).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut received = Vec::new();
    transport.decrypt(leftover, &mut received).unwrap();
    let mut buf = vec![0u8; read_size];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            return received;
        }
        transport.decrypt(&buf[..n], &mut received).unwrap();
    }
}

#[test]
fn our_dialer_against_their_listener() {
    for (i, read_size) in [BYTE_BY_BYTE, 7, LARGE_READS].into_iter().enumerate() {
        let ours = Keypair::from_secret_bytes([1; 32]);
        let their = their_keypair(2);
        // Larger than one frame (65 519 bytes of plaintext) each way.
        let to_us = payload("noise data from rust-libp2p", 200_000);
        let to_them = payload("noise data from sansp2p", 150_000);
        let (mut dialer, listener) = tcp_pair().unwrap();

        let remote = spawn_remote(listener, {
            let (config, info) = their_config(&their);
            let to_us = to_us.clone();
            move |io| async move {
                let (peer, mut output) = config.upgrade_inbound(io, info).await.unwrap();
                let received = exchange_remote(&mut output, &to_us).await.unwrap();
                (peer, received)
            }
        });

        let (s, e) = secrets(i as u8);
        let expected = as_our_peer_id(&their.public().to_peer_id());
        let mut handshake = Handshake::initiator(&ours, s, e, Some(expected));
        let outcome = drive(&mut handshake, &mut dialer, &[], read_size).unwrap();
        let (peer, mut transport) = done(outcome.events);
        assert_eq!(peer, expected);
        let received = exchange_encrypted(
            &mut dialer,
            &mut transport,
            &outcome.leftover,
            &to_them,
            read_size,
        );
        let (their_view, their_received) = join(remote);

        assert_eq!(
            their_view.to_bytes(),
            ours.peer_id().as_bytes(),
            "they learnt our peer id"
        );
        assert!(
            received == to_us,
            "reads of {read_size}: data from them lost or garbled"
        );
        assert!(
            their_received == to_them,
            "reads of {read_size}: data to them lost or garbled"
        );
    }
}

#[test]
fn our_listener_against_their_dialer() {
    for (i, read_size) in [BYTE_BY_BYTE, 7, LARGE_READS].into_iter().enumerate() {
        let ours = Keypair::from_secret_bytes([3; 32]);
        let their = their_keypair(4);
        let to_us = payload("dialer data", 100_000);
        let to_them = payload("listener data", 70_000);
        let (dialer, mut listener) = tcp_pair().unwrap();

        let remote = spawn_remote(dialer, {
            let (config, info) = their_config(&their);
            let to_us = to_us.clone();
            move |io| async move {
                let (peer, mut output) = config.upgrade_outbound(io, info).await.unwrap();
                let received = exchange_remote(&mut output, &to_us).await.unwrap();
                (peer, received)
            }
        });

        let (s, e) = secrets(10 + i as u8);
        let mut handshake = Handshake::responder(&ours, s, e);
        let outcome = drive(&mut handshake, &mut listener, &[], read_size).unwrap();
        let (peer, mut transport) = done(outcome.events);
        assert_eq!(peer, as_our_peer_id(&their.public().to_peer_id()));
        let received = exchange_encrypted(
            &mut listener,
            &mut transport,
            &outcome.leftover,
            &to_them,
            read_size,
        );
        let (their_view, their_received) = join(remote);

        assert_eq!(their_view.to_bytes(), ours.peer_id().as_bytes());
        assert!(received == to_us, "reads of {read_size}");
        assert!(their_received == to_them, "reads of {read_size}");
    }
}

/// We dial expecting one peer and reach another: `UnexpectedPeer`, naming
/// the peer id rust-libp2p computes for the key that answered.
#[test]
fn our_dialer_refuses_an_unexpected_peer() {
    let ours = Keypair::from_secret_bytes([7; 32]);
    let their = their_keypair(8);
    let someone_else = as_our_peer_id(&their_keypair(9).public().to_peer_id());
    let (mut dialer, listener) = tcp_pair().unwrap();

    let remote = spawn_remote(listener, {
        let (config, info) = their_config(&their);
        move |io| async move { config.upgrade_inbound(io, info).await.is_err() }
    });

    let (s, e) = secrets(20);
    let mut handshake = Handshake::initiator(&ours, s, e, Some(someone_else));
    let outcome = drive(&mut handshake, &mut dialer, &[], LARGE_READS).unwrap();
    match &outcome.events[..] {
        [Event::Failed(NoiseError::UnexpectedPeer { expected, found })] => {
            assert_eq!(*expected, someone_else);
            assert_eq!(*found, as_our_peer_id(&their.public().to_peer_id()));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    // We stop before message 3: their handshake cannot complete.
    drop(dialer);
    assert!(join(remote), "their listener saw the handshake fail");
}

/// A byte flipped on the wire after the handshake: decryption fails with a
/// typed error instead of handing over altered data.
#[test]
fn tampered_transport_data_is_refused() {
    let ours = Keypair::from_secret_bytes([11; 32]);
    let their = their_keypair(12);
    let (mut dialer, listener) = tcp_pair().unwrap();
    let remote = spawn_remote(listener, {
        let (config, info) = their_config(&their);
        move |io| async move {
            let (_, mut output) = config.upgrade_inbound(io, info).await.unwrap();
            exchange_remote(&mut output, b"authentic").await.unwrap()
        }
    });
    let (s, e) = secrets(30);
    let mut handshake = Handshake::initiator(&ours, s, e, None);
    let outcome = drive(&mut handshake, &mut dialer, &[], LARGE_READS).unwrap();
    let (_, mut transport) = done(outcome.events);
    let mut wire = outcome.leftover;
    dialer.shutdown(Shutdown::Write).unwrap();
    dialer.read_to_end(&mut wire).unwrap();
    assert!(wire.len() > 2 + 16, "their frame arrived");
    let last = wire.len() - 1;
    wire[last] ^= 0x01;
    let mut plain = Vec::new();
    assert_eq!(
        transport.decrypt(&wire, &mut plain),
        Err(NoiseError::Decrypt)
    );
    assert!(plain.is_empty(), "nothing of a forged frame is handed over");
    join(remote);
}
