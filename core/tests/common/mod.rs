//! Test helpers: an in-memory session pair on a virtual clock, with an
//! emulated link (one-way latency, read size, transmit batch size).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, Header, ReadError, Role, Session, StreamId, HEADER_LEN};

/// Bytes in flight in one direction.
#[derive(Default, Debug)]
pub struct Pipe {
    /// Segments not yet delivered, with their arrival time.
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    /// Delivered but not yet consumed by the receiver.
    ready: Vec<u8>,
    ready_off: usize,
    /// Every byte ever sent (for frame inspection), when recording.
    pub log: Vec<u8>,
    pub record: bool,
    /// When the sender closed the transport (after its session closed).
    eof_at: Option<Instant>,
    eof_delivered: bool,
    /// With a bandwidth limit: when the link finishes sending what it has.
    busy_until: Instant,
}

impl Pipe {
    /// Serialises `bytes` onto a link of `bandwidth` bytes/s starting no
    /// earlier than `now`; they arrive `latency` after the last byte left.
    pub fn push_limited(
        &mut self,
        now: Instant,
        latency: Duration,
        bandwidth: u64,
        bytes: Vec<u8>,
    ) {
        let start = self.busy_until.max(now);
        let nanos = (bytes.len() as u128 * 1_000_000_000 / u128::from(bandwidth)) as u64;
        self.busy_until = start + Duration::from_nanos(nanos);
        let at = self.busy_until + latency;
        self.push(at, bytes);
    }

    /// Bytes queued on a bandwidth-limited link and not yet sent.
    fn backlog(&self, now: Instant, bandwidth: u64) -> u64 {
        let d = self.busy_until.saturating_duration_since(now);
        (d.as_nanos() * u128::from(bandwidth) / 1_000_000_000) as u64
    }

    pub fn push(&mut self, at: Instant, bytes: Vec<u8>) {
        if self.record {
            self.log.extend_from_slice(&bytes);
        }
        if !bytes.is_empty() {
            self.in_flight.push_back((at, bytes));
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        match self.in_flight.front() {
            Some((t, _)) => Some(*t),
            None if !self.eof_delivered => self.eof_at,
            None => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
            && self.ready_off == self.ready.len()
            && (self.eof_at.is_none() || self.eof_delivered)
    }

    /// The sender closes the transport at `at` (arrives after all bytes).
    fn close(&mut self, at: Instant) {
        if self.eof_at.is_none() {
            self.eof_at = Some(at);
        }
    }

    /// Delivers what has arrived by `now` into `to`, `read_size` bytes per
    /// call; returns whether any byte was consumed.
    fn deliver(&mut self, now: Instant, to: &mut Session, read_size: usize) -> bool {
        while self.in_flight.front().is_some_and(|(t, _)| *t <= now) {
            let (_, seg) = self.in_flight.pop_front().unwrap();
            if self.ready_off == self.ready.len() {
                self.ready.clear();
                self.ready_off = 0;
            }
            self.ready.extend_from_slice(&seg);
        }
        let mut progress = false;
        while self.ready_off < self.ready.len() {
            let end = self
                .ready_off
                .saturating_add(read_size)
                .min(self.ready.len());
            let n = to.handle_read(now, &self.ready[self.ready_off..end]);
            assert!(n <= end - self.ready_off);
            if n == 0 {
                break;
            }
            progress = true;
            self.ready_off += n;
        }
        let drained = self.in_flight.is_empty() && self.ready_off == self.ready.len();
        if drained && !self.eof_delivered && self.eof_at.is_some_and(|t| t <= now) {
            self.eof_delivered = true;
            to.handle_eof(now);
            progress = true;
        }
        progress
    }
}

/// Decodes all frame headers in a byte log (skipping Data payloads).
pub fn frames(log: &[u8]) -> Vec<Header> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= log.len() {
        let h = Header::decode(log[pos..pos + HEADER_LEN].try_into().unwrap()).unwrap();
        pos += HEADER_LEN;
        if let Header::Data { len, .. } = h {
            pos += len as usize;
        }
        out.push(h);
    }
    out
}

/// Drains every frame a session wants to send into wire bytes.
pub fn drain(s: &mut Session, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(now) {
        t.write_to(&mut out);
    }
    out
}

/// Drains every event of a session.
pub fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// How a stream's read side ended, as seen by `read_all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Blocked,
    Eof,
    Reset,
    Other(ReadError),
}

/// Reads everything available on a stream in `chunk`-byte reads.
pub fn read_all(s: &mut Session, id: StreamId, chunk: usize) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match s.read(id, &mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(ReadError::Blocked) => return (out, End::Blocked),
            Err(ReadError::Reset { .. }) => return (out, End::Reset),
            Err(e) => return (out, End::Other(e)),
        }
    }
}

/// Two sessions joined by an emulated link on a virtual clock.
#[derive(Debug)]
pub struct Pair {
    pub client: Session,
    pub server: Session,
    pub client_events: VecDeque<Event>,
    pub server_events: VecDeque<Event>,
    pub now: Instant,
    /// One-way latency of each direction.
    pub latency: Duration,
    /// Largest slice given to one `handle_read`.
    pub read_size: usize,
    /// `Some(n)`: use `poll_transmit_into` with at most `n` bytes per call
    /// instead of `poll_transmit`.
    pub transmit_batch: Option<usize>,
    pub to_server: Pipe,
    pub to_client: Pipe,
    /// Close a side's transport (EOF at the peer) once its session closed.
    pub close_transports: bool,
    /// `Some(bytes per second)`: each direction is a link of that rate, and
    /// a sender only hands it frames while less than `send_buffer` bytes
    /// wait to go out (a socket send buffer).
    pub bandwidth: Option<u64>,
    pub send_buffer: u64,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_config(Config::default(), Config::default())
    }

    pub fn with_config(client: Config, server: Config) -> Pair {
        let now = Instant::from_millis(1_000);
        Pair {
            client: Session::new(now, Role::Client, client).unwrap(),
            server: Session::new(now, Role::Server, server).unwrap(),
            client_events: VecDeque::new(),
            server_events: VecDeque::new(),
            now,
            latency: Duration::ZERO,
            read_size: usize::MAX,
            transmit_batch: None,
            to_server: Pipe::default(),
            to_client: Pipe::default(),
            close_transports: true,
            bandwidth: None,
            send_buffer: 256 * 1024,
        }
    }

    pub fn recording(mut self) -> Pair {
        self.to_server.record = true;
        self.to_client.record = true;
        self
    }

    fn transmit(s: &mut Session, now: Instant, batch: Option<usize>) -> Vec<u8> {
        match batch {
            None => drain(s, now),
            Some(max) => {
                let mut out = Vec::new();
                while s.poll_transmit_into(now, &mut out, max) > 0 {}
                out
            }
        }
    }

    /// One round: transmit, deliver what has arrived, collect events.
    /// Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let at = now + self.latency;
        let mut progress = false;
        if let Some(bw) = self.bandwidth {
            for (s, pipe) in [
                (&mut self.client, &mut self.to_server),
                (&mut self.server, &mut self.to_client),
            ] {
                while pipe.backlog(now, bw) < self.send_buffer {
                    let Some(t) = s.poll_transmit(now) else { break };
                    let mut seg = Vec::with_capacity(t.wire_len());
                    t.write_to(&mut seg);
                    pipe.push_limited(now, self.latency, bw, seg);
                    progress = true;
                }
            }
        } else {
            let c = Self::transmit(&mut self.client, now, self.transmit_batch);
            let s = Self::transmit(&mut self.server, now, self.transmit_batch);
            progress = !c.is_empty() || !s.is_empty();
            self.to_server.push(at, c);
            self.to_client.push(at, s);
        }
        // A closed session's adapter closes the transport once it has
        // written everything.
        if self.close_transports && self.client.is_closed() {
            self.to_server.close(at);
        }
        if self.close_transports && self.server.is_closed() {
            self.to_client.close(at);
        }
        progress |= self
            .to_server
            .deliver(now, &mut self.server, self.read_size);
        progress |= self
            .to_client
            .deliver(now, &mut self.client, self.read_size);
        while let Some(e) = self.client.poll_event() {
            self.client_events.push_back(e);
            progress = true;
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push_back(e);
            progress = true;
        }
        self.client.check_invariants();
        self.server.check_invariants();
        progress
    }

    /// Steps until quiet at the current time.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// Runs until nothing is in flight, moving the clock to each arrival
    /// (and firing timers due on the way).
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            self.settle();
            let next = [self.to_server.next_arrival(), self.to_client.next_arrival()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) => self.advance_to(t),
                None => return,
            }
        }
        panic!("pair did not finish driving");
    }

    /// Moves the clock to `t`, firing timers and deliveries due before it.
    pub fn run_until(&mut self, t: Instant) {
        loop {
            self.settle();
            let link_free = |p: &Pipe| (p.busy_until > self.now).then_some(p.busy_until);
            let next = [
                self.to_server.next_arrival(),
                self.to_client.next_arrival(),
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                link_free(&self.to_server),
                link_free(&self.to_client),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(n) if n <= t => self.advance_to(n.max(self.now)),
                _ => break,
            }
        }
        self.advance_to(t);
        self.settle();
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
        }
        let now = self.now;
        if self.client.poll_timeout().is_some_and(|d| d <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|d| d <= now) {
            self.server.handle_timeout(now);
        }
    }

    pub fn idle(&self) -> bool {
        self.to_server.is_empty() && self.to_client.is_empty()
    }

    /// Opens a stream on the client and accepts it on the server.
    pub fn open_client_stream(&mut self) -> StreamId {
        let id = self.client.open_stream().unwrap();
        self.drive();
        let pos = self
            .server_events
            .iter()
            .position(|e| *e == Event::InboundStream { id })
            .expect("server saw the stream");
        self.server_events.remove(pos);
        self.server.accept(id).unwrap();
        self.drive();
        id
    }

    /// Opens a stream on the server and accepts it on the client.
    pub fn open_server_stream(&mut self) -> StreamId {
        let id = self.server.open_stream().unwrap();
        self.drive();
        let pos = self
            .client_events
            .iter()
            .position(|e| *e == Event::InboundStream { id })
            .expect("client saw the stream");
        self.client_events.remove(pos);
        self.client.accept(id).unwrap();
        self.drive();
        id
    }
}

/// Writes all of `data` into a stream, driving the pair whenever the stream
/// pushes back, and reading on the far side with `reader`.
pub fn write_all(
    pair: &mut Pair,
    from_client: bool,
    id: StreamId,
    data: &[u8],
    mut on_progress: impl FnMut(&mut Pair),
) {
    let mut off = 0;
    let mut stalls = 0;
    while off < data.len() {
        let s = if from_client {
            &mut pair.client
        } else {
            &mut pair.server
        };
        match s.write(id, &data[off..]) {
            Ok(n) => off += n,
            Err(sansp2p::yamux::WriteError::Blocked) => {}
            Err(e) => panic!("write failed: {e}"),
        }
        pair.drive();
        let before = off;
        on_progress(pair);
        if before == off {
            stalls += 1;
            assert!(stalls < 1_000_000, "write_all stalled");
        }
    }
}
