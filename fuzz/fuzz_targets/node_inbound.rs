//! A node fed arbitrary bytes on an inbound connection: the upgrade
//! pipeline, then (if the input gets that far) yamux and stream
//! negotiation. Also the same bytes after a valid upgrade prefix, so the
//! session and per-stream parsers are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::node::{Config, Node, Security};
use sansp2p::time::Instant;
use sansp2p::Keypair;
use sansp2p_fuzz::plaintext_upgrade_prefix;

fn run(bytes: &[u8]) {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    // Plaintext first, so a plain prefix reaches the session; noise too, so
    // arbitrary input also reaches the noise responder.
    config.security = vec![Security::Plaintext, Security::Noise];
    config.rng_seed = [7; 32];
    let mut node = Node::new(Instant::ZERO, config).unwrap();
    node.register_protocol("/echo/1.0.0").unwrap();
    let conn = node
        .handle_inbound(Instant::ZERO, vec![0x04, 127, 0, 0, 1, 0x06, 0, 1])
        .unwrap();
    let mut out = Vec::new();
    let mut now = Instant::ZERO;
    for chunk in bytes.chunks(97) {
        now += core::time::Duration::from_millis(3);
        let used = node.handle_read(now, conn, chunk);
        assert!(used <= chunk.len());
        node.handle_timeout(now);
        while node.poll_transmit(now, conn, &mut out, 1 << 16) > 0 {
            assert!(out.len() < 64 << 20);
            out.clear();
        }
        while node.poll_action().is_some() {}
        while node.poll_wants_write().is_some() {}
        while node.poll_event().is_some() {}
    }
    node.handle_read_closed(now, conn);
    node.handle_connection_closed(now, conn);
    while node.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    run(data);
    let mut with_prefix = plaintext_upgrade_prefix();
    with_prefix.extend_from_slice(data);
    run(&with_prefix);
});
