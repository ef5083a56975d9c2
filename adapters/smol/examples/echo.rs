//! The echo demo.
//!
//! Until the node and the socket adapters land, this runs the connection
//! upgrade in memory: two identities, multistream-select into
//! `/plaintext/2.0.0`, the plaintext handshake, then multistream-select of
//! `/echo/1.0.0` on the authenticated channel and an echo of one message.
//! Every byte goes through the real sans-IO machines; only the sockets are
//! replaced by two in-memory buffers.

use std::process::ExitCode;

use sansp2p::multistream::{self, Negotiator};
use sansp2p::security::plaintext::{self, Handshake};
use sansp2p::{Keypair, PeerId};

/// One side of the in-memory connection: what it has written and not yet
/// been read by the other side.
#[derive(Default)]
struct Pipe {
    bytes: Vec<u8>,
}

impl Pipe {
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

fn negotiate(
    label: &str,
    dialer: &mut Negotiator,
    listener: &mut Negotiator,
    d_out: &mut Pipe,
    l_out: &mut Pipe,
) -> Result<String, String> {
    let mut agreed = (None, None);
    for _ in 0..16 {
        dialer.poll_transmit(&mut d_out.bytes);
        listener.poll_transmit(&mut l_out.bytes);
        let to_l = d_out.take();
        let n = listener.handle_read(&to_l);
        d_out.bytes.extend_from_slice(&to_l[n..]);
        let to_d = l_out.take();
        let n = dialer.handle_read(&to_d);
        l_out.bytes.extend_from_slice(&to_d[n..]);
        for (side, machine) in [(0, &mut *dialer), (1, &mut *listener)] {
            while let Some(event) = machine.poll_event() {
                match event {
                    multistream::Event::Negotiated { protocol } => {
                        if side == 0 {
                            agreed.0 = Some(protocol)
                        } else {
                            agreed.1 = Some(protocol)
                        }
                    }
                    multistream::Event::Failed(e) => return Err(format!("{label}: {e}")),
                    _ => {}
                }
            }
        }
        if let (Some(a), Some(b)) = (&agreed.0, &agreed.1) {
            if dialer.is_finished() && listener.is_finished() {
                assert_eq!(a, b);
                return Ok(a.to_string());
            }
        }
    }
    Err(format!("{label}: negotiation did not finish"))
}

fn secure(
    dialer: &mut Handshake,
    listener: &mut Handshake,
    d_out: &mut Pipe,
    l_out: &mut Pipe,
) -> Result<(PeerId, PeerId), String> {
    dialer.poll_transmit(&mut d_out.bytes);
    listener.poll_transmit(&mut l_out.bytes);
    let to_l = d_out.take();
    let n = listener.handle_read(&to_l);
    d_out.bytes.extend_from_slice(&to_l[n..]);
    let to_d = l_out.take();
    let n = dialer.handle_read(&to_d);
    l_out.bytes.extend_from_slice(&to_d[n..]);
    let outcome = |h: &mut Handshake| match h.poll_event() {
        Some(plaintext::Event::Done { peer, .. }) => Ok(peer),
        Some(plaintext::Event::Failed(e)) => Err(format!("plaintext: {e}")),
        _ => Err("plaintext: handshake did not finish".to_string()),
    };
    Ok((outcome(dialer)?, outcome(listener)?))
}

fn run() -> Result<(), String> {
    if let Some(arg) = std::env::args().nth(1) {
        return Err(format!(
            "unsupported argument {arg:?}: until the socket adapters land, the demo runs in memory only"
        ));
    }
    let listener_key = Keypair::from_secret_bytes([2; 32]);
    let dialer_key = Keypair::from_secret_bytes([1; 32]);
    println!("listener peer id: {}", listener_key.peer_id());
    println!("dialer   peer id: {}", dialer_key.peer_id());
    println!("transport: in-memory pipe (socket adapters come with the node)");

    let (mut d_out, mut l_out) = (Pipe::default(), Pipe::default());
    let mut d = Negotiator::dialer([plaintext::PROTOCOL]).map_err(|e| e.to_string())?;
    let mut l = Negotiator::listener([plaintext::PROTOCOL]).map_err(|e| e.to_string())?;
    let security = negotiate("security", &mut d, &mut l, &mut d_out, &mut l_out)?;
    println!("negotiated security: {security}");

    let mut dh = Handshake::new(&dialer_key.public(), Some(listener_key.peer_id()));
    let mut lh = Handshake::new(&listener_key.public(), None);
    let (dialer_sees, listener_sees) = secure(&mut dh, &mut lh, &mut d_out, &mut l_out)?;
    println!("dialer authenticated the listener as {dialer_sees}");
    println!("listener authenticated the dialer as {listener_sees}");

    let mut d = Negotiator::dialer_with(["/echo/1.0.0"], multistream::Config::lazy())
        .map_err(|e| e.to_string())?;
    let mut l = Negotiator::listener(["/echo/1.0.0"]).map_err(|e| e.to_string())?;
    let app = negotiate("application", &mut d, &mut l, &mut d_out, &mut l_out)?;
    println!("negotiated application protocol: {app} (lazy)");

    d_out.bytes.extend_from_slice(b"Hello, world!\n");
    let request = d_out.take();
    l_out.bytes.extend_from_slice(&request);
    let reply = l_out.take();
    println!("read reply: {:?}", String::from_utf8_lossy(&reply));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
