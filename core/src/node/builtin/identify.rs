//! Identify on a stream: answering a request, reading an answer or a push,
//! pushing ours. Every message is one varint-framed `Identify`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Local, Machine, Report, Served, Step};
use crate::protocols::identify::{self as wire, MAX_READ_LEN};
use crate::time::Instant;
use crate::varint::{self, FrameReader};

/// A peer asks our identify: answer and close.
pub(super) const ANSWER: Served = Served {
    protocol: wire::PROTOCOL,
    start: |local| Box::new(Tell::new(local)),
};

/// A peer pushes its identify: read one message.
pub(super) const PUSH_IN: Served = Served {
    protocol: wire::PUSH_PROTOCOL,
    start: |_| Box::new(Receive::new(false)),
};

/// Asks the peer's identify: our side closes once agreed, the answer is read.
pub(super) fn request() -> (&'static str, Box<dyn Machine>) {
    (wire::PROTOCOL, Box::new(Receive::new(true)))
}

/// Pushes our identify: written once agreed, then our side closes.
pub(super) fn push(local: &mut dyn Local) -> (&'static str, Box<dyn Machine>) {
    (wire::PUSH_PROTOCOL, Box::new(Tell::new(local)))
}

/// Writes our message once agreed, then closes our side.
#[derive(Debug)]
struct Tell {
    framed: Vec<u8>,
}

impl Tell {
    fn new(local: &mut dyn Local) -> Self {
        let body = wire::encode(&local.identify_info());
        let mut framed = Vec::with_capacity(body.len() + 3);
        varint::push_frame(&body, &mut framed);
        Tell { framed }
    }
}

impl Machine for Tell {
    fn on_negotiated(&mut self, _: Instant, out: &mut Vec<u8>) -> Step {
        // Behind the proposal (lazy) or the echo.
        out.append(&mut self.framed);
        Step::Done {
            report: None,
            close: true,
        }
    }
}

/// Reads one message of at most [`MAX_READ_LEN`] bytes.
#[derive(Debug)]
struct Receive {
    frame: FrameReader,
    /// Close our side once agreed (a request has nothing to say).
    close_first: bool,
}

impl Receive {
    fn new(close_first: bool) -> Self {
        Receive {
            frame: FrameReader::default(),
            close_first,
        }
    }
}

impl Machine for Receive {
    fn on_negotiated(&mut self, _: Instant, _: &mut Vec<u8>) -> Step {
        if self.close_first {
            Step::Close
        } else {
            Step::Continue
        }
    }

    fn on_bytes(&mut self, _: Instant, chunk: &[u8], _: &mut Vec<u8>) -> (usize, Step) {
        match self.frame.feed(chunk, MAX_READ_LEN) {
            Ok((n, true)) => {
                let step = match wire::decode(self.frame.body()) {
                    Ok(info) => Step::Done {
                        report: Some(Report::Identified(Box::new(info))),
                        close: false,
                    },
                    Err(_) => Step::Failed,
                };
                (n, step)
            }
            // Incomplete: more may be buffered.
            Ok((n, false)) => (n, Step::Continue),
            Err(_) => (chunk.len(), Step::Failed),
        }
    }

    /// The peer ended before its message did.
    fn on_eof(&mut self, _: Instant) -> Step {
        Step::Failed
    }
}
