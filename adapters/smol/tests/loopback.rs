//! The smol adapter over real loopback TCP.

use std::time::Duration;

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sansp2p::node::{AttemptError, CloseReason, TransportError};
use sansp2p::Keypair;
use sansp2p_smol::{new_host, Error, Host, Multiaddr};

#[allow(dead_code)]
#[path = "../../futures-io/testkit/mod.rs"]
mod testkit;
use testkit::{echo, listening, serve_echo, ECHO};

fn host(seed: u8) -> Host {
    new_host(testkit::config(seed)).unwrap()
}

/// Fails the test instead of hanging it.
fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(fut.or(async {
        smol::Timer::after(Duration::from_secs(30)).await;
        panic!("test timed out");
    }))
}

#[test]
fn dial_identify_ping_and_echo() {
    run(async {
        let (a, b) = (host(1), host(2));
        serve_echo(&b);
        let addr = listening(&b).await;
        let peer = a.dial(&addr).await.unwrap();
        assert_eq!(peer, b.local_peer_id());
        let info = a
            .wait_identified(&peer, Duration::from_secs(5))
            .await
            .expect("identified");
        assert!(info.protocols.iter().any(|p| p == ECHO));
        assert!(info.agent_version.starts_with("sansp2p/"));
        let rtt = a.ping(peer).await.unwrap();
        assert!(rtt < Duration::from_secs(1));
        assert_eq!(echo(&a, peer, b"Hello, world!\n").await, b"Hello, world!\n");
        let big = testkit::payload(1 << 20);
        assert_eq!(echo(&a, peer, &big).await, big);
        let conns = a.connections(&peer);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].muxer, "/yamux/1.0.0");
    });
}

#[test]
fn concurrent_streams_keep_their_bytes_apart() {
    run(async {
        let (a, b) = (host(3), host(4));
        serve_echo(&b);
        let addr = listening(&b).await;
        let peer = a.dial(&addr).await.unwrap();
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let a = a.clone();
                smol::spawn(async move {
                    let data: Vec<u8> = (0..64 * 1024).map(|j: u32| (j as u8) ^ i).collect();
                    assert_eq!(echo(&a, peer, &data).await, data, "stream {i}");
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn streams_wait_for_a_slow_acceptor() {
    run(async {
        let (a, b) = (host(30), host(31));
        let incoming = b.accept(ECHO).unwrap();
        let addr = listening(&b).await;
        let peer = a.dial(&addr).await.unwrap();
        // 200 streams opened and written before b takes any of them: every
        // one must reach b's application (go-yamux's accept backlog is 256).
        const N: u8 = 200;
        let mut opened = Vec::new();
        for i in 0..N {
            let mut s = a.open_stream(peer, ECHO).await.unwrap();
            s.write_all(&[i]).await.unwrap();
            s.close().await.unwrap();
            opened.push(s);
        }
        smol::Timer::after(Duration::from_millis(200)).await;
        let mut seen = Vec::new();
        for k in 0..N {
            let next = async { incoming.next().await };
            let gone = async {
                smol::Timer::after(Duration::from_secs(5)).await;
                panic!("stream {k} of {N} never reached the application (reset?)");
            };
            let (from, mut s) = next.or(gone).await.unwrap();
            assert_eq!(from, a.local_peer_id());
            let mut byte = Vec::new();
            s.read_to_end(&mut byte).await.unwrap();
            seen.extend(byte);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..N).collect::<Vec<u8>>());
    });
}

/// A peer that is still sending when we close gets our FIN and may finish
/// sending: the node drains its bytes until it closes too, instead of
/// closing the socket under them (which sends a reset: the peer's writes
/// fail, and on some systems it loses what we sent last).
#[test]
fn closing_on_a_peer_that_keeps_sending_ends_with_fin_not_reset() {
    use std::io::{Read, Write};
    let b = host(40);
    let target = testkit::socket_addr(&run(listening(&b)));
    let mut raw = std::net::TcpStream::connect(target).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A multistream header, then a line that breaks the protocol: the node
    // gives up on the connection and closes it.
    raw.write_all(b"\x13/multistream/1.0.0\n\x05junk\n")
        .unwrap();
    let mut got = Vec::new();
    raw.read_to_end(&mut got).expect("our FIN, not a reset");
    // The peer had more to say: it keeps writing for a while after our FIN.
    let chunk = vec![0x55u8; 64 * 1024];
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(20));
        if let Err(e) = raw.write_all(&chunk) {
            panic!("write {i} after our FIN failed ({e}): we reset the connection");
        }
    }
    raw.shutdown(std::net::Shutdown::Write).unwrap();
}

/// The first binding answered 64 of these pings: it dropped the input the
/// node had refused (64 queued pongs) when the end of file came.
#[test]
fn every_ping_before_the_peers_fin_is_answered() {
    let b = new_host(testkit::plaintext_config(41)).unwrap();
    let target = testkit::socket_addr(&run(listening(&b)));
    assert_eq!(testkit::pings_then_fin(target, 65), 65);
}

#[test]
fn a_peer_that_stops_reading_is_dropped() {
    let mut config = testkit::plaintext_config(42);
    config.io.write_stall_timeout = Duration::from_secs(1);
    let b = new_host(config).unwrap();
    let events = b.events();
    let target = testkit::socket_addr(&run(listening(&b)));
    testkit::flood_without_reading(target, Duration::from_secs(15));
    run(async {
        assert_eq!(testkit::next_close(&events).await, CloseReason::WriteStall);
    });
}

#[test]
fn wrong_peer_and_dead_address_fail_with_errors() {
    run(async {
        let (a, b) = (host(5), host(6));
        let addr = b
            .listen(&"/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let wrong = Keypair::from_secret_bytes([99; 32]).peer_id();
        let err = a
            .dial(&format!("{addr}/p2p/{wrong}").parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expected peer"), "{err}");
        // A port nobody listens on: bind then drop to find one.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = a
            .dial(&format!("/ip4/127.0.0.1/tcp/{free}").parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Dial { errors, .. }
                if errors[..] == [(errors[0].0.clone(), AttemptError::Transport(TransportError::Refused))]),
            "{err:?}"
        );
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
        let err = a.dial(&quic).await.unwrap_err();
        assert!(
            matches!(&err, Error::Dial { errors, .. }
                if errors[..] == [(quic.clone(), AttemptError::Transport(TransportError::Unsupported))]),
            "{err:?}"
        );
        let err = a.listen(&quic).await.unwrap_err();
        assert_eq!(err, Error::UnsupportedAddress(quic));
    });
}

#[test]
fn unknown_protocol_is_refused_and_the_connection_survives() {
    run(async {
        let (a, b) = (host(7), host(8));
        serve_echo(&b);
        let addr = listening(&b).await;
        let peer = a.dial(&addr).await.unwrap();
        testkit::unknown_protocol_is_refused(&a, peer).await;
    });
}

#[test]
fn dead_address_enters_backoff_and_the_live_one_connects() {
    run(async {
        let (a, b) = (host(9), host(10));
        // A closed port, and a live listener on a higher port: the ranker
        // dials the lower port first, so the dead address is really tried.
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut live = None;
        for port in dead_port.saturating_add(1)..=u16::MAX {
            let ma: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
            if let Ok(bound) = b.listen(&ma).await {
                live = Some(bound);
                break;
            }
        }
        let live = live.expect("a free port above the dead one");
        let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/{dead_port}").parse().unwrap();
        let peer = b.local_peer_id();
        let conn = a
            .dial_peer(peer, vec![dead.clone(), live.clone()])
            .await
            .unwrap();
        let conns = a.connections(&peer);
        assert_eq!(conns.len(), 1);
        assert_eq!((conns[0].conn, &conns[0].remote_addr), (conn, &live));
        assert!(
            a.is_backed_off(&peer, &dead),
            "the refused address is backed off"
        );
        assert!(!a.is_backed_off(&peer, &live));
        // A later dial skips it without touching the network.
        a.disconnect(&peer);
        smol::Timer::after(Duration::from_millis(100)).await;
        let err = a.dial_peer(peer, vec![dead.clone()]).await.unwrap_err();
        assert!(
            matches!(&err, Error::Dial { errors, .. }
                if errors[..] == [(dead.clone(), AttemptError::Backoff)]),
            "{err:?}"
        );
    });
}

#[test]
fn a_circuit_through_a_relay_carries_echo() {
    run(testkit::relayed_echo(&host(40), &host(41), &host(42)));
}

#[test]
fn heartbeats_raise_one_alert_and_one_recovery() {
    run(testkit::heartbeat_alert_and_recovery(&host(50), &host(51)));
}

#[test]
fn a_static_peer_is_connected_by_peer_maintenance() {
    run(testkit::static_peer_is_kept(&host(52), &host(53)));
}

#[test]
fn shutdown_closes_gracefully_and_for_good() {
    run(testkit::shutdown_is_graceful_and_final(
        &host(54),
        &host(55),
    ));
}

#[test]
fn perf_runs_over_loopback() {
    run(testkit::perf_runs_over_loopback(&host(56), &host(57)));
}
