//! A Negotiator, in either role, fed arbitrary bytes in arbitrary pieces.
//! It must never panic, never consume more than it was given, and once
//! finished it must consume nothing more.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::multistream::{Config, Negotiator};

#[derive(Debug, Arbitrary)]
struct Input {
    role: u8,
    chunks: Vec<Vec<u8>>,
    decisions: Vec<bool>,
    eof: bool,
}

fuzz_target!(|input: Input| {
    let mut n = match input.role % 4 {
        0 => Negotiator::dialer(["/a", "/b/1.0.0"]).unwrap(),
        1 => Negotiator::dialer_with(["/a"], Config::lazy()).unwrap(),
        2 => Negotiator::listener(["/a", "/b/1.0.0"]).unwrap(),
        _ => Negotiator::listener_with(["/a"], true, Config::default()).unwrap(),
    };
    let mut out = Vec::new();
    let mut decisions = input.decisions.iter();
    for chunk in &input.chunks {
        let was_finished = n.is_finished();
        let used = n.handle_read(chunk);
        assert!(used <= chunk.len());
        if was_finished {
            assert_eq!(used, 0);
        }
        let _ = n.poll_transmit(&mut out);
        while let Some(event) = n.poll_event() {
            if let sansp2p::multistream::Event::InboundProposal { .. } = event {
                match decisions.next() {
                    Some(true) => n.accept().unwrap(),
                    Some(false) => n.reject().unwrap(),
                    None => {}
                }
            }
        }
        assert!(out.len() < 1 << 24, "output must stay bounded");
    }
    if input.eof {
        n.handle_eof();
        while n.poll_event().is_some() {}
    }
});
