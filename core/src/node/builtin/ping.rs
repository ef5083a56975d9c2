//! Ping on a stream: our ping out (one payload, its echo timed) and the
//! peer's pings served (every whole payload echoed).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Local, Machine, Report, Served, Step};
use crate::node::{PingFailure, PingId};
use crate::protocols::ping::{PAYLOAD_LEN, PROTOCOL};
use crate::time::Instant;

/// A peer pings us: echo.
pub(super) const SERVE: Served = Served {
    protocol: PROTOCOL,
    start: |_| Box::new(Serve::default()),
};

/// Our ping `id`: a random payload, sent once agreed.
pub(super) fn outbound(id: PingId, local: &mut dyn Local) -> (&'static str, Box<dyn Machine>) {
    let mut payload = [0; PAYLOAD_LEN];
    local.fill_random(&mut payload);
    let out = Out {
        id,
        payload,
        echo: [0; PAYLOAD_LEN],
        got: 0,
        sent: None,
    };
    (PROTOCOL, Box::new(out))
}

/// Our ping: the payload and the echo so far.
#[derive(Debug)]
struct Out {
    id: PingId,
    payload: [u8; PAYLOAD_LEN],
    echo: [u8; PAYLOAD_LEN],
    got: usize,
    sent: Option<Instant>,
}

impl Out {
    fn failed(&self) -> Report {
        Report::PingDone {
            ping: self.id,
            result: Err(PingFailure::Stream),
        }
    }
}

impl Machine for Out {
    fn on_negotiated(&mut self, now: Instant, out: &mut Vec<u8>) -> Step {
        out.extend_from_slice(&self.payload);
        self.sent = Some(now);
        Step::Continue
    }

    fn on_bytes(&mut self, now: Instant, chunk: &[u8], _: &mut Vec<u8>) -> (usize, Step) {
        let n = (PAYLOAD_LEN - self.got).min(chunk.len());
        self.echo[self.got..self.got + n].copy_from_slice(&chunk[..n]);
        self.got += n;
        if self.got < PAYLOAD_LEN {
            return (n, Step::Continue);
        }
        let result = if self.echo == self.payload {
            Ok(now.saturating_duration_since(self.sent.unwrap_or(now)))
        } else {
            Err(PingFailure::WrongEcho)
        };
        let report = Report::PingDone {
            ping: self.id,
            result,
        };
        let step = Step::Done {
            report: Some(report),
            close: true,
        };
        (n, step)
    }

    fn on_eof(&mut self) -> Step {
        Step::Done {
            report: Some(self.failed()),
            close: true,
        }
    }

    fn on_gone(self: Box<Self>) -> Option<Report> {
        Some(self.failed())
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
