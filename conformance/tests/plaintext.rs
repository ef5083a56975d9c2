//! plaintext/2.0.0 conformance: our `Handshake` against `libp2p-plaintext`,
//! driven through rust-libp2p's connection-upgrade traits over loopback TCP.

use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use sansp2p::security::plaintext::{Event, Handshake, PlaintextError, PROTOCOL};
use sansp2p::{Keypair, PeerId, PublicKey};
use sansp2p_conformance::{
    drive, exchange_local, exchange_remote, flush, join, payload, spawn_remote, tcp_pair,
    wait_for_bytes, BYTE_BY_BYTE, LARGE_READS,
};

fn their_keypair(seed: u8) -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

/// Their config and the protocol name it announces (what multistream-select
/// would have handed to the upgrade).
fn their_config(key: &libp2p_identity::Keypair) -> (libp2p_plaintext::Config, &'static str) {
    let config = libp2p_plaintext::Config::new(key);
    let names: Vec<&'static str> = config.protocol_info().collect();
    assert_eq!(
        names.len(),
        1,
        "plaintext announces one protocol: {names:?}"
    );
    (config, names[0])
}

/// Their peer id, carried into our type through its binary form.
fn as_our_peer_id(id: &libp2p_identity::PeerId) -> PeerId {
    PeerId::from_bytes(&id.to_bytes()).expect("their peer id is a valid multihash")
}

fn as_our_key(key: &libp2p_identity::PublicKey) -> PublicKey {
    PublicKey::try_decode_protobuf(&key.encode_protobuf()).expect("their key decodes")
}

#[test]
fn we_announce_the_protocol_name_they_do() {
    let (_, info) = their_config(&their_keypair(1));
    assert_eq!(PROTOCOL, info);
}

/// What the rust-libp2p side learnt and received.
type RemoteResult = (libp2p_identity::PeerId, libp2p_identity::PublicKey, Vec<u8>);

fn check_done(event: &Event, their: &libp2p_identity::Keypair) {
    let expected_peer = as_our_peer_id(&their.public().to_peer_id());
    let expected_key = as_our_key(&their.public());
    match event {
        Event::Done { peer, public_key } => {
            assert_eq!(*peer, expected_peer);
            assert_eq!(*public_key, expected_key);
        }
        other => panic!("expected Done, got {other:?}"),
    }
}

fn check_remote(remote: &RemoteResult, ours: &Keypair) {
    let (peer, key, _) = remote;
    assert_eq!(
        peer.to_bytes(),
        ours.peer_id().as_bytes(),
        "they learnt our peer id"
    );
    assert_eq!(
        key.encode_protobuf(),
        ours.public().encode_protobuf(),
        "they learnt our key"
    );
}

#[test]
fn our_dialer_against_their_listener() {
    for read_size in [BYTE_BY_BYTE, LARGE_READS] {
        let ours = Keypair::from_secret_bytes([1; 32]);
        let their = their_keypair(2);
        let to_us = payload("plaintext data from rust-libp2p", 2000);
        let to_them = payload("plaintext data from sansp2p", 3000);
        let (mut dialer, listener) = tcp_pair().unwrap();

        let remote = spawn_remote(listener, {
            let (config, info) = their_config(&their);
            let to_us = to_us.clone();
            move |io| async move {
                let (peer, mut output) = config.upgrade_inbound(io, info).await.unwrap();
                let received = exchange_remote(&mut output, &to_us).await.unwrap();
                (peer, output.remote_key.clone(), received)
            }
        });

        let expected = as_our_peer_id(&their.public().to_peer_id());
        let mut handshake = Handshake::new(&ours.public(), Some(expected));
        let outcome = drive(&mut handshake, &mut dialer, &[], read_size).unwrap();
        assert_eq!(outcome.events.len(), 1, "{:?}", outcome.events);
        check_done(&outcome.events[0], &their);
        let received = exchange_local(&mut dialer, outcome.leftover, &to_them).unwrap();
        let remote = join(remote);

        check_remote(&remote, &ours);
        assert!(
            received == to_us,
            "reads of {read_size}: data from them lost or doubled"
        );
        assert!(
            remote.2 == to_them,
            "reads of {read_size}: data to them lost or doubled"
        );
    }
}

#[test]
fn our_listener_against_their_dialer() {
    for read_size in [BYTE_BY_BYTE, LARGE_READS] {
        let ours = Keypair::from_secret_bytes([3; 32]);
        let their = their_keypair(4);
        let to_us = payload("dialer data", 1000);
        let to_them = payload("listener data", 1500);
        let (dialer, mut listener) = tcp_pair().unwrap();

        let remote = spawn_remote(dialer, {
            let (config, info) = their_config(&their);
            let to_us = to_us.clone();
            move |io| async move {
                let (peer, mut output) = config.upgrade_outbound(io, info).await.unwrap();
                let received = exchange_remote(&mut output, &to_us).await.unwrap();
                (peer, output.remote_key.clone(), received)
            }
        });

        let mut handshake = Handshake::new(&ours.public(), None);
        let outcome = drive(&mut handshake, &mut listener, &[], read_size).unwrap();
        assert_eq!(outcome.events.len(), 1, "{:?}", outcome.events);
        check_done(&outcome.events[0], &their);
        let received = exchange_local(&mut listener, outcome.leftover, &to_them).unwrap();
        let remote = join(remote);

        check_remote(&remote, &ours);
        assert!(received == to_us, "reads of {read_size}");
        assert!(remote.2 == to_them, "reads of {read_size}");
    }
}

/// Their side writes data as soon as it has our `Exchange`; we read only once
/// their `Exchange` and that data are both waiting, so a single read holds
/// both and our handshake must hand the data back untouched.
#[test]
fn data_in_the_same_read_as_their_exchange_is_handed_back() {
    let ours = Keypair::from_secret_bytes([5; 32]);
    let their = their_keypair(6);
    let to_us = payload("eager", 1200);
    let to_them = payload("late", 10);
    let (mut dialer, listener) = tcp_pair().unwrap();

    let remote = spawn_remote(listener, {
        let (config, info) = their_config(&their);
        let to_us = to_us.clone();
        move |io| async move {
            let (peer, mut output) = config.upgrade_inbound(io, info).await.unwrap();
            let received = exchange_remote(&mut output, &to_us).await.unwrap();
            (peer, output.remote_key.clone(), received)
        }
    });

    let mut handshake = Handshake::new(&ours.public(), None);
    flush(&mut handshake, &mut dialer).unwrap();
    wait_for_bytes(&dialer, to_us.len()).unwrap();
    let outcome = drive(&mut handshake, &mut dialer, &[], LARGE_READS).unwrap();
    assert!(
        !outcome.leftover.is_empty(),
        "the read held their Exchange and data together"
    );
    check_done(&outcome.events[0], &their);
    let received = exchange_local(&mut dialer, outcome.leftover, &to_them).unwrap();
    let remote = join(remote);

    check_remote(&remote, &ours);
    assert!(received == to_us);
    assert!(remote.2 == to_them);
}

/// We dial expecting one peer and reach another: the handshake fails with
/// `UnexpectedPeer`, naming the peer id rust-libp2p computes for the key that
/// answered. (Their side does not check, so it completes.)
#[test]
fn our_dialer_refuses_an_unexpected_peer() {
    let ours = Keypair::from_secret_bytes([7; 32]);
    let their = their_keypair(8);
    let someone_else = their_keypair(9).public().to_peer_id();
    let (mut dialer, listener) = tcp_pair().unwrap();

    let remote = spawn_remote(listener, {
        let (config, info) = their_config(&their);
        move |io| async move {
            let (peer, output) = config.upgrade_inbound(io, info).await.unwrap();
            (peer, output.remote_key.clone(), Vec::new())
        }
    });

    let expected = as_our_peer_id(&someone_else);
    let mut handshake = Handshake::new(&ours.public(), Some(expected));
    let outcome = drive(&mut handshake, &mut dialer, &[], LARGE_READS).unwrap();
    let remote = join(remote);
    drop(dialer);

    let actual = as_our_peer_id(&their.public().to_peer_id());
    assert_ne!(expected, actual);
    assert_eq!(
        outcome.events,
        [Event::Failed(PlaintextError::UnexpectedPeer {
            expected,
            actual
        })]
    );
    check_remote(&remote, &ours);
}

/// The same with the right expectation succeeds: the refusal above is about
/// the expected peer only.
#[test]
fn our_dialer_accepts_the_expected_peer_given_as_their_base58() {
    let ours = Keypair::from_secret_bytes([10; 32]);
    let their = their_keypair(11);
    let (mut dialer, listener) = tcp_pair().unwrap();

    let remote = spawn_remote(listener, {
        let (config, info) = their_config(&their);
        move |io| async move {
            let (peer, output) = config.upgrade_inbound(io, info).await.unwrap();
            (peer, output.remote_key.clone(), Vec::new())
        }
    });

    let expected: PeerId = their.public().to_peer_id().to_base58().parse().unwrap();
    let mut handshake = Handshake::new(&ours.public(), Some(expected));
    let outcome = drive(&mut handshake, &mut dialer, &[], LARGE_READS).unwrap();
    let remote = join(remote);

    assert_eq!(outcome.events.len(), 1);
    check_done(&outcome.events[0], &their);
    check_remote(&remote, &ours);
}
