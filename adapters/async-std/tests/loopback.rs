//! The async-std shim over real loopback TCP: the shared binding runs on
//! async-std's executor.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sansp2p::Keypair;
use sansp2p_async_std::{new_host, Config};

#[test]
fn echo_and_ping_on_async_std() {
    async_std::task::block_on(async_std::future::timeout(Duration::from_secs(30), async {
        let a = new_host(Config::new(Keypair::from_secret_bytes([1; 32]))).unwrap();
        let b = new_host(Config::new(Keypair::from_secret_bytes([2; 32]))).unwrap();
        let incoming = b.accept("/echo/1.0.0").unwrap();
        async_std::task::spawn(async move {
            while let Some((_, mut s)) = incoming.next().await {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                s.close().await.unwrap();
            }
        });
        let addr = b
            .listen(&"/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let peer = a.dial(&addr).await.unwrap();
        assert_eq!(peer, b.local_peer_id());
        assert!(a.ping(peer).await.unwrap() < Duration::from_secs(1));
        let mut s = a.open_stream(peer, "/echo/1.0.0").await.unwrap();
        s.write_all(b"Hello, world!\n").await.unwrap();
        s.close().await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"Hello, world!\n");
    }))
    .expect("test timed out");
}

#[allow(dead_code)]
#[path = "../../futures-io/testkit/mod.rs"]
mod testkit;

/// The binding's contract on async-std too: every ping before the peer's
/// FIN is answered (see `testkit::pings_then_fin`).
#[test]
fn every_ping_before_the_peers_fin_is_answered() {
    let b = new_host(testkit::plaintext_config(3)).unwrap();
    let addr = async_std::task::block_on(testkit::listening(&b));
    assert_eq!(testkit::pings_then_fin(testkit::socket_addr(&addr), 65), 65);
}

#[test]
fn a_circuit_through_a_relay_carries_echo() {
    async_std::task::block_on(async_std::future::timeout(Duration::from_secs(30), async {
        let [r, b, a] = [40, 41, 42].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::relayed_echo(&r, &b, &a).await;
    }))
    .expect("test timed out");
}

#[test]
fn heartbeats_raise_one_alert_and_one_recovery() {
    async_std::task::block_on(async_std::future::timeout(Duration::from_secs(30), async {
        let [agg, b] = [50, 51].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::heartbeat_alert_and_recovery(&agg, &b).await;
    }))
    .expect("test timed out");
}

#[test]
fn shutdown_closes_gracefully_and_for_good() {
    async_std::task::block_on(async_std::future::timeout(Duration::from_secs(30), async {
        let [a, b] = [54, 55].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::shutdown_is_graceful_and_final(&a, &b).await;
    }))
    .expect("test timed out");
}

#[test]
fn perf_runs_over_loopback() {
    async_std::task::block_on(async_std::future::timeout(Duration::from_secs(30), async {
        let [a, b] = [56, 57].map(|seed| new_host(testkit::config(seed)).unwrap());
        testkit::perf_runs_over_loopback(&a, &b).await;
    }))
    .expect("test timed out");
}
