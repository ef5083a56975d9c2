//! Memory per peer in the peer store: 100 000 peers, each with two TCP
//! addresses (one `/ip4`, one `/ip6`), an identify record (eight
//! protocols, shared by all, an agent string and a public key) and a
//! latency sample, as a node that has met many peers holds them (only
//! the first 256 peers carry a public key, about 36 bytes more each).
//!
//! `cargo bench -p sansp2p --bench peer_store` prints one line,
//! `peer store: <bytes> B per peer (<n> peers, ...)`. Memory is the growth
//! of the resident set (`/proc/self/statm`, Linux), so allocator slack is
//! included; the inputs are built before the measurement.

use std::time::Duration;

use sansp2p::identity::Keypair;
use sansp2p::peers::store::{PeerStore, PeerStoreConfig, Ttl};
use sansp2p::time::Instant;

const PEERS: usize = 100_000;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let protocols: Vec<String> = [
        "/ipfs/id/1.0.0",
        "/ipfs/id/push/1.0.0",
        "/ipfs/ping/1.0.0",
        "/libp2p/circuit/relay/0.2.0/stop",
        "/ipfs/kad/1.0.0",
        "/meshsub/1.1.0",
        "/meshsub/1.0.0",
        "fil/heartbeat/1.0.0",
    ]
    .map(String::from)
    .to_vec();
    // Deriving identities is slow: a few hundred keys are enough.
    let keys: Vec<Keypair> = (0..256u32)
        .map(|i| {
            let mut secret = [3u8; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            Keypair::from_secret_bytes(secret)
        })
        .collect();
    let inputs: Vec<_> = (0..PEERS)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let public = key.public().encode_protobuf();
            // Unique ids: the keys' own ids first, then an identity
            // multihash of the same shape per peer (its key is not stored,
            // as it would not match; the first peers carry one).
            let peer = if i < keys.len() {
                key.peer_id()
            } else {
                sansp2p::PeerId::from_bytes(&identity_id(i)).expect("a valid peer id")
            };
            let b = (i as u32).to_be_bytes();
            let v4 = vec![0x04, 10, b[1], b[2], b[3], 0x06, 0x0f, 0xa1];
            let mut v6 = vec![0x29, 0x20, 0x01, 0x0d, 0xb8];
            v6.extend_from_slice(&[0; 7]);
            v6.extend_from_slice(&b);
            v6.extend_from_slice(&[0x06, 0x0f, 0xa1]);
            (peer, vec![v4, v6], public, i < keys.len())
        })
        .collect();
    let mut config = PeerStoreConfig::default();
    config.max_peers = PEERS;
    let t0 = Instant::ZERO;
    let before = rss_bytes();
    let mut store = PeerStore::new(t0, config).expect("valid config");
    for (peer, addrs, public, keyed) in &inputs {
        store
            .add_addrs(t0, *peer, addrs, Ttl::For(Duration::from_secs(3600)))
            .expect("room");
        let key = keyed.then_some(&public[..]);
        store
            .handle_identified(t0, *peer, &protocols, Some("sansp2p/0.1.0"), &[], key)
            .expect("room");
        store.record_latency(*peer, Duration::from_millis(20));
    }
    let after = rss_bytes();
    assert_eq!(store.len(), PEERS, "every peer stored");
    let per_peer = after.saturating_sub(before) / PEERS;
    println!(
        "peer store: {per_peer} B per peer ({PEERS} peers, 2 addresses, 8 shared protocols, agent, latency each)"
    );
}

/// An identity-multihash peer id (`0x00`, length 36, a protobuf ed25519
/// public key shape) that is unique for `i`.
fn identity_id(i: usize) -> Vec<u8> {
    let mut id = vec![0x00, 36, 0x08, 0x01, 0x12, 0x20];
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(i as u64).to_le_bytes());
    id.extend_from_slice(&key);
    id
}
