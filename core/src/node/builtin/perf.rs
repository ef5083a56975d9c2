//! Perf on a stream (see [`crate::protocols::perf`]): our runs (the
//! request, the upload, our close, the download counted to the server's
//! close) and the runs peers ask of us (the request read, the upload
//! discarded to the client's close, the download, our close).
//!
//! Neither side makes its bytes ahead of the stream: they are produced a
//! [`CHUNK`] at a time when the stream took everything before
//! ([`Machine::on_writable`]), so a run of any size holds at most one chunk
//! here and yamux's bounded send buffer below, and nothing is allocated by
//! the size a peer asks for. What is read is counted and dropped.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::time::Duration;

use super::{Machine, Report, Served, Step};
use crate::node::{PerfFailure, PerfId, PerfParams};
use crate::protocols::perf::{decode_header, encode_header, HEADER_LEN, PROTOCOL};
use crate::time::Instant;

/// Bytes made per fill of the stream, upload and download alike: the most
/// a perf stream holds of its own on top of yamux's send buffer. yamux's
/// frame size (`split_send_size`, 16 KiB by default).
pub(in crate::node) const CHUNK: usize = 16 * 1024;

/// A peer asks us for a run (only offered when serving is on).
pub(super) const SERVE: Served = Served {
    protocol: PROTOCOL,
    start: |_| Box::new(Serve::default()),
};

/// Our run `perf`: the request goes out once agreed (behind a lazy
/// proposal, at once), the upload once the peer confirmed the protocol.
pub(super) fn outbound(perf: PerfId, params: PerfParams) -> (&'static str, Box<dyn Machine>) {
    let client = Client {
        perf,
        download: params.download,
        upload: params.upload,
        to_upload: params.upload,
        received: 0,
        phase: Phase::Opening,
        failure: None,
    };
    (PROTOCOL, Box::new(client))
}

/// Appends up to a chunk of the `remaining` bytes (zeros) to `out`.
fn produce(remaining: &mut u64, out: &mut Vec<u8>) {
    // At most CHUNK, so the cast cannot truncate.
    let n = (*remaining).min(CHUNK as u64) as usize;
    out.resize(out.len() + n, 0);
    *remaining -= n as u64;
}

/// Our side of one run.
#[derive(Debug)]
struct Client {
    perf: PerfId,
    /// Bytes asked of the server.
    download: u64,
    /// Bytes to upload in all.
    upload: u64,
    /// Upload bytes not produced yet.
    to_upload: u64,
    /// Download bytes read so far.
    received: u64,
    phase: Phase,
    /// Why the machine failed the stream, for [`Machine::on_gone`].
    failure: Option<PerfFailure>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The protocol is not agreed yet.
    Opening,
    /// The request is written; the upload runs from the first fill
    /// (`started`) to the last.
    Uploading { started: Option<Instant> },
    /// The upload is handed over and our side closes; the server's bytes
    /// are counted since `since`.
    Downloading { upload: Duration, since: Instant },
}

impl Client {
    /// Fails the stream (a reset) with `failure` as the run's outcome.
    fn fail(&mut self, failure: PerfFailure) -> Step {
        self.failure = Some(failure);
        Step::Failed
    }
}

impl Machine for Client {
    fn on_negotiated(&mut self, _: Instant, out: &mut Vec<u8>) -> Step {
        out.extend_from_slice(&encode_header(self.download));
        self.phase = Phase::Uploading { started: None };
        Step::Continue
    }

    fn on_writable(&mut self, now: Instant, out: &mut Vec<u8>) -> Step {
        let Phase::Uploading { started } = &mut self.phase else {
            return Step::Continue;
        };
        let started = *started.get_or_insert(now);
        if self.to_upload > 0 {
            produce(&mut self.to_upload, out);
            return Step::Continue;
        }
        // Everything, the request first, is with the stream: close our side.
        self.phase = Phase::Downloading {
            upload: now.saturating_duration_since(started),
            since: now,
        };
        Step::Close
    }

    fn on_bytes(&mut self, _: Instant, chunk: &[u8], _: &mut Vec<u8>) -> (usize, Step) {
        let n = chunk.len();
        if !matches!(self.phase, Phase::Downloading { .. }) {
            // The server must read to our close before it answers.
            return (n, self.fail(PerfFailure::AnsweredEarly));
        }
        match self.received.checked_add(n as u64) {
            Some(total) if total <= self.download => {
                self.received = total;
                (n, Step::Continue)
            }
            _ => {
                let failure = PerfFailure::TooMuchData {
                    requested: self.download,
                };
                (n, self.fail(failure))
            }
        }
    }

    fn on_eof(&mut self, now: Instant) -> Step {
        let Phase::Downloading { upload, since } = self.phase else {
            return self.fail(PerfFailure::AnsweredEarly);
        };
        let result = if self.received == self.download {
            Ok((upload, now.saturating_duration_since(since)))
        } else {
            Err(PerfFailure::TooLittleData {
                requested: self.download,
                received: self.received,
            })
        };
        Step::Done {
            report: Some(Report::Perf {
                perf: self.perf,
                result,
            }),
            close: true,
        }
    }

    fn perf_moved(&self) -> Option<(u64, u64)> {
        Some((self.upload - self.to_upload, self.received))
    }

    fn on_gone(self: Box<Self>) -> Option<Report> {
        // The upload starts once the peer confirmed the protocol (a lazy
        // proposal has the request written before that).
        let error = self.failure.unwrap_or(match self.phase {
            Phase::Opening | Phase::Uploading { started: None } => PerfFailure::Unsupported,
            _ => PerfFailure::Stream,
        });
        Some(Report::Perf {
            perf: self.perf,
            result: Err(error),
        })
    }
}

/// A run a peer asked of us.
#[derive(Debug, Default)]
struct Serve {
    /// The request, `got` bytes of it so far.
    header: [u8; HEADER_LEN],
    got: usize,
    /// Once the client closed its side: the bytes still to send.
    sending: Option<u64>,
}

impl Machine for Serve {
    fn on_bytes(&mut self, _: Instant, chunk: &[u8], _: &mut Vec<u8>) -> (usize, Step) {
        let n = (HEADER_LEN - self.got).min(chunk.len());
        self.header[self.got..self.got + n].copy_from_slice(&chunk[..n]);
        self.got += n;
        // The upload after the request is read and dropped.
        (chunk.len(), Step::Continue)
    }

    /// The client is done uploading: the answer starts. Called again on
    /// later pumps while it is written; a repeat changes nothing.
    fn on_eof(&mut self, _: Instant) -> Step {
        if self.got < HEADER_LEN {
            // Closed before its request was whole.
            return Step::Failed;
        }
        self.sending.get_or_insert(decode_header(self.header));
        Step::Continue
    }

    fn on_writable(&mut self, _: Instant, out: &mut Vec<u8>) -> Step {
        let Some(remaining) = &mut self.sending else {
            // Not before the client's close (the spec forbids overlapping).
            return Step::Continue;
        };
        produce(remaining, out);
        if *remaining > 0 {
            return Step::Continue;
        }
        Step::Done {
            report: Some(Report::PerfServed),
            close: true,
        }
    }

    fn on_gone(self: Box<Self>) -> Option<Report> {
        Some(Report::PerfServed)
    }
}
