//! multistream-select conformance: our `Negotiator` against rust-libp2p's
//! `multistream-select` crate over loopback TCP, in both roles, with refusals,
//! lazy (`V1Lazy`) negotiation and application data behind the negotiation.

use std::borrow::Cow;

use multistream_select::{dialer_select_proto, listener_select_proto, NegotiationError, Version};
use sansp2p::multistream::{Config, Event, NegotiationError as OurNegotiationError, Negotiator};
use sansp2p_conformance::{
    drive, exchange_local, exchange_remote, join, payload, spawn_remote, tcp_pair, wait_for_bytes,
    BYTE_BY_BYTE, LARGE_READS,
};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MISSING: &str = "/sansp2p-test/missing/1.0.0";
const ALSO_MISSING: &str = "/sansp2p-test/missing/2.0.0";
const ECHO: &str = "/sansp2p-test/echo/1.0.0";
const OTHER: &str = "/sansp2p-test/other/1.0.0";

fn negotiated(protocol: &str) -> Event {
    Event::Negotiated {
        protocol: Cow::Owned(protocol.to_owned()),
    }
}

fn not_available(protocol: &str) -> Event {
    Event::NotAvailable {
        protocol: Cow::Owned(protocol.to_owned()),
    }
}

fn failed() -> Event {
    Event::Failed(OurNegotiationError::NotAgreed)
}

/// Their dialer proposes a protocol we lack, then one we have; our listener
/// refuses the first and agrees on the second. Their `V1Lazy` dialer settles
/// on its last proposal without waiting and writes data right behind it.
#[test]
fn their_dialer_against_our_listener_after_a_refusal() {
    for version in [Version::V1, Version::V1Lazy] {
        for read_size in [BYTE_BY_BYTE, LARGE_READS] {
            let ctx = format!("{version:?}, reads of {read_size}");
            let (dialer, mut listener) = tcp_pair().unwrap();
            let to_us = payload("from rust-libp2p dialer", 3000);
            let to_them = payload("from sansp2p listener", 2000);

            let remote = spawn_remote(dialer, {
                let to_us = to_us.clone();
                move |io| async move {
                    let (protocol, mut io) =
                        dialer_select_proto(io, [MISSING, ECHO], version).await?;
                    let received = exchange_remote(&mut io, &to_us).await?;
                    Ok::<_, std::io::Error>((protocol, received))
                }
            });

            let mut ours = Negotiator::listener([OTHER, ECHO]).unwrap();
            let outcome = drive(&mut ours, &mut listener, &[], read_size).unwrap();
            let received = exchange_local(&mut listener, outcome.leftover, &to_them).unwrap();
            let (their_protocol, their_received) = join(remote).expect(&ctx);

            assert_eq!(their_protocol, ECHO, "{ctx}");
            assert_eq!(
                outcome.events,
                [not_available(MISSING), negotiated(their_protocol)],
                "{ctx}"
            );
            assert!(!outcome.eof, "{ctx}");
            assert!(
                received == to_us,
                "{ctx}: our listener lost or duplicated their data"
            );
            assert!(
                their_received == to_them,
                "{ctx}: they got something else from us"
            );
        }
    }
}

/// Their lazy dialer with one protocol: header, proposal and application data
/// leave in one go. We wait until all of it is in the socket so that one read
/// carries negotiation and data together: our listener must consume exactly
/// the negotiation and hand the data back.
#[test]
fn their_lazy_dialer_data_behind_the_proposal_is_handed_back() {
    let (dialer, mut listener) = tcp_pair().unwrap();
    let to_us = payload("0-RTT data from rust-libp2p", 1500);
    let to_them = payload("answer from sansp2p", 700);

    let remote = spawn_remote(dialer, {
        let to_us = to_us.clone();
        move |io| async move {
            let (protocol, mut io) = dialer_select_proto(io, [ECHO], Version::V1Lazy).await?;
            let received = exchange_remote(&mut io, &to_us).await?;
            Ok::<_, std::io::Error>((protocol, received))
        }
    });

    wait_for_bytes(&listener, to_us.len()).unwrap();
    let mut ours = Negotiator::listener([ECHO]).unwrap();
    let outcome = drive(&mut ours, &mut listener, &[], LARGE_READS).unwrap();
    assert!(
        !outcome.leftover.is_empty(),
        "the first read held negotiation and data, so some data must be handed back"
    );
    let received = exchange_local(&mut listener, outcome.leftover, &to_them).unwrap();
    let (their_protocol, their_received) = join(remote).unwrap();

    assert_eq!(outcome.events, [negotiated(their_protocol)]);
    assert!(
        received == to_us,
        "our listener lost or duplicated their 0-RTT data"
    );
    assert!(their_received == to_them);
}

/// Our dialer proposes a protocol their listener lacks, then one it has.
#[test]
fn our_dialer_against_their_listener_after_a_refusal() {
    for read_size in [BYTE_BY_BYTE, LARGE_READS] {
        let (mut dialer, listener) = tcp_pair().unwrap();
        let to_us = payload("from rust-libp2p listener", 2500);
        let to_them = payload("from sansp2p dialer", 1200);

        let remote = spawn_remote(listener, {
            let to_us = to_us.clone();
            move |io| async move {
                let (protocol, mut io) = listener_select_proto(io, [OTHER, ECHO]).await?;
                let received = exchange_remote(&mut io, &to_us).await?;
                Ok::<_, std::io::Error>((protocol, received))
            }
        });

        let mut ours = Negotiator::dialer([MISSING, ECHO]).unwrap();
        let outcome = drive(&mut ours, &mut dialer, &[], read_size).unwrap();
        let received = exchange_local(&mut dialer, outcome.leftover, &to_them).unwrap();
        let (their_protocol, their_received) = join(remote).unwrap();

        assert_eq!(their_protocol, ECHO);
        assert_eq!(
            outcome.events,
            [not_available(MISSING), negotiated(their_protocol)]
        );
        assert!(
            received == to_us,
            "reads of {read_size}: our dialer lost or duplicated data"
        );
        assert!(their_received == to_them, "reads of {read_size}");
    }
}

/// Our dialer with one protocol; their listener confirms and writes data at
/// once. With everything waiting in the socket, one read carries the header,
/// the echo and data: our dialer must hand the data back.
#[test]
fn our_dialer_hands_back_data_that_follows_the_echo() {
    let (mut dialer, listener) = tcp_pair().unwrap();
    let to_us = payload("right behind the echo", 900);
    let to_them = payload("sansp2p", 100);

    let remote = spawn_remote(listener, {
        let to_us = to_us.clone();
        move |io| async move {
            let (protocol, mut io) = listener_select_proto(io, [ECHO]).await?;
            let received = exchange_remote(&mut io, &to_us).await?;
            Ok::<_, std::io::Error>((protocol, received))
        }
    });

    let mut ours = Negotiator::dialer([ECHO]).unwrap();
    sansp2p_conformance::flush(&mut ours, &mut dialer).unwrap();
    wait_for_bytes(&dialer, to_us.len()).unwrap();
    let outcome = drive(&mut ours, &mut dialer, &[], LARGE_READS).unwrap();
    assert!(
        !outcome.leftover.is_empty(),
        "the read held the echo and data together"
    );
    let received = exchange_local(&mut dialer, outcome.leftover, &to_them).unwrap();
    let (their_protocol, their_received) = join(remote).unwrap();

    assert_eq!(outcome.events, [negotiated(their_protocol)]);
    assert!(received == to_us);
    assert!(their_received == to_them);
}

/// Our lazy dialer reports `Negotiated` before any I/O and sends application
/// data right behind its proposal; their (plain V1) listener must see it as
/// data of the agreed protocol, and our dialer must still read the header and
/// echo before handing their data back.
#[test]
fn our_lazy_dialer_against_their_listener() {
    for read_size in [BYTE_BY_BYTE, LARGE_READS] {
        let (mut dialer, listener) = tcp_pair().unwrap();
        let to_us = payload("rust-libp2p answers", 1800);
        let to_them = payload("0-RTT from sansp2p", 1600);

        let remote = spawn_remote(listener, {
            let to_us = to_us.clone();
            move |io| async move {
                let (protocol, mut io) = listener_select_proto(io, [OTHER, ECHO]).await?;
                let received = exchange_remote(&mut io, &to_us).await?;
                Ok::<_, std::io::Error>((protocol, received))
            }
        });

        let mut ours = Negotiator::dialer_with([ECHO], Config::lazy()).unwrap();
        assert_eq!(
            ours.poll_event(),
            Some(negotiated(ECHO)),
            "lazy: agreed before any I/O"
        );
        assert!(
            !ours.is_finished(),
            "lazy: the confirmation is still to be read"
        );

        // Negotiation and application data leave in a single write.
        let mut wire = Vec::new();
        let _ = ours.poll_transmit(&mut wire);
        wire.extend_from_slice(&to_them);
        std::io::Write::write_all(&mut dialer, &wire).unwrap();
        dialer.shutdown(std::net::Shutdown::Write).unwrap();

        let outcome = drive(&mut ours, &mut dialer, &[], read_size).unwrap();
        assert!(ours.is_finished());
        assert_eq!(outcome.events, [], "no second Negotiated once confirmed");
        assert!(!outcome.eof);
        let received = sansp2p_conformance::read_to_eof(&mut dialer, outcome.leftover).unwrap();
        let (their_protocol, their_received) = join(remote).unwrap();

        assert_eq!(
            their_protocol, ECHO,
            "their listener agreed on what we settled on"
        );
        assert!(
            received == to_us,
            "reads of {read_size}: our lazy dialer lost their data"
        );
        assert!(
            their_received == to_them,
            "reads of {read_size}: they lost our 0-RTT data"
        );
    }
}

/// Their dialer proposes only protocols we lack: it fails with
/// `NegotiationError::Failed` and closes, and our listener, having refused
/// each proposal, reports `Failed(NotAgreed)` on the close.
#[test]
fn their_dialer_with_nothing_we_support_fails_on_both_sides() {
    for read_size in [BYTE_BY_BYTE, LARGE_READS] {
        let (dialer, mut listener) = tcp_pair().unwrap();
        let remote = spawn_remote(dialer, |io| async move {
            dialer_select_proto(io, [MISSING, ALSO_MISSING], Version::V1)
                .await
                .map(|(p, _)| p)
        });

        let mut ours = Negotiator::listener([ECHO, OTHER]).unwrap();
        let outcome = drive(&mut ours, &mut listener, &[], read_size).unwrap();
        let theirs = join(remote);

        assert!(
            matches!(theirs, Err(NegotiationError::Failed)),
            "they got {theirs:?}"
        );
        assert_eq!(
            outcome.events,
            [
                not_available(MISSING),
                not_available(ALSO_MISSING),
                failed()
            ],
            "reads of {read_size}"
        );
        assert!(
            outcome.eof,
            "our listener learns of the failure from their close"
        );
    }
}

/// Their lazy dialer settles on a protocol we lack and writes data behind it:
/// we refuse; the data is not a proposal, so our listener fails with
/// `NotAgreed` (not a violation), and their read of our answer fails.
#[test]
fn their_lazy_dialer_refused_fails_on_both_sides() {
    let (dialer, mut listener) = tcp_pair().unwrap();
    let remote = spawn_remote(dialer, |io| async move {
        let (_, mut io) = dialer_select_proto(io, [MISSING], Version::V1Lazy)
            .await
            .expect("a lazy dialer settles at once");
        io.write_all(b"hello")
            .await
            .expect("write behind the proposal");
        io.flush().await.expect("flush");
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await
    });

    let mut ours = Negotiator::listener([ECHO]).unwrap();
    let outcome = drive(&mut ours, &mut listener, &[], LARGE_READS).unwrap();
    // Our listener is done; close so that a dialer still waiting sees the end.
    drop(listener);
    let theirs = join(remote);

    assert!(
        theirs.is_err(),
        "their read after our refusal must fail, got {theirs:?}"
    );
    assert_eq!(outcome.events, [not_available(MISSING), failed()]);
}

/// Our dialer proposes only protocols their listener lacks: we report each
/// refusal then `Failed(NotAgreed)`, and once we close, their listener fails
/// with `NegotiationError::Failed`.
#[test]
fn our_dialer_with_nothing_they_support_fails_on_both_sides() {
    let (mut dialer, listener) = tcp_pair().unwrap();
    let remote = spawn_remote(listener, |io| async move {
        listener_select_proto(io, [ECHO, OTHER])
            .await
            .map(|(p, _)| p)
    });

    let mut ours = Negotiator::dialer([MISSING, ALSO_MISSING]).unwrap();
    let outcome = drive(&mut ours, &mut dialer, &[], LARGE_READS).unwrap();
    drop(dialer);
    let theirs = join(remote);

    assert_eq!(
        outcome.events,
        [
            not_available(MISSING),
            not_available(ALSO_MISSING),
            failed()
        ]
    );
    assert!(!outcome.eof);
    assert!(
        matches!(theirs, Err(NegotiationError::Failed)),
        "they got {theirs:?}"
    );
}
