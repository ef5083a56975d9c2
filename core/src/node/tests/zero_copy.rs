//! Bytes written with `stream_write_bytes` and read with
//! `stream_read_chunk`: over noise copied once on each side, by the
//! cipher's frame, not by the session; over plaintext handed to the socket
//! as slices of their own (`transmit_slices`), not copied at all.

use super::*;
use bytes::Bytes;

fn session(node: &Node, conn: ConnectionId) -> &yamux::Session {
    let ConnState::Muxed(session) = &node.conns[&conn].state else {
        panic!("connected");
    };
    session
}

/// Sends 4 MiB from node 0 to node 1 on one stream with the owned-buffer
/// calls and checks they arrived; returns the two sessions' stats.
fn owned_transfer(net: &mut Net) -> (yamux::Stats, yamux::Stats) {
    net.nodes[1].register_protocol(ECHO).unwrap();
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    net.take_events(1);
    let stream = net.nodes[0].open_stream(net.now, b, [ECHO]).unwrap();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut rest = Bytes::from(data.clone());
    let mut closed = false;
    let mut served = None;
    let mut got = Vec::new();
    let mut chunks = 0;
    for _ in 0..100_000 {
        let now = net.now;
        if !rest.is_empty() {
            let _ = net.nodes[0].stream_write_bytes(now, stream, &mut rest);
        } else if !closed {
            net.nodes[0].stream_close(now, stream).unwrap();
            closed = true;
        }
        served = served.or_else(|| {
            net.events[1].iter().find_map(|e| match e {
                Event::InboundStream { stream, .. } => Some(*stream),
                _ => None,
            })
        });
        let mut eof = false;
        if let Some(s) = served {
            loop {
                match net.nodes[1].stream_read_chunk(now, s, usize::MAX) {
                    Ok(Some(chunk)) => {
                        got.extend_from_slice(&chunk);
                        chunks += 1;
                    }
                    Ok(None) => {
                        eof = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if eof {
            break;
        }
        net.advance();
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes arrived intact and in order");
    assert!(chunks > 1);
    let sent = session(&net.nodes[0], conn).stats().clone();
    let inbound = net.nodes[1]
        .conns
        .keys()
        .copied()
        .find(|&c| matches!(net.nodes[1].conns[&c].state, ConnState::Muxed(_)))
        .expect("B's side of the connection");
    (sent, session(&net.nodes[1], inbound).stats().clone())
}

const SENT: u64 = 4 << 20;

#[test]
fn owned_writes_and_chunk_reads_move_megabytes_without_session_copies() {
    let mut net = Net::new(2);
    let (sent, received) = owned_transfer(&mut net);
    assert_eq!(sent.bytes_written_zero_copy, SENT);
    // Copied: only the node's own small messages (negotiation, identify).
    assert!(sent.bytes_written < 4096, "{sent:?}");
    let total = received.bytes_received + received.bytes_received_zero_copy;
    assert!(total >= SENT);
    // Our sender puts every yamux frame whole into one noise frame, so the
    // receiver keeps nearly every payload as a slice of its decrypted
    // frame (the small ones, the node's own messages, are copied).
    assert!(
        received.bytes_received_zero_copy * 100 > total * 99,
        "{received:?}"
    );
    assert_eq!(received.bytes_read_copied, 0, "nothing copied out");
}

#[test]
fn plaintext_payloads_reach_the_socket_as_slices_of_their_own() {
    let mut net = Net::with_security(2, &[Security::Plaintext]);
    // An odd stride: writes end inside headers and payloads alike.
    net.write_stride = Some(7919);
    let (sent, _) = owned_transfer(&mut net);
    assert_eq!(sent.bytes_written_zero_copy, SENT);
    // Header, payload, header, payload...: several slices per write.
    assert!(net.max_slices > 2, "{}", net.max_slices);
    // Only the small frames (negotiation, identify) were copied into the
    // node's buffer; every bulk payload went out as it was written.
    assert!(sent.bytes_transmit_copied < 4096, "{sent:?}");
}
