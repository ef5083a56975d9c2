//! The plaintext/2.0.0 exchange decoder and handshake on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::security::plaintext::{decode_exchange, Handshake};
use sansp2p::Keypair;

fuzz_target!(|data: &[u8]| {
    let _ = decode_exchange(data);
    let key = Keypair::from_secret_bytes([1; 32]);
    let mut h = Handshake::new(
        &key.public(),
        Some(Keypair::from_secret_bytes([2; 32]).peer_id()),
    );
    let mut pos = 0;
    // Feed in uneven pieces so partial frames are exercised.
    for size in [1usize, 3, 17, usize::MAX].iter().cycle() {
        if pos >= data.len() || h.is_finished() {
            break;
        }
        let end = pos.saturating_add(*size).min(data.len());
        let used = h.handle_read(&data[pos..end]);
        assert!(used <= end - pos);
        pos += used;
        if used == 0 {
            break;
        }
    }
    h.handle_eof();
    while h.poll_event().is_some() {}
});
