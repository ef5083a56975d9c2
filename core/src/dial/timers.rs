//! Deadlines of the [`Dialer`](super::Dialer), with lazy deletion.
//!
//! Most deadlines are `now + a fixed timeout` (the request timeout, the two
//! attempt timeouts), and inputs arrive in time order, so each fixed timeout
//! gets a FIFO that stays sorted by itself: pushing and popping cost O(1)
//! and touch memory in order. A deadline that would break a FIFO's order (a
//! custom timeout, an input with an earlier `now` than the last one) and
//! every other deadline go to a binary heap.
//!
//! Entries are never removed early: the owner decides on pop whether an
//! entry still counts ([`Deadlines::pop_due`] and [`Deadlines::clean`] take
//! a predicate). An entry lives at most until its own deadline, so stale
//! entries are bounded by the rate of pushes times the longest timeout; the
//! heap is also compacted when stale entries outnumber live ones.

use alloc::collections::{BinaryHeap, VecDeque};
use core::cmp::Reverse;
use core::time::Duration;

use smallvec::SmallVec;

use crate::time::Instant;

/// How many distinct fixed timeouts get a FIFO of their own.
const MAX_FIFOS: usize = 4;
/// Smallest heap worth compacting.
const MIN_COMPACT: usize = 64;

/// The deadlines of one fixed timeout, in order.
type Fifo<K> = (Duration, VecDeque<(Instant, K)>);

#[derive(Debug, Clone)]
pub(crate) struct Deadlines<K> {
    fifos: SmallVec<[Fifo<K>; MAX_FIFOS]>,
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// The heap is scanned for stale entries when it grows past this.
    compact_at: usize,
}

/// Where the earliest entry sits.
#[derive(Clone, Copy)]
enum Source {
    Fifo(usize),
    Heap,
}

impl<K: Copy + Ord> Deadlines<K> {
    pub(crate) fn new() -> Self {
        Deadlines {
            fifos: SmallVec::new(),
            heap: BinaryHeap::new(),
            compact_at: MIN_COMPACT,
        }
    }

    /// Adds `key` due at `now + timeout`; returns that instant.
    pub(crate) fn push_after(&mut self, now: Instant, timeout: Duration, key: K) -> Instant {
        let at = now + timeout;
        let slot = match self.fifos.iter().position(|(d, _)| *d == timeout) {
            Some(i) => Some(i),
            None if self.fifos.len() < MAX_FIFOS => {
                self.fifos.push((timeout, VecDeque::new()));
                Some(self.fifos.len() - 1)
            }
            None => None,
        };
        match slot {
            Some(i) if self.fifos[i].1.back().is_none_or(|&(last, _)| last <= at) => {
                self.fifos[i].1.push_back((at, key));
            }
            _ => self.heap.push(Reverse((at, key))),
        }
        at
    }

    /// Adds `key` due at `at`.
    pub(crate) fn push_at(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry, stale or not.
    pub(crate) fn peek(&self) -> Option<(Instant, K)> {
        self.earliest().map(|(e, _)| e)
    }

    fn earliest(&self) -> Option<((Instant, K), Source)> {
        let mut best = self.heap.peek().map(|&Reverse(e)| (e, Source::Heap));
        for (i, (_, q)) in self.fifos.iter().enumerate() {
            if let Some(&e) = q.front() {
                if best.is_none_or(|(b, _)| e.0 < b.0) {
                    best = Some((e, Source::Fifo(i)));
                }
            }
        }
        best
    }

    /// The earliest deadline, stale or not; exact after [`Deadlines::clean`].
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.peek().map(|(at, _)| at)
    }

    /// Removes and returns the earliest entry due at `now` for which `live`
    /// holds, dropping stale ones on the way.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        mut live: impl FnMut(Instant, K) -> bool,
    ) -> Option<(Instant, K)> {
        loop {
            let ((at, key), source) = self.earliest()?;
            if at > now {
                return None;
            }
            match source {
                Source::Fifo(i) => {
                    self.fifos[i].1.pop_front();
                }
                Source::Heap => {
                    self.heap.pop();
                }
            }
            if live(at, key) {
                return Some((at, key));
            }
        }
    }

    /// Drops stale entries from the front of every queue, so that
    /// [`Deadlines::next_deadline`] is a live one. When the heap has doubled
    /// since it was last scanned, its stale entries are dropped too
    /// (amortized O(1) per push).
    pub(crate) fn clean(&mut self, mut live: impl FnMut(Instant, K) -> bool) {
        for (_, q) in &mut self.fifos {
            while let Some(&(at, key)) = q.front() {
                if live(at, key) {
                    break;
                }
                q.pop_front();
            }
        }
        if self.heap.len() >= self.compact_at {
            self.heap.retain(|&Reverse((at, key))| live(at, key));
            self.compact_at = (self.heap.len() * 2).max(MIN_COMPACT);
        }
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if live(at, key) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn t(ms: u64) -> Instant {
        Instant::ZERO + MS(ms)
    }

    fn drain(d: &mut Deadlines<u32>, now: Instant) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while let Some((at, k)) = d.pop_due(now, |_, _| true) {
            out.push(((at - Instant::ZERO).as_millis() as u64, k));
        }
        out
    }

    #[test]
    fn mixed_timeouts_and_out_of_order_inputs_pop_in_deadline_order() {
        let mut d = Deadlines::new();
        // Five fixed timeouts (one more than get a FIFO), an input whose
        // `now` goes backwards, and absolute deadlines.
        let mut want = Vec::new();
        let mut key = 0;
        for (now, timeout) in [
            (0, 60_000),
            (1, 15_000),
            (2, 5_000),
            (3, 60_000),
            (4, 1_000),
            (5, 2_000),
            (1, 5_000), // earlier `now` than the last push into this FIFO
            (6, 15_000),
        ] {
            let at = d.push_after(t(now), MS(timeout), key);
            assert_eq!(at, t(now + timeout));
            want.push((now + timeout, key));
            key += 1;
        }
        for at in [7, 3_000, 70_000] {
            d.push_at(t(at), key);
            want.push((at, key));
            key += 1;
        }
        want.sort();
        assert_eq!(d.next_deadline(), Some(t(7)));
        let early = want.iter().filter(|(at, _)| *at <= 3_000).count();
        assert_eq!(early, 4);
        assert_eq!(drain(&mut d, t(3_000)), want[..early].to_vec());
        assert_eq!(drain(&mut d, t(100_000)), want[early..].to_vec());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn stale_entries_are_skipped_and_cleaned() {
        let mut d = Deadlines::new();
        for k in 0..10u32 {
            d.push_after(t(u64::from(k)), MS(100), k);
            d.push_at(t(50 + u64::from(k)), 100 + k);
        }
        let live = |_: Instant, k: u32| k % 2 == 1;
        d.clean(live);
        assert_eq!(d.next_deadline(), Some(t(51)), "stale fronts dropped");
        let mut got = Vec::new();
        while let Some((_, k)) = d.pop_due(t(1_000), live) {
            got.push(k);
        }
        assert_eq!(got, [101, 103, 105, 107, 109, 1, 3, 5, 7, 9]);
    }

    #[test]
    fn the_heap_is_compacted_once_it_doubles() {
        let mut d = Deadlines::new();
        // Every entry but the newest is stale: the heap must not keep them.
        for k in 0..10_000u32 {
            d.push_at(t(1_000_000 - u64::from(k)), k);
            d.clean(|_, key| key == k);
            assert!(d.heap.len() <= 2 * MIN_COMPACT, "{}", d.heap.len());
        }
        assert_eq!(
            d.pop_due(t(u64::MAX / 2_000_000), |_, _| true).map(|e| e.1),
            Some(9_999)
        );
    }
}
