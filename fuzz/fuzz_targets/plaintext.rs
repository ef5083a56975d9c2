//! The plaintext/2.0.0 exchange decoder and handshake on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::security::plaintext::{decode_exchange, Handshake};
use sansp2p::Keypair;
use sansp2p_fuzz::feed_in_pieces;

fuzz_target!(|data: &[u8]| {
    let _ = decode_exchange(data);
    let key = Keypair::from_secret_bytes([1; 32]);
    let mut h = Handshake::new(
        &key.public(),
        Some(Keypair::from_secret_bytes([2; 32]).peer_id()),
    );
    feed_in_pieces(data, |piece| {
        (!h.is_finished()).then(|| h.handle_read(piece))
    });
    h.handle_eof();
    while h.poll_event().is_some() {}
});
