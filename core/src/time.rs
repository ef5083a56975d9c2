//! Monotonic time as the machines see it.
//!
//! The core never reads a clock. Every input that can depend on time takes a
//! `now: Instant`, and every machine reports the earliest moment it wants to be
//! woken through `poll_timeout() -> Option<Instant>`. An [`Instant`] is a count
//! of nanoseconds since an epoch the adapter chooses (usually the moment it
//! started); only differences between instants from the same epoch mean
//! anything.
//!
//! Arithmetic saturates instead of panicking: a timer set `u64::MAX`
//! nanoseconds (about 584 years) into the future is "never", not a crash.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::time::Instant;
//!
//! let start = Instant::from_millis(1_000);
//! let deadline = start + Duration::from_secs(10);
//! assert_eq!(deadline - start, Duration::from_secs(10));
//! assert_eq!(start - deadline, Duration::ZERO); // saturates, never panics
//! ```

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point on a monotonic clock, in nanoseconds since an adapter-chosen epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);
    /// The last representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// An instant `d` after the epoch (saturating).
    pub fn from_duration(d: Duration) -> Self {
        Instant::ZERO + d
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the epoch.
    pub const fn since_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, or `None` if that is not representable.
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }

    /// `self + d`, clamped to [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::MAX)
    }

    /// `self - d`, clamped to [`Instant::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }

    /// Time elapsed from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({:?})", self.since_epoch())
    }
}

/// A clock for adapters: [`Instant`]s measured from the moment it was created.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    epoch: std::time::Instant,
}

#[cfg(feature = "std")]
impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock {
            epoch: std::time::Instant::now(),
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Instant {
        self.at(std::time::Instant::now())
    }

    /// Converts a std instant to this clock (instants before the epoch map to it).
    pub fn at(&self, t: std::time::Instant) -> Instant {
        Instant::ZERO + t.saturating_duration_since(self.epoch)
    }

    /// The system's wall clock read now, tied to this clock's present: what
    /// the relay client needs to turn a relay's unix expiry into an
    /// [`Instant`] (a clock set before 1970 reads as 1970).
    pub fn wall_clock(&self) -> crate::relay::WallClock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        crate::relay::WallClock::new(self.now(), unix)
    }

    /// Converts an [`Instant`] of this clock back to a std instant.
    pub fn to_std(&self, t: Instant) -> std::time::Instant {
        self.epoch
            .checked_add(t.since_epoch())
            .unwrap_or(self.epoch + Duration::from_secs(1 << 32))
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_millis(5), Instant::from_millis(10));
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t.checked_duration_since(Instant::from_millis(6)), None);
        assert_eq!(t.checked_add(Duration::MAX), None);
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
    }

    #[test]
    fn ordering_follows_nanos() {
        assert!(Instant::from_nanos(1) < Instant::from_nanos(2));
        assert_eq!(
            Instant::from_duration(Duration::from_micros(3)).as_nanos(),
            3_000
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn std_clock_round_trips() {
        let clock = StdClock::new();
        let a = clock.now();
        let b = clock.at(clock.to_std(a + Duration::from_millis(7)));
        assert_eq!(b - a, Duration::from_millis(7));
    }
}
