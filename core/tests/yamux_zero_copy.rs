//! Bytes handed over whole: `write_bytes` and `handle_read_shared` keep
//! them where they are, and the fraction rule bounds what a slice can pin.

use bytes::Bytes;
use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, Role, Session, StreamId, SHARE_MIN};

fn session(role: Role) -> Session {
    Session::new(Instant::ZERO, role, Config::default()).unwrap()
}

/// Everything `s` has to send, header and payload, in one buffer.
fn wire(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(Instant::ZERO) {
        t.write_to(&mut out);
    }
    out
}

/// A server that accepted stream `id` from `wire`, read through
/// `handle_read_shared`.
fn receive_shared(wire: &Bytes, id: StreamId) -> Session {
    let mut server = session(Role::Server);
    assert_eq!(server.handle_read_shared(Instant::ZERO, wire), wire.len());
    assert_eq!(server.poll_event(), Some(Event::InboundStream { id }));
    server.accept(id).unwrap();
    server
}

#[test]
fn write_bytes_takes_what_fits_and_sends_it_from_where_it_was() {
    let mut client = session(Role::Client);
    let id = client.open_stream().unwrap();
    let data = Bytes::from(vec![5u8; 300 * 1024]);
    let start = data.as_ptr() as usize;
    let mut rest = data.clone();
    assert_eq!(client.write_bytes(id, &mut rest), Ok(256 * 1024));
    assert_eq!(rest.len(), 44 * 1024, "the rest stays with the caller");
    assert_eq!(rest.as_ptr() as usize, start + 256 * 1024);
    assert_eq!(client.stats().bytes_written_zero_copy, 256 * 1024);
    assert_eq!(client.stats().bytes_written, 0);
    // Every payload that leaves points into the caller's allocation.
    let mut sent = 0;
    while let Some(t) = client.poll_transmit(Instant::ZERO) {
        if t.payload.is_empty() {
            continue;
        }
        let at = t.payload.as_ptr() as usize;
        assert!(at >= start && at + t.payload.len() <= start + data.len());
        sent += t.payload.len();
    }
    // The initial window lets 256 KiB out.
    assert_eq!(sent, 256 * 1024);
    // A small write is copied instead, so small messages can share frames.
    let mut small = Bytes::from_static(b"hello");
    assert!(small.len() < SHARE_MIN);
    assert_eq!(client.write_bytes(id, &mut small), Ok(5));
    assert!(small.is_empty());
    assert_eq!(client.stats().bytes_written, 5);
}

#[test]
fn write_bytes_on_a_full_buffer_blocks_and_keeps_the_bytes() {
    let mut client = session(Role::Client);
    let id = client.open_stream().unwrap();
    let mut data = Bytes::from(vec![1u8; 256 * 1024]);
    assert_eq!(client.write_bytes(id, &mut data), Ok(256 * 1024));
    let mut more = Bytes::from(vec![2u8; 4096]);
    assert_eq!(
        client.write_bytes(id, &mut more),
        Err(sansp2p::yamux::WriteError::Blocked)
    );
    assert_eq!(more.len(), 4096);
}

#[test]
fn large_payloads_are_read_as_slices_of_the_input() {
    let mut client = session(Role::Client);
    let id = client.open_stream().unwrap();
    let payload: Vec<u8> = (0..16 * 1024).map(|i| i as u8).collect();
    client.write(id, &payload).unwrap();
    let wire = Bytes::from(wire(&mut client));
    let mut server = receive_shared(&wire, id);
    assert_eq!(server.stats().bytes_received_zero_copy, 16 * 1024);
    assert_eq!(server.stats().bytes_received, 0);
    let chunk = server.read_chunk(id, usize::MAX).unwrap().unwrap();
    assert_eq!(&chunk[..], &payload[..]);
    let (at, base) = (chunk.as_ptr() as usize, wire.as_ptr() as usize);
    assert!(at > base && at < base + wire.len(), "a slice of the input");
}

#[test]
fn small_payloads_and_small_shares_of_a_large_input_are_copied() {
    // Under SHARE_MIN: copied.
    let mut client = session(Role::Client);
    let id = client.open_stream().unwrap();
    client.write(id, &[3u8; SHARE_MIN - 1]).unwrap();
    let wire_small = Bytes::from(wire(&mut client));
    let server = receive_shared(&wire_small, id);
    assert_eq!(server.stats().bytes_received, (SHARE_MIN - 1) as u64);
    assert_eq!(server.stats().bytes_received_zero_copy, 0);

    // 4 KiB frames in a 64 KiB input: each under a fifth of it, so a
    // slice would pin far more than it holds; copied.
    let mut client = session(Role::Client);
    let ids: Vec<StreamId> = (0..16).map(|_| client.open_stream().unwrap()).collect();
    for &id in &ids {
        client.write(id, &[4u8; 4096]).unwrap();
    }
    let wire_many = Bytes::from(wire(&mut client));
    let mut server = session(Role::Server);
    assert_eq!(
        server.handle_read_shared(Instant::ZERO, &wire_many),
        wire_many.len()
    );
    assert_eq!(server.stats().bytes_received, 16 * 4096);
    assert_eq!(server.stats().bytes_received_zero_copy, 0);
}

#[test]
fn write_bytes_on_a_stream_the_peer_reset_or_we_closed_is_a_typed_error() {
    use sansp2p::yamux::WriteError;
    let mut client = session(Role::Client);
    let id = client.open_stream().unwrap();
    let opened = Bytes::from(wire(&mut client));
    let mut server = receive_shared(&opened, id);
    server.reset(id).unwrap();
    let rst = wire(&mut server);
    assert_eq!(client.handle_read(Instant::ZERO, &rst), rst.len());
    let mut data = Bytes::from(vec![3u8; 64 * 1024]);
    assert!(matches!(
        client.write_bytes(id, &mut data),
        Err(WriteError::Reset { .. })
    ));
    // Asked again, the freed stream is unknown.
    assert_eq!(
        client.write_bytes(id, &mut data),
        Err(WriteError::UnknownStream)
    );
    let other = client.open_stream().unwrap();
    client.close(other).unwrap();
    assert_eq!(
        client.write_bytes(other, &mut data),
        Err(WriteError::Closed)
    );
    assert_eq!(data.len(), 64 * 1024, "nothing was taken");
}
