//! A yamux session, either role, fed arbitrary bytes in arbitrary pieces
//! with time moving forward; it accepts every inbound stream and reads
//! everything. No panic, bounded output, invariants hold.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, Role, Session};

#[derive(Debug, Arbitrary)]
struct Input {
    server: bool,
    steps: Vec<(Vec<u8>, u16)>,
}

fuzz_target!(|input: Input| {
    let role = if input.server {
        Role::Server
    } else {
        Role::Client
    };
    let mut now = Instant::ZERO;
    let mut s = Session::new(now, role, Config::default()).unwrap();
    let mut buf = [0u8; 4096];
    for (bytes, advance_ms) in &input.steps {
        now += core::time::Duration::from_millis(u64::from(*advance_ms));
        let used = s.handle_read(now, bytes);
        assert!(used <= bytes.len());
        s.handle_timeout(now);
        let mut sent = 0usize;
        while let Some(t) = s.poll_transmit(now) {
            sent += t.wire_len();
            assert!(sent < 64 << 20, "output must stay bounded");
        }
        while let Some(event) = s.poll_event() {
            match event {
                Event::InboundStream { id } => {
                    let _ = s.accept(id);
                }
                Event::StreamReadable { id } => {
                    while let Ok(n) = s.read(id, &mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        s.check_invariants();
    }
});
