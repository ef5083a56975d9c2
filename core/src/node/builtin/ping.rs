//! Ping on a stream: our pings out (one stream per connection, kept open;
//! one payload at a time, its echo timed) and the peer's pings served
//! (every whole payload echoed).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::{Local, Machine, Payload, Report, Served, Step};
use crate::node::{PingFailure, PingId};
use crate::protocols::ping::{PAYLOAD_LEN, PROTOCOL};
use crate::time::Instant;

/// A peer pings us: echo.
pub(super) const SERVE: Served = Served {
    protocol: PROTOCOL,
    start: |_| Box::new(Serve::default()),
};

/// Our ping stream, opened for ping `id` (a random payload, sent once
/// agreed); later pings on the connection queue on it.
pub(super) fn outbound(id: PingId, local: &mut dyn Local) -> (&'static str, Box<dyn Machine>) {
    let mut payload = [0; PAYLOAD_LEN];
    local.fill_random(&mut payload);
    let mut queue = VecDeque::new();
    queue.push_back((id, payload));
    let out = Out {
        negotiated: false,
        current: None,
        queue,
    };
    (PROTOCOL, Box::new(out))
}

/// Our ping stream: the ping in flight and the ones waiting for it.
#[derive(Debug)]
struct Out {
    negotiated: bool,
    current: Option<InFlight>,
    queue: VecDeque<(PingId, Payload)>,
}

/// The ping whose payload is out: the echo so far.
#[derive(Debug)]
struct InFlight {
    id: PingId,
    payload: Payload,
    echo: Payload,
    got: usize,
    sent: Instant,
}

impl Out {
    /// Sends the next waiting payload when none is in flight.
    fn send_next(&mut self, now: Instant, out: &mut Vec<u8>) {
        if !self.negotiated || self.current.is_some() {
            return;
        }
        if let Some((id, payload)) = self.queue.pop_front() {
            out.extend_from_slice(&payload);
            self.current = Some(InFlight {
                id,
                payload,
                echo: [0; PAYLOAD_LEN],
                got: 0,
                sent: now,
            });
        }
    }

    /// Every ping not answered (the one in flight with `error`, the
    /// waiting ones as lost with the stream), as one report.
    fn unanswered(&mut self, error: PingFailure) -> Option<Report> {
        let pings: Vec<(PingId, PingFailure)> = self
            .current
            .take()
            .map(|c| (c.id, error))
            .into_iter()
            .chain(
                self.queue
                    .drain(..)
                    .map(|(id, _)| (id, PingFailure::Stream)),
            )
            .collect();
        (!pings.is_empty()).then_some(Report::PingsFailed(pings))
    }
}

impl Machine for Out {
    fn on_negotiated(&mut self, now: Instant, out: &mut Vec<u8>) -> Step {
        self.negotiated = true;
        self.send_next(now, out);
        Step::Continue
    }

    fn on_bytes(&mut self, now: Instant, chunk: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let Some(c) = self.current.as_mut() else {
            // Bytes nobody asked for: the peer is not echoing.
            return (0, Step::Failed);
        };
        let n = (PAYLOAD_LEN - c.got).min(chunk.len());
        c.echo[c.got..c.got + n].copy_from_slice(&chunk[..n]);
        c.got += n;
        if c.got < PAYLOAD_LEN {
            return (n, Step::Continue);
        }
        if c.echo != c.payload {
            // Not an echo: the stream is of no use; every ping on it fails.
            let report = self.unanswered(PingFailure::WrongEcho);
            return (
                n,
                Step::Done {
                    report,
                    close: true,
                },
            );
        }
        let report = Report::PingDone {
            ping: c.id,
            result: Ok(now.saturating_duration_since(c.sent)),
        };
        self.current = None;
        self.send_next(now, out);
        (n, Step::Report(report))
    }

    fn on_eof(&mut self, _: Instant) -> Step {
        Step::Done {
            report: self.unanswered(PingFailure::Stream),
            close: true,
        }
    }

    fn on_gone(mut self: Box<Self>) -> Option<Report> {
        self.unanswered(PingFailure::Stream)
    }

    fn queue_ping(
        &mut self,
        now: Instant,
        ping: PingId,
        payload: Payload,
        out: &mut Vec<u8>,
    ) -> bool {
        self.queue.push_back((ping, payload));
        self.send_next(now, out);
        true
    }
}

/// The peer's pings: whole payloads are echoed, a partial one waits.
#[derive(Debug, Default)]
struct Serve {
    partial: Vec<u8>,
}

impl Machine for Serve {
    fn on_bytes(&mut self, _: Instant, chunk: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        self.partial.extend_from_slice(chunk);
        let whole = self.partial.len() / PAYLOAD_LEN * PAYLOAD_LEN;
        out.extend(self.partial.drain(..whole));
        (chunk.len(), Step::Continue)
    }

    /// Echoes the peer has not taken yet: read no more pings until they are
    /// out, so a peer that pings without reading runs into its own
    /// flow-control window instead of our memory.
    fn reads_while_output_pending(&self) -> bool {
        false
    }
}
