//! A listener node fed bytes on an inbound connection by a peer that never
//! reads: `poll_transmit` is not called until all input has been offered.
//! Whatever the input and however long it is, the node must stop taking
//! input while its answers are unsent (it holds at most its read buffer,
//! then `read_capacity` is 0 and the adapter stops reading), so a peer
//! cannot grow our memory by writing without reading; and what it owes once
//! the peer reads is bounded by what it took, not by what the peer sent.
//!
//! The first input byte picks the shape (low two bits) and the read size:
//! 0: the rest of the input, raw;
//! 1: the multistream header, then N repeats of a short message (`ls`
//!    unless the input names one), then the rest;
//! 2: a plaintext upgrade to yamux, then N repeats of a short message (a
//!    yamux ping unless the input names one), then the rest;
//! 3: a plaintext upgrade to yamux, then the rest, raw.
//! For 1 and 2 the next three bytes are N - 1 (little endian, missing bytes
//! count as 0xff), the next is the message length (mod 33; 0 or missing:
//! the default message), then the message. So a one-byte input `01` is
//! already a long `ls` flood.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::node::{Config, Node, Security};
use sansp2p::time::Instant;
use sansp2p::Keypair;
use sansp2p_fuzz::plaintext_upgrade_prefix;

/// Most input the node may take from a peer that never reads, beyond its
/// read buffer (what its machines absorb themselves).
const INPUT_SLACK: usize = 64 << 10;
/// Most bytes owed per byte taken: an `ls` (4 bytes) costs a reply listing
/// every protocol (28 bytes here).
const AMPLIFICATION: usize = 8;
/// Owed bytes allowed on top (headers, identify, session start).
const OUTPUT_SLACK: usize = 1 << 20;
/// Most bytes of repeats per run (N is capped to fit).
const REPEAT_CAP: usize = 4 << 20;
/// The adapter's read buffer: bytes read from the socket and not yet
/// consumed by the node. Once it is full and the node consumes nothing,
/// the adapter reads no more.
const READ_BUF: usize = 64 << 10;
/// Bytes the socket delivers per read.
const READ_SIZES: [usize; 4] = [97, 13, 1500, 64 << 10];

/// `/multistream/1.0.0`, framed.
const HEADER: &[u8] = b"\x13/multistream/1.0.0\n";
/// `ls`, framed.
const LS: &[u8] = b"\x03ls\n";
/// A yamux ping request (SYN) on the session, opaque value 1.
const YAMUX_PING: &[u8] = &[0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

/// The bytes the peer writes, and how many it delivers per read.
fn plan(data: &[u8]) -> (Vec<u8>, usize) {
    let first = data.first().copied().unwrap_or(0);
    let read_size = READ_SIZES[usize::from(first >> 2) & 3];
    let rest = data.get(1..).unwrap_or(&[]);
    let (prefix, default_unit) = match first & 3 {
        0 => return (rest.to_vec(), read_size),
        1 => (HEADER.to_vec(), LS),
        2 => (plaintext_upgrade_prefix(), YAMUX_PING),
        _ => {
            let mut input = plaintext_upgrade_prefix();
            input.extend_from_slice(rest);
            return (input, read_size);
        }
    };
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0xff);
    let repeats = 1 + u32::from_le_bytes([byte(0), byte(1), byte(2), 0]) as usize;
    let unit_len = usize::from(rest.get(3).copied().unwrap_or(0)) % 33;
    let after = rest.get(4..).unwrap_or(&[]);
    let (unit, tail) = if unit_len == 0 || after.is_empty() {
        (default_unit, after)
    } else {
        after.split_at(unit_len.min(after.len()))
    };
    let repeats = repeats.min(REPEAT_CAP / unit.len());
    let mut input = prefix;
    input.reserve(unit.len() * repeats + tail.len());
    for _ in 0..repeats {
        input.extend_from_slice(unit);
    }
    input.extend_from_slice(tail);
    (input, read_size)
}

fuzz_target!(|data: &[u8]| {
    let (input, read_size) = plan(data);

    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    // Plaintext first, so a plain prefix reaches the session; noise too, so
    // raw input also reaches the noise responder.
    config.security = vec![Security::Plaintext, Security::Noise];
    config.rng_seed = [7; 32];
    let mut now = Instant::ZERO;
    let read_buffer = config.io.read_buffer;
    let mut node = Node::new(now, config).unwrap();
    node.register_protocol("/echo/1.0.0").unwrap();
    let conn = node
        .handle_inbound(now, vec![0x04, 127, 0, 0, 1, 0x06, 0, 1])
        .unwrap();

    // The adapter's buffer is input[consumed..delivered].
    let (mut consumed, mut delivered) = (0, 0);
    loop {
        let room = READ_BUF - (delivered - consumed);
        let n = read_size.min(room).min(input.len() - delivered);
        delivered += n;
        if consumed == delivered {
            break;
        }
        // Time barely moves: no timeout may end the connection (and with it
        // what it owes) before the end.
        now += core::time::Duration::from_micros(1);
        let used = node.handle_read(now, conn, &input[consumed..delivered]);
        assert!(used <= delivered - consumed, "consumed more than given");
        consumed += used;
        node.handle_timeout(now);
        // Everything but the bytes to send is taken as an adapter would.
        while node.poll_action().is_some() {}
        while node.poll_wants_write().is_some() {}
        while node.poll_event().is_some() {}
        if used == 0 && n == 0 {
            // The buffer is full (or the input all read) and the node takes
            // nothing more: the peer is pushed back.
            break;
        }
    }

    assert!(
        consumed <= read_buffer + INPUT_SLACK,
        "took {consumed} bytes from a peer that never read (read buffer {read_buffer})"
    );
    // Only now does the peer read: everything the node owes it (held input
    // is answered as the answers leave).
    let bound = AMPLIFICATION * consumed + OUTPUT_SLACK;
    let mut owed = 0usize;
    let mut out = Vec::new();
    loop {
        let n = node.poll_transmit(now, conn, &mut out, usize::MAX);
        if n == 0 {
            break;
        }
        owed += n;
        out.clear();
        if owed >= bound {
            break;
        }
    }
    assert!(
        owed < bound,
        "a peer that never read is owed {owed} bytes or more (bound {bound}) after \
         {consumed} of {} input bytes were consumed",
        input.len()
    );

    node.handle_read_closed(now, conn);
    node.handle_connection_closed(now, conn);
    while node.poll_event().is_some() {}
});
