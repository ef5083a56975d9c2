//! Session limits and timers.

use core::time::Duration;

use super::error::SessionConfigError;
use super::frame::DEFAULT_WINDOW;

/// Every limit of a [`Session`](super::Session), with the reference defaults
/// (REFERENCE.md, yamux: go-yamux and rust-yamux defaults).
///
/// Memory a peer can make us hold is bounded by this config:
/// received-but-unread bytes by `receive_budget` (the sum of all stream
/// windows), queued outgoing bytes by `max_streams * max_stream_send_buffer`
/// plus a few control frames per limit below, stream state by `max_streams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Streams alive at once, both directions, including inbound streams not
    /// yet accepted and closed ones the application has not finished with.
    /// Inbound SYNs beyond it are answered with RST; `open_stream` fails with
    /// `TooManyStreams`. Default 512 (rust-yamux).
    pub max_streams: usize,
    /// Streams we opened that the peer has not acknowledged yet (a value above
    /// `max_streams` simply never binds, likewise for `accept_backlog`). Beyond it
    /// `open_stream` is refused with `OpenError::AckBacklogFull` (not queued).
    /// Default 256 (spec).
    pub ack_backlog: usize,
    /// Inbound streams waiting for `accept`/`reject`. A SYN beyond it is
    /// answered with RST. Default 256 (go-yamux AcceptBacklog).
    pub accept_backlog: usize,
    /// Receive window of a new stream. Values above 256 KiB are announced in
    /// the SYN/ACK window update. Default 256 KiB (spec).
    pub initial_window: u32,
    /// Auto-tuning grows a stream's receive window up to this. Default 16 MiB
    /// (go-yamux MaxStreamWindowSize).
    pub max_window: u32,
    /// Upper bound on the sum of all stream receive windows, i.e. on the
    /// bytes the peer may have in flight or buffered with us at once.
    /// Default 1 GiB (rust-yamux connection receive window).
    pub receive_budget: u64,
    /// Largest Data frame we accept. Default 1 MiB (rust-yamux).
    pub max_frame_body: u32,
    /// Largest Data frame we send; writes are split into frames of at most
    /// this size so streams interleave fairly. Default 16 KiB (rust-yamux).
    pub split_send_size: u32,
    /// Bytes `write` accepts per stream before it pushes back. Default 256 KiB.
    pub max_stream_send_buffer: usize,
    /// Ping the peer after this long without a pong; `None` disables
    /// keep-alive (the initial RTT ping is still sent). Default 30 s (go-yamux).
    pub keepalive_interval: Option<Duration>,
    /// Close the session when nothing at all arrived for this long after a
    /// ping went out. Default 10 s (go-yamux ConnectionWriteTimeout).
    pub ping_timeout: Duration,
    /// Pongs waiting to be transmitted; at the limit `handle_read` stops
    /// consuming until `poll_transmit` drains them. Default 64.
    pub max_queued_pongs: usize,
    /// RSTs refusing the peer's SYNs (backlog or stream limit, after our
    /// GoAway) waiting to be transmitted; at the limit `handle_read` stops
    /// consuming. RSTs of `reset`/`reject` are not counted. Default 256.
    pub max_queued_resets: usize,
    /// Application pings (`Session::ping`) awaiting their pong. Default 16.
    pub max_outstanding_pings: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_streams: 512,
            ack_backlog: 256,
            accept_backlog: 256,
            initial_window: DEFAULT_WINDOW,
            max_window: 16 * 1024 * 1024,
            receive_budget: 1024 * 1024 * 1024,
            max_frame_body: 1024 * 1024,
            split_send_size: 16 * 1024,
            max_stream_send_buffer: 256 * 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            max_queued_pongs: 64,
            max_queued_resets: 256,
            max_outstanding_pings: 16,
        }
    }
}

impl Config {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        let nonzero = [
            ("max_streams", self.max_streams),
            ("ack_backlog", self.ack_backlog),
            ("accept_backlog", self.accept_backlog),
            ("split_send_size", self.split_send_size as usize),
            ("max_stream_send_buffer", self.max_stream_send_buffer),
            ("max_queued_pongs", self.max_queued_pongs),
            ("max_queued_resets", self.max_queued_resets),
            ("max_outstanding_pings", self.max_outstanding_pings),
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return Err(SessionConfigError::Zero(name));
            }
        }
        if self.initial_window < DEFAULT_WINDOW {
            return Err(SessionConfigError::InitialWindowTooSmall(
                self.initial_window,
            ));
        }
        if self.max_window < self.initial_window {
            return Err(SessionConfigError::MaxWindowBelowInitial {
                max: self.max_window,
                initial: self.initial_window,
            });
        }
        let needed = u64::from(self.initial_window).saturating_mul(self.max_streams as u64);
        if self.receive_budget < needed {
            return Err(SessionConfigError::BudgetTooSmall {
                budget: self.receive_budget,
                needed,
            });
        }
        if self.max_frame_body < 16 * 1024 {
            return Err(SessionConfigError::FrameBodyTooSmall(self.max_frame_body));
        }
        if self.split_send_size > self.max_frame_body {
            return Err(SessionConfigError::SplitAboveFrameBody {
                split: self.split_send_size,
                max_body: self.max_frame_body,
            });
        }
        if self.keepalive_interval == Some(Duration::ZERO) {
            return Err(SessionConfigError::ZeroKeepAlive);
        }
        if self.ping_timeout.is_zero() {
            return Err(SessionConfigError::ZeroPingTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(
            bad(|c| c.max_streams = 0),
            SessionConfigError::Zero("max_streams")
        );
        assert_eq!(
            bad(|c| c.split_send_size = 0),
            SessionConfigError::Zero("split_send_size")
        );
        assert_eq!(
            bad(|c| c.initial_window = 1000),
            SessionConfigError::InitialWindowTooSmall(1000)
        );
        assert!(matches!(
            bad(|c| c.max_window = DEFAULT_WINDOW + 1 - 2),
            SessionConfigError::MaxWindowBelowInitial { .. }
        ));
        assert!(matches!(
            bad(|c| c.receive_budget = 1),
            SessionConfigError::BudgetTooSmall { .. }
        ));
        assert!(matches!(
            bad(|c| c.split_send_size = 2 << 20),
            SessionConfigError::SplitAboveFrameBody { .. }
        ));
        assert_eq!(
            bad(|c| c.max_frame_body = 100),
            SessionConfigError::FrameBodyTooSmall(100)
        );
        assert_eq!(
            bad(|c| c.keepalive_interval = Some(Duration::ZERO)),
            SessionConfigError::ZeroKeepAlive
        );
        assert_eq!(
            bad(|c| c.ping_timeout = Duration::ZERO),
            SessionConfigError::ZeroPingTimeout
        );
    }
}
