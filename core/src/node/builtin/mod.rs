//! The protocols the node runs itself on a stream, behind one seam: each is
//! a per-stream byte machine ([`Machine`]) that the stream code feeds once
//! multistream-select agreed on its protocol. A machine writes into the
//! stream's output, says what comes next with a [`Step`], and hands the node
//! a [`Report`] when something happened that the node must act on (an
//! event, a table to update).
//!
//! Adding a protocol adds a module here, an entry in [`SERVED`] if peers
//! open it (or in [`OPT_IN`] if the node serves it only when told to), a
//! [`Builtin`] variant if the node opens it, and a [`Report`] variant (with
//! its arm in the node's `on_report`, where the node-level consequences
//! live) if the node must hear about it. The stream code's
//! dispatch (negotiation, reads, end of file, vanished streams) stays as it
//! is.

mod identify;
pub(super) mod perf;
mod ping;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use super::{PerfFailure, PerfId, PerfParams, PingFailure, PingId};
use crate::protocols;
use crate::time::Instant;

/// One built-in protocol on one stream, from the agreement to its end.
///
/// The stream code writes `out` before anything else, reads from the
/// stream only what the machine may take, and acts on every [`Step`].
pub(super) trait Machine: fmt::Debug + Send + Sync {
    /// The protocol is agreed: write what opens it.
    fn on_negotiated(&mut self, now: Instant, out: &mut Vec<u8>) -> Step {
        let _ = (now, out);
        Step::Continue
    }

    /// Bytes from the peer. Returns how many were consumed (the rest is
    /// what follows the protocol's messages, discarded once it is done).
    fn on_bytes(&mut self, now: Instant, chunk: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let _ = (now, out);
        (chunk.len(), Step::Continue)
    }

    /// The peer closed its side. A machine that goes on after it (perf's
    /// server, answering) is called again on later pumps, so a repeat must
    /// change nothing.
    fn on_eof(&mut self, now: Instant) -> Step {
        let _ = now;
        Step::Done {
            report: None,
            close: true,
        }
    }

    /// The stream took everything in `out` (and the protocol is agreed):
    /// write more if there is more, at most a chunk. The stream code calls
    /// it again while the stream takes all of it, and after the stream's
    /// send buffer pushed back, once it has room again; so a machine that
    /// makes its bytes here (perf) never holds more than one chunk of them.
    fn on_writable(&mut self, now: Instant, out: &mut Vec<u8>) -> Step {
        let _ = (now, out);
        Step::Continue
    }

    /// Whether the stream may be read while `out` is not yet written. A
    /// machine that answers what it reads says no, so a peer that writes
    /// without reading meets its own flow-control window, not our memory.
    fn reads_while_output_pending(&self) -> bool {
        true
    }

    /// The stream vanished (reset, failed negotiation, closed connection)
    /// before the machine was done: what the node must hear.
    fn on_gone(self: Box<Self>) -> Option<Report> {
        None
    }

    /// A perf run's bytes so far: (upload handed to the stream, download
    /// received); `None` for every other machine.
    fn perf_moved(&self) -> Option<(u64, u64)> {
        None
    }

    /// One more ping for a ping stream that is kept open; false when the
    /// machine is not one (the node opens a new stream then).
    fn queue_ping(
        &mut self,
        now: Instant,
        ping: PingId,
        payload: Payload,
        out: &mut Vec<u8>,
    ) -> bool {
        let _ = (now, ping, payload, out);
        false
    }
}

/// A ping's random payload.
pub(super) type Payload = [u8; protocols::ping::PAYLOAD_LEN];

/// What the stream code does after a call into a [`Machine`].
#[derive(Debug)]
pub(super) enum Step {
    /// Go on: more bytes are welcome.
    Continue,
    /// Close our sending side once the output is written, and go on.
    Close,
    /// The machine is finished and dropped: the node hears `report`, our
    /// side closes after the output when `close` says so, and what the peer
    /// still sends is discarded.
    Done { report: Option<Report>, close: bool },
    /// The node hears `report`, and the machine goes on.
    Report(Report),
    /// The peer broke the protocol: reset the stream.
    Failed,
}

/// What a built-in tells the node.
#[derive(Debug)]
pub(super) enum Report {
    /// The peer described itself (answer or push).
    Identified(Box<protocols::identify::Info>),
    /// One of our pings ended.
    PingDone {
        ping: PingId,
        result: Result<Duration, PingFailure>,
    },
    /// The ping stream ended with these pings unanswered.
    PingsFailed(Vec<(PingId, PingFailure)>),
    /// One of our perf runs ended: how long its upload and its download
    /// took, or why it failed.
    Perf {
        perf: PerfId,
        result: Result<(Duration, Duration), PerfFailure>,
    },
    /// A run a peer asked of us ended (done or gone): one fewer served.
    PerfServed,
}

/// What a built-in may ask of the node when it starts.
pub(super) trait Local {
    /// Our identify message for the stream's connection.
    fn identify_info(&self) -> protocols::identify::Info;
    /// Fills `buf` from the node's random number generator.
    fn fill_random(&mut self, buf: &mut [u8]);
}

/// A protocol the node serves to peers that open it.
pub(super) struct Served {
    /// The name negotiated by multistream-select.
    pub(super) protocol: &'static str,
    start: fn(&mut dyn Local) -> Box<dyn Machine>,
}

/// The protocols served on every connection.
const SERVED: [Served; 3] = [identify::ANSWER, identify::PUSH_IN, ping::SERVE];

/// The protocols served only when the node is told to: perf, which the
/// spec says SHOULD NOT be on by default.
const OPT_IN: [Served; 1] = [perf::SERVE];

/// The protocols served, with perf when `perf` says so.
fn served(perf: bool) -> impl Iterator<Item = &'static Served> {
    SERVED.iter().chain(OPT_IN.iter().filter(move |_| perf))
}

/// The names of the protocols the node serves itself (perf when `perf`).
pub(super) fn protocols(perf: bool) -> impl Iterator<Item = &'static str> {
    served(perf).map(|s| s.protocol)
}

/// A fresh machine for an inbound stream that agreed on `protocol`; `None`
/// when it is not a built-in (the application's; perf too unless `perf`).
pub(super) fn inbound(
    protocol: &str,
    perf: bool,
    local: &mut dyn Local,
) -> Option<Box<dyn Machine>> {
    served(perf)
        .find(|s| s.protocol == protocol)
        .map(|s| (s.start)(local))
}

/// A protocol the node runs itself on an outbound stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Builtin {
    /// Ask the peer's identify.
    IdentifyRequest,
    /// Tell the peer our identify changed.
    IdentifyPush,
    /// Measure the round trip.
    Ping(PingId),
    /// Run perf against the peer.
    Perf(PerfId, PerfParams),
}

impl Builtin {
    /// The protocol to propose and the machine that runs it once agreed.
    pub(super) fn start(self, local: &mut dyn Local) -> (&'static str, Box<dyn Machine>) {
        match self {
            Builtin::IdentifyRequest => identify::request(),
            Builtin::IdentifyPush => identify::push(local),
            Builtin::Ping(id) => ping::outbound(id, local),
            Builtin::Perf(id, params) => perf::outbound(id, params),
        }
    }
}
