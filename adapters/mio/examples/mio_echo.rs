//! Two nodes in one mio event loop: the second dials the first, opens
//! `/echo/1.0.0`, and the first echoes. Everything runs on one thread.

use mio::{Events, Poll, Token};
use sansp2p::node::{Config, Event, StreamError};
use sansp2p::Keypair;
use sansp2p_mio::MioNode;

const ECHO: &str = "/echo/1.0.0";

fn main() -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut server = MioNode::new(
        Config::new(Keypair::from_secret_bytes([1; 32])),
        Token(1_000),
    )
    .expect("config");
    let mut client = MioNode::new(
        Config::new(Keypair::from_secret_bytes([2; 32])),
        Token(2_000),
    )
    .expect("config");
    server.node().register_protocol(ECHO).expect("valid name");
    server
        .node()
        .listen_on(sansp2p::addr::tcp_multiaddr("127.0.0.1:0".parse().unwrap()));

    let server_peer = server.node().local_peer_id();
    let mut echoed = Vec::new();
    let mut reply = Vec::new();
    let mut client_stream = None;
    let mut done = false;
    while !done {
        let t1 = server.step(poll.registry())?;
        let mut handled = false;
        while let Some(event) = server.poll_event() {
            handled = true;
            match event {
                Event::Listening { addr, .. } => {
                    let now = client.now();
                    println!("server {server_peer} listening");
                    client
                        .node()
                        .dial(now, Some(server_peer), vec![addr])
                        .expect("dial");
                }
                Event::InboundStream { stream, .. } | Event::StreamReadable { stream } => {
                    let now = server.now();
                    let mut buf = [0u8; 4096];
                    loop {
                        match server.node().stream_read(now, stream, &mut buf) {
                            Ok(0) => {
                                let _ = server.node().stream_write(now, stream, &echoed);
                                let _ = server.node().stream_close(now, stream);
                                break;
                            }
                            Ok(n) => echoed.extend_from_slice(&buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                _ => {}
            }
        }
        let t2 = client.step(poll.registry())?;
        while let Some(event) = client.poll_event() {
            handled = true;
            let now = client.now();
            match event {
                Event::Dialed { peer, .. } => {
                    client_stream =
                        Some(client.node().open_stream(now, peer, [ECHO]).expect("open"));
                }
                Event::StreamOpened { stream, .. } => {
                    client
                        .node()
                        .stream_write(now, stream, b"Hello, world!\n")
                        .expect("write");
                    client.node().stream_close(now, stream).expect("close");
                }
                Event::StreamReadable { stream } if Some(stream) == client_stream => {
                    let mut buf = [0u8; 4096];
                    loop {
                        match client.node().stream_read(now, stream, &mut buf) {
                            Ok(0) => {
                                println!("read reply: {:?}", String::from_utf8_lossy(&reply));
                                done = true;
                                break;
                            }
                            Ok(n) => reply.extend_from_slice(&buf[..n]),
                            Err(StreamError::WouldBlock) => break,
                            Err(e) => panic!("read failed: {e}"),
                        }
                    }
                }
                _ => {}
            }
        }
        if handled {
            // Commands issued while handling events need a step first.
            continue;
        }
        poll.poll(&mut events, [t1, t2].into_iter().flatten().min())?;
        for event in events.iter() {
            let _ = server.handle_event(poll.registry(), event)
                || client.handle_event(poll.registry(), event);
        }
    }
    Ok(())
}
