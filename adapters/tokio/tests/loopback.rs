//! The tokio adapter over real loopback TCP.

use std::future::Future;
use std::time::Duration;

use sansp2p::node::{CloseReason, PingError};
use sansp2p::PeerId;
use sansp2p_tokio::{new_host, Error, Host, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(dead_code)]
#[path = "../../futures-io/testkit/mod.rs"]
mod testkit;
use testkit::{listening, serve_echo, ECHO};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `fut` on `rt`, failing the test instead of hanging it.
fn run<T>(rt: &tokio::runtime::Runtime, fut: impl Future<Output = T>) -> T {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), fut).await })
        .expect("test timed out")
}

/// Two hosts, `b` serving echo, `a` connected to it.
async fn pair(seed: u8) -> (Host, Host, PeerId) {
    let a = new_host(testkit::config(seed)).unwrap();
    let b = new_host(testkit::config(seed + 1)).unwrap();
    serve_echo(&b);
    let peer = a.dial(&listening(&b).await).await.unwrap();
    (a, b, peer)
}

/// An echo through the tokio `Stream`: write all while reading the reply.
async fn tokio_echo(a: &Host, peer: PeerId, data: &[u8]) -> Vec<u8> {
    let stream = Stream::from(a.open_stream(peer, ECHO).await.unwrap());
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    tokio::join!(write, read).1
}

#[test]
fn echo_small_and_1mib_and_ping() {
    let rt = runtime();
    run(&rt, async {
        let (a, _b, peer) = pair(1).await;
        assert_eq!(
            tokio_echo(&a, peer, b"Hello, world!").await,
            b"Hello, world!"
        );
        let big = testkit::payload(1 << 20);
        let got = tokio_echo(&a, peer, &big).await;
        assert_eq!(
            (got.len(), testkit::fnv1a(&got)),
            (big.len(), testkit::fnv1a(&big))
        );
        let rtt = a.ping(peer).await.unwrap();
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    });
}

#[test]
fn clean_close_reaches_both_sides() {
    let rt = runtime();
    run(&rt, async {
        let (a, b, peer) = pair(3).await;
        let (a_events, b_events) = (a.events(), b.events());
        a.ping(peer).await.unwrap();
        a.disconnect(&peer);
        assert_eq!(testkit::next_close(&a_events).await, CloseReason::Local);
        let reason = testkit::next_close(&b_events).await;
        assert!(matches!(reason, CloseReason::GoAway(_)), "{reason:?}");
        assert!(a.connections(&peer).is_empty());
        let err = a.ping(peer).await.unwrap_err();
        assert_eq!(err, Error::Ping(PingError::NotConnected));
    });
}

#[test]
fn unknown_protocol_is_refused_and_the_connection_survives() {
    let rt = runtime();
    run(&rt, async {
        let (a, _b, peer) = pair(5).await;
        testkit::unknown_protocol_is_refused(&a, peer).await;
    });
}

/// The first binding answered 64 of these pings: it dropped the input the
/// node had refused (64 queued pongs) when the end of file came.
#[test]
fn every_ping_before_the_peers_fin_is_answered() {
    let rt = runtime();
    let b = rt.block_on(async { new_host(testkit::plaintext_config(7)).unwrap() });
    let target = testkit::socket_addr(&run(&rt, listening(&b)));
    assert_eq!(testkit::pings_then_fin(target, 65), 65);
}

#[test]
fn a_peer_that_stops_reading_is_dropped() {
    let rt = runtime();
    let mut config = testkit::plaintext_config(8);
    config.io.write_stall_timeout = Duration::from_secs(1);
    let b = rt.block_on(async { new_host(config).unwrap() });
    let events = b.events();
    let target = testkit::socket_addr(&run(&rt, listening(&b)));
    testkit::flood_without_reading(target, Duration::from_secs(15));
    run(&rt, async {
        assert_eq!(testkit::next_close(&events).await, CloseReason::WriteStall);
    });
}

#[test]
fn a_circuit_through_a_relay_carries_echo() {
    let rt = runtime();
    run(&rt, async {
        let [r, b, a] = [40, 41, 42].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::relayed_echo(&r, &b, &a).await;
    });
}

#[test]
fn heartbeats_raise_one_alert_and_one_recovery() {
    let rt = runtime();
    run(&rt, async {
        let [agg, b] = [50, 51].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::heartbeat_alert_and_recovery(&agg, &b).await;
    });
}

#[test]
fn shutdown_closes_gracefully_and_for_good() {
    let rt = runtime();
    run(&rt, async {
        let [a, b] = [54, 55].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::shutdown_is_graceful_and_final(&a, &b).await;
    });
}

#[test]
fn perf_runs_over_loopback() {
    let rt = runtime();
    run(&rt, async {
        let [a, b] = [56, 57].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::perf_runs_over_loopback(&a, &b).await;
    });
}
