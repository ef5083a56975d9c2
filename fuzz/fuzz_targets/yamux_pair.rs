//! Two yamux sessions connected in memory, driven by an arbitrary sequence
//! of operations on both sides. Checks that no byte is lost, duplicated or
//! reordered: what one side reads on a stream is a prefix of what the other
//! wrote on it, unless the stream was reset.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, Role, Session, StreamId};

#[derive(Debug, Arbitrary)]
enum Op {
    Open { side: bool },
    Write { side: bool, stream: u8, len: u16 },
    Read { side: bool, stream: u8, max: u16 },
    Close { side: bool, stream: u8 },
    Reset { side: bool, stream: u8 },
    Deliver { side: bool, max: u16 },
    Tick { ms: u16 },
    Ping { side: bool },
}

struct Side {
    s: Session,
    /// Bytes written per stream (what the peer should read).
    written: HashMap<u32, Vec<u8>>,
    /// Bytes read per stream.
    read: HashMap<u32, Vec<u8>>,
    streams: Vec<StreamId>,
    wire: Vec<u8>,
    reset: std::collections::HashSet<u32>,
}

impl Side {
    fn new(role: Role) -> Self {
        Side {
            s: Session::new(Instant::ZERO, role, Config::default()).unwrap(),
            written: HashMap::new(),
            read: HashMap::new(),
            streams: Vec::new(),
            wire: Vec::new(),
            reset: Default::default(),
        }
    }

    fn pick(&self, n: u8) -> Option<StreamId> {
        (!self.streams.is_empty()).then(|| self.streams[n as usize % self.streams.len()])
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.s.poll_transmit(now) {
            t.write_to(&mut self.wire);
        }
        while let Some(e) = self.s.poll_event() {
            match e {
                Event::InboundStream { id } => {
                    if self.s.accept(id).is_ok() {
                        self.streams.push(id);
                    }
                }
                Event::StreamReset { id, .. } => {
                    self.reset.insert(id.get());
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::ZERO;
    let mut sides = [Side::new(Role::Client), Side::new(Role::Server)];
    let mut counter = 0u8;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Open { side } => {
                let me = &mut sides[side as usize];
                if let Ok(id) = me.s.open_stream() {
                    me.streams.push(id);
                }
            }
            Op::Write { side, stream, len } => {
                let me = &mut sides[side as usize];
                if let Some(id) = me.pick(stream) {
                    let data: Vec<u8> = (0..len)
                        .map(|_| {
                            counter = counter.wrapping_add(1);
                            counter
                        })
                        .collect();
                    if let Ok(n) = me.s.write(id, &data) {
                        me.written
                            .entry(id.get())
                            .or_default()
                            .extend_from_slice(&data[..n]);
                    }
                }
            }
            Op::Read { side, stream, max } => {
                let me = &mut sides[side as usize];
                if let Some(id) = me.pick(stream) {
                    let mut buf = vec![0u8; max as usize + 1];
                    if let Ok(n) = me.s.read(id, &mut buf) {
                        me.read
                            .entry(id.get())
                            .or_default()
                            .extend_from_slice(&buf[..n]);
                    }
                }
            }
            Op::Close { side, stream } => {
                let me = &mut sides[side as usize];
                if let Some(id) = me.pick(stream) {
                    let _ = me.s.close(id);
                }
            }
            Op::Reset { side, stream } => {
                let me = &mut sides[side as usize];
                if let Some(id) = me.pick(stream) {
                    let _ = me.s.reset(id);
                    me.reset.insert(id.get());
                }
            }
            Op::Deliver { side, max } => {
                let (a, b) = sides.split_at_mut(1);
                let (from, to) = if side {
                    (&mut b[0], &mut a[0])
                } else {
                    (&mut a[0], &mut b[0])
                };
                let n = from.wire.len().min(max as usize + 1);
                let used = to.s.handle_read(now, &from.wire[..n]);
                from.wire.drain(..used);
            }
            Op::Tick { ms } => {
                now += core::time::Duration::from_millis(u64::from(ms));
                for s in &mut sides {
                    s.s.handle_timeout(now);
                }
            }
            Op::Ping { side } => {
                let _ = sides[side as usize].s.ping();
            }
        }
        for s in &mut sides {
            s.drain(now);
            s.s.check_invariants();
        }
    }
    // What each side read is a prefix of what the other wrote, unless reset.
    for (reader, writer) in [(0, 1), (1, 0)] {
        for (id, got) in &sides[reader].read {
            if sides[reader].reset.contains(id) || sides[writer].reset.contains(id) {
                continue;
            }
            let sent = sides[writer]
                .written
                .get(id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            assert!(sent.starts_with(got), "stream {id}: read bytes not written");
        }
    }
});
