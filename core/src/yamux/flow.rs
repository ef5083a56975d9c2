//! Receive-window accounting and auto-tuning for one stream.
//!
//! # Accounting
//!
//! For a stream whose receive side is open, at all times
//!
//! ```text
//! credit + buffered + unacked == max
//! ```
//!
//! where `max` is the window we have granted in total, `credit` what the peer
//! may still send, `buffered` the bytes received and not yet read by the
//! application, and `unacked` the bytes the application has read that we have
//! not granted back yet. A Data frame moves bytes from `credit` to `buffered`,
//! a read from `buffered` to `unacked`, a window update from `unacked` (plus
//! any growth of `max`) back to `credit`.
//!
//! # When to send a window update
//!
//! Only once `unacked >= max / 2`: one update per half window keeps the
//! number of control frames proportional to the data, while the peer never
//! sees less than half a window of credit when the application keeps up.
//!
//! # Auto-tuning (growing `max`)
//!
//! A window smaller than the bandwidth-delay product caps throughput at
//! `max / rtt`. We measure, between two consecutive window updates (an
//! *epoch*), the rate at which the application consumed data, and double
//! `max` when that rate is at least a quarter of what the window can carry
//! per round trip:
//!
//! ```text
//! consumed_in_epoch / elapsed >= max / (4 * rtt)
//! <=> consumed_in_epoch * 4 * rtt >= max * elapsed
//! ```
//!
//! Equivalently: we grow while the window is below four bandwidth-delay
//! products of the observed rate. When the window is the bottleneck the peer
//! delivers about `max` bytes per `rtt`, the epoch between half-window
//! updates lasts about `rtt / 2`, and the test passes with a factor of 4 to
//! spare whatever the window size; it stops passing only once the window is
//! four times what the observed rate needs, i.e. no longer the limit.
//!
//! Why a rate and not a fixed time: go-yamux compares the time since the last
//! update with a fixed `4 * rtt`, and go-yamux#136 reports it self-blocking
//! near twice the initial window on real paths (the issue attributes it to
//! the interval growing with the window while the threshold does not). A
//! rate scales with the window by construction, and the epoch is restarted
//! at every update so one slow interval does not poison the next. The pair
//! tests check that a long bandwidth-limited link gets filled and that a
//! window-limited one reaches the cap. The window never shrinks.
//!
//! Growth is also bounded by `Config::max_window` and by what is left of the
//! session's `receive_budget` (the sum of all stream windows), so a peer
//! cannot make the total buffered data grow past the budget however many
//! streams it uses. No RTT sample yet means no growth; the session sends its
//! first ping as soon as it starts, and pings go out ahead of all data so
//! queued data does not inflate the sample (rust-libp2p#5387).

use core::time::Duration;

use crate::time::Instant;

/// What a window update should carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Total increment to announce.
    pub delta: u32,
    /// Part of `delta` that is new window (growth of `max`).
    pub growth: u32,
}

/// Receive-side flow control of one stream.
#[derive(Debug, Clone)]
pub(crate) struct RecvWindow {
    /// Total window granted (grows, never shrinks).
    pub max: u32,
    /// Bytes the peer may still send.
    pub credit: u32,
    /// Bytes read by the application and not yet granted back.
    pub unacked: u32,
    /// Start of the current measurement epoch (the last window update).
    epoch_start: Instant,
    /// Bytes the application consumed since `epoch_start`.
    epoch_consumed: u64,
}

impl RecvWindow {
    /// A window of `initial` bytes, all of it credit.
    pub fn new(initial: u32, now: Instant) -> Self {
        RecvWindow {
            max: initial,
            credit: initial,
            unacked: 0,
            epoch_start: now,
            epoch_consumed: 0,
        }
    }

    /// Accounts `len` received bytes; `false` (and no change) if they exceed the credit.
    pub fn on_data(&mut self, len: u32) -> bool {
        match self.credit.checked_sub(len) {
            Some(c) => {
                self.credit = c;
                true
            }
            None => false,
        }
    }

    /// Accounts `n` bytes read by the application and decides whether a
    /// window update is due. `rtt` is the session's smoothed RTT, `cap` the
    /// largest window allowed, `budget_left` what the session budget still
    /// allows this stream to grow by.
    pub fn on_consumed(
        &mut self,
        n: u32,
        now: Instant,
        rtt: Option<Duration>,
        cap: u32,
        budget_left: u64,
    ) -> Option<Grant> {
        self.unacked = self.unacked.saturating_add(n);
        self.epoch_consumed = self.epoch_consumed.saturating_add(u64::from(n));
        if self.unacked < self.max / 2 {
            return None;
        }
        let mut growth = 0;
        if let Some(rtt) = rtt {
            let elapsed = now.saturating_duration_since(self.epoch_start);
            let lhs = u128::from(self.epoch_consumed) * 4 * rtt.as_nanos();
            let rhs = u128::from(self.max) * elapsed.as_nanos();
            if lhs >= rhs {
                let room = u64::from(cap.saturating_sub(self.max)).min(budget_left);
                growth = u32::try_from(room.min(u64::from(self.max))).unwrap_or(0);
            }
        }
        self.max += growth;
        let delta = self.unacked + growth;
        self.credit += delta;
        self.unacked = 0;
        self.epoch_start = now;
        self.epoch_consumed = 0;
        Some(Grant { delta, growth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 256 * 1024;
    const CAP: u32 = 16 * 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn update_only_after_half_window() {
        let mut w = RecvWindow::new(W, Instant::ZERO);
        assert!(w.on_data(W));
        assert!(!w.on_data(1));
        assert_eq!(
            w.on_consumed(W / 2 - 1, Instant::ZERO, None, CAP, u64::MAX),
            None
        );
        let g = w
            .on_consumed(1, Instant::ZERO, None, CAP, u64::MAX)
            .unwrap();
        assert_eq!(
            g,
            Grant {
                delta: W / 2,
                growth: 0
            }
        );
        assert_eq!(w.credit, W / 2);
        assert_eq!(w.max, W);
    }

    #[test]
    fn grows_when_window_limited_and_stops_at_cap() {
        // Window-limited flow: half a window is consumed every rtt/2.
        let rtt = ms(100);
        let mut w = RecvWindow::new(W, Instant::ZERO);
        let mut now = Instant::ZERO;
        for _ in 0..20 {
            now += rtt / 2;
            let half = w.max / 2;
            w.on_data(half);
            w.on_consumed(half, now, Some(rtt), CAP, u64::MAX).unwrap();
        }
        assert_eq!(w.max, CAP);
    }

    #[test]
    fn does_not_stall_near_twice_initial_on_bandwidth_limited_path() {
        // go-yamux#136 shape: 50 ms RTT, a path that delivers 80 Mbit/s
        // (BDP 500 KB). The window must grow past 2 BDP, not stop at 512 KiB.
        let rtt = ms(50);
        let rate = 10_000_000u64; // bytes per second
        let mut w = RecvWindow::new(W, Instant::ZERO);
        let mut now = Instant::ZERO;
        for _ in 0..50 {
            let half = w.max / 2;
            now += Duration::from_nanos(u64::from(half) * 1_000_000_000 / rate);
            w.on_data(half);
            w.on_consumed(half, now, Some(rtt), CAP, u64::MAX).unwrap();
        }
        let bdp = rate * 50 / 1000;
        assert!(u64::from(w.max) >= 2 * bdp, "max {} bdp {}", w.max, bdp);
        assert!(u64::from(w.max) <= 8 * bdp, "grew far past need: {}", w.max);
    }

    #[test]
    fn slow_reader_does_not_grow() {
        let rtt = ms(10);
        let mut w = RecvWindow::new(W, Instant::ZERO);
        let mut now = Instant::ZERO;
        for _ in 0..10 {
            now += Duration::from_secs(1);
            w.on_data(W / 2);
            w.on_consumed(W / 2, now, Some(rtt), CAP, u64::MAX).unwrap();
        }
        assert_eq!(w.max, W);
    }

    #[test]
    fn growth_respects_budget() {
        let mut w = RecvWindow::new(W, Instant::ZERO);
        w.on_data(W / 2);
        let g = w
            .on_consumed(W / 2, Instant::ZERO, Some(ms(1)), CAP, 1000)
            .unwrap();
        assert_eq!(g.growth, 1000);
        assert_eq!(w.max, W + 1000);
        assert_eq!(w.credit + w.unacked, w.max);
    }
}
