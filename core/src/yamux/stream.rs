//! Per-stream state kept by the session.

use super::buffer::ByteQueue;

use super::flow::RecvWindow;
use super::frame::{Handshake, Header, StreamFlags, StreamId};

/// Where the opening handshake of a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// Outbound; the SYN has not been transmitted yet.
    SynQueued,
    /// Outbound; SYN transmitted, no answer yet.
    SynSent,
    /// Inbound; waiting for the application's `accept`/`reject`.
    Pending,
    /// Inbound and accepted; the ACK has not been transmitted yet.
    AckQueued,
    /// Both sides know the stream.
    Established,
}

/// Our sending direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Send {
    /// Writable.
    Open,
    /// `close` was called; FIN goes out after the queued data.
    FinQueued,
    /// FIN transmitted.
    FinSent,
    /// The peer reset the stream.
    Reset,
}

/// The peer's sending direction, i.e. what we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// More data may come.
    Open,
    /// FIN received; the buffer holds the last bytes.
    Fin,
    /// RST received; the buffer was discarded.
    Reset,
}

/// One stream. About 120 bytes plus its two buffers, which stay unallocated
/// until data flows.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Written by the application, not yet transmitted.
    pub send_buf: ByteQueue,
    /// Received, not yet read by the application.
    pub recv_buf: ByteQueue,
    /// Our receive window.
    pub window: RecvWindow,
    /// Bytes the peer allows us to send.
    pub send_credit: u32,
    /// Window increment granted but not yet transmitted.
    pub wu_pending: u32,
    /// Error code of a received RST (0 when none).
    pub reset_code: u32,
    pub open: Open,
    pub send: Send,
    pub recv: Recv,
    /// Counted in the session's ACK backlog.
    pub in_ack_backlog: bool,
    /// Present in the session's stream-control queue.
    pub in_ctrl_q: bool,
    /// Present in the session's data queue.
    pub in_data_q: bool,
    /// Emit `StreamReadable` at the next arrival (the last read found nothing).
    pub notify_read: bool,
    /// Emit `StreamWritable` when the send buffer drains (a write was short).
    pub notify_write: bool,
    /// The application has seen the end of the read side (EOF or reset).
    pub end_seen: bool,
}

impl Stream {
    pub fn new(open: Open, window: RecvWindow, send_credit: u32, wu_pending: u32) -> Self {
        Stream {
            send_buf: ByteQueue::default(),
            recv_buf: ByteQueue::default(),
            window,
            send_credit,
            wu_pending,
            reset_code: 0,
            open,
            send: Send::Open,
            recv: Recv::Open,
            in_ack_backlog: false,
            in_ctrl_q: false,
            in_data_q: false,
            notify_read: open != Open::Pending,
            notify_write: false,
            end_seen: false,
        }
    }

    /// Whether a stream-control frame (SYN, ACK, window update, bare FIN) is due.
    pub fn needs_ctrl(&self) -> bool {
        match self.open {
            Open::Pending => false,
            Open::SynQueued | Open::AckQueued => true,
            Open::SynSent | Open::Established => {
                (self.wu_pending > 0 && self.recv == Recv::Open)
                    || (self.send == Send::FinQueued && self.send_buf.is_empty())
            }
        }
    }

    /// Whether a Data frame can go out now.
    pub fn sendable(&self) -> bool {
        !self.send_buf.is_empty()
            && self.send_credit > 0
            && matches!(self.send, Send::Open | Send::FinQueued)
            && matches!(self.open, Open::SynSent | Open::Established)
    }

    /// Takes the pending stream-control frame, if any, updating state as if
    /// it was transmitted.
    pub fn take_ctrl(&mut self, id: StreamId) -> Option<Header> {
        let handshake = match self.open {
            Open::Pending => return None,
            Open::SynQueued => {
                self.open = Open::SynSent;
                Handshake::Syn
            }
            Open::AckQueued => {
                self.open = Open::Established;
                Handshake::Ack
            }
            Open::SynSent | Open::Established => Handshake::None,
        };
        let fin = self.send == Send::FinQueued && self.send_buf.is_empty();
        if fin {
            self.send = Send::FinSent;
        }
        let delta = if self.recv == Recv::Open {
            self.wu_pending
        } else {
            0
        };
        self.wu_pending = 0;
        if handshake == Handshake::None && !fin && delta == 0 {
            return None;
        }
        Some(Header::WindowUpdate {
            stream: id,
            flags: StreamFlags {
                handshake,
                fin,
                rst: false,
            },
            delta,
        })
    }

    /// Whether both directions are finished and the application has seen the
    /// end of the read side, so the stream can be freed.
    pub fn finished(&self) -> bool {
        let send_done = matches!(self.send, Send::FinSent | Send::Reset);
        let recv_done = self.recv != Recv::Open && self.end_seen;
        send_done && recv_done && (self.open != Open::Pending || self.recv == Recv::Reset)
    }
}
