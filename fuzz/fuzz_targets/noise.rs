//! The noise handshake and transport on arbitrary bytes.
//!
//! - A responder and an initiator fed arbitrary input in uneven pieces:
//!   never a panic, never more consumed than given, and nothing sent after
//!   a failure.
//! - A genuine handshake, then arbitrary bytes spliced into the stream of
//!   genuine transport frames: the receiver hands over exactly the genuine
//!   plaintext and nothing of the forged tail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::security::noise::{Event, Handshake, Transport};
use sansp2p::Keypair;
use sansp2p_fuzz::feed_in_pieces;

fn feed(h: &mut Handshake, data: &[u8]) {
    feed_in_pieces(data, |piece| {
        (!h.is_finished()).then(|| h.handle_read(piece))
    });
    h.handle_eof();
    if let Some(Event::Failed(_)) = h.poll_event() {
        let mut out = Vec::new();
        assert_eq!(h.poll_transmit(&mut out), 0, "nothing sent after a failure");
    }
}

fn genuine_pair() -> (Box<Transport>, Box<Transport>) {
    let (a, b) = (
        Keypair::from_secret_bytes([1; 32]),
        Keypair::from_secret_bytes([2; 32]),
    );
    let mut i = Handshake::initiator(&a, [3; 32], [4; 32], Some(b.peer_id()));
    let mut r = Handshake::responder(&b, [5; 32], [6; 32]);
    for _ in 0..3 {
        let mut wire = Vec::new();
        let _ = i.poll_transmit(&mut wire);
        let _ = r.handle_read(&wire);
        wire.clear();
        let _ = r.poll_transmit(&mut wire);
        let _ = i.handle_read(&wire);
    }
    match (i.poll_event(), r.poll_event()) {
        (Some(Event::Done { transport: ti, .. }), Some(Event::Done { transport: tr, .. })) => {
            (ti, tr)
        }
        other => panic!("the genuine handshake failed: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = Keypair::from_secret_bytes([9; 32]);
    feed(&mut Handshake::responder(&key, [7; 32], [8; 32]), data);
    let mut initiator = Handshake::initiator(&key, [7; 32], [8; 32], None);
    let mut first = Vec::new();
    let _ = initiator.poll_transmit(&mut first);
    feed(&mut initiator, data);

    // Genuine frames, then the fuzz input as a forged tail.
    let (mut tx, mut rx) = genuine_pair();
    let genuine: Vec<u8> = data.iter().rev().copied().collect();
    let mut wire = Vec::new();
    tx.encrypt(&genuine, &mut wire).unwrap();
    wire.extend_from_slice(data);
    let mut plain = Vec::new();
    let mut failed = false;
    for piece in wire.chunks(4093) {
        if rx.decrypt(piece, &mut plain).is_err() {
            failed = true;
            break;
        }
    }
    assert!(
        plain.starts_with(&genuine),
        "genuine plaintext lost or altered"
    );
    assert_eq!(plain.len(), genuine.len(), "forged bytes handed over");
    let _ = failed;
});
