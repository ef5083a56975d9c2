//! The rust-libp2p circuit-relay-v2 peer of `tests/relay_peers.rs`, driven
//! over stdin/stdout like `conformance/js/relay.mjs`; see
//! [`sansp2p_conformance::rust_relay_peer`] for the command line and the
//! protocol.

use std::process::ExitCode;

use sansp2p_conformance::rust_relay_peer::{main as run, Options};

fn main() -> ExitCode {
    let result = Options::parse(std::env::args().skip(1)).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rust_relay_peer: {e}");
            ExitCode::from(2)
        }
    }
}
