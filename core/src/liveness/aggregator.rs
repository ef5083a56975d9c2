//! The receiving side of `fil/heartbeat/1.0.0`: every inbound stream is
//! decoded incrementally, one JSON object per line, with bounds on the
//! line length and on the streams of one peer and of all peers.
//!
//! A malformed or overlong line is a typed [`DecodeError`]: the caller
//! resets that stream and the others go on. Each heartbeat becomes an
//! [`Event::Beat`]; the node turns it into a metric for its
//! [`PeerMonitor`](super::monitor::PeerMonitor) too
//! ([`Node::serve_heartbeat`](crate::node::Node::serve_heartbeat)).
//!
//! Like Go's `json.Decoder` reading go-filecoin's beats, a line may hold
//! several objects separated by whitespace, and blank lines are skipped;
//! an object must not span lines (go-filecoin's encoder never does that).
//!
//! ```
//! use sansp2p::liveness::aggregator::{Aggregator, AggregatorConfig, Event};
//! use sansp2p::time::Instant;
//! use sansp2p::Keypair;
//!
//! let peer = Keypair::from_secret_bytes([2; 32]).public().to_peer_id();
//! let mut agg = Aggregator::new(AggregatorConfig::default());
//! let now = Instant::from_nanos(0);
//! agg.handle_stream_opened(7u32, peer).unwrap();
//! agg.handle_bytes(now, 7, b"{\"Height\":1}\n{\"Hei").unwrap();
//! agg.handle_bytes(now, 7, b"ght\":2}\n").unwrap();
//! let heights: Vec<u64> = core::iter::from_fn(|| agg.poll_event())
//!     .filter_map(|e| match e {
//!         Event::Beat { heartbeat, .. } => Some(heartbeat.height),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(heights, [1, 2]);
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use super::heartbeat::Heartbeat;
use crate::identity::PeerId;
use crate::time::Instant;

/// Why a line could not be read. The stream it came on is forgotten; reset
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line grew past `max_line` bytes without ending.
    #[error("a heartbeat line is longer than {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
    /// A line is not a heartbeat: not JSON, not an object, or a field of
    /// the wrong type.
    #[error("malformed heartbeat at column {column} of its line")]
    Malformed {
        /// Where in the line (1-based).
        column: usize,
    },
    /// The stream is not one the aggregator was told about.
    #[error("unknown heartbeat stream")]
    UnknownStream,
}

/// Splits a byte stream into lines of at most `max` bytes and decodes
/// each into heartbeats.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    partial: Vec<u8>,
    max: usize,
}

impl LineDecoder {
    /// A decoder whose lines may be up to `max` bytes (without the `\n`).
    pub fn new(max: usize) -> LineDecoder {
        LineDecoder {
            partial: Vec::new(),
            max,
        }
    }

    /// The bytes of an unfinished line held.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Decodes what `chunk` completes into `out`, keeping at most `room`
    /// heartbeats there; returns how many more were valid and dropped (a
    /// peer that sends many tiny heartbeats at once gets no more memory
    /// than one that sends one). On an error the decoder must not be used
    /// again.
    pub fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<Heartbeat>,
        room: usize,
    ) -> Result<u64, DecodeError> {
        let mut sink = Sink {
            out,
            room,
            dropped: 0,
        };
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.check_len(line.len())?;
                decode_line(line, &mut sink)?;
            } else {
                self.check_len(self.partial.len() + line.len())?;
                self.partial.extend_from_slice(line);
                let whole = core::mem::take(&mut self.partial);
                decode_line(&whole, &mut sink)?;
            }
        }
        self.check_len(self.partial.len() + rest.len())?;
        self.partial.extend_from_slice(rest);
        Ok(sink.dropped)
    }

    fn check_len(&self, len: usize) -> Result<(), DecodeError> {
        if len > self.max {
            Err(DecodeError::LineTooLong { max: self.max })
        } else {
            Ok(())
        }
    }
}

/// Where decoded heartbeats go: kept while there is room, counted after.
struct Sink<'a> {
    out: &'a mut Vec<Heartbeat>,
    room: usize,
    dropped: u64,
}

/// Every heartbeat on one line (none on a blank one); Go's decoder, like
/// this one, takes several values on a line.
fn decode_line(line: &[u8], sink: &mut Sink<'_>) -> Result<(), DecodeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    for value in serde_json::Deserializer::from_slice(line).into_iter::<Heartbeat>() {
        match value {
            Ok(hb) if sink.out.len() < sink.room => sink.out.push(hb),
            Ok(_) => sink.dropped += 1,
            Err(e) => return Err(DecodeError::Malformed { column: e.column() }),
        }
    }
    Ok(())
}

/// The aggregator's bounds and the metric its heartbeats become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// The longest line: 64 KiB.
    pub max_line: usize,
    /// Streams one peer may hold open at once: 4 (a beater needs one; a
    /// second target on the same aggregator, another).
    pub max_streams_per_peer: usize,
    /// Streams of all peers at once: 4096.
    pub max_streams: usize,
    /// The name of the metric each heartbeat becomes: `heartbeat`.
    pub metric_name: &'static str,
    /// How long a heartbeat counts as fresh, from its receipt: 10 s, three
    /// of go-filecoin's 3 s periods and a second of slack.
    pub metric_ttl: Duration,
    /// Beats of one stream waiting in the event queue (not yet polled):
    /// at most 16; more that arrive meanwhile are dropped and counted
    /// ([`Aggregator::beats_dropped`]). A beater sends one per period, so
    /// only a flood reaches it, and every beat kept says the peer is alive
    /// (0 drops them all).
    pub max_pending_beats: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            max_line: 64 * 1024,
            max_streams_per_peer: 4,
            max_streams: 4096,
            metric_name: "heartbeat",
            metric_ttl: Duration::from_secs(10),
            max_pending_beats: 16,
        }
    }
}

impl AggregatorConfig {
    /// A TTL for beaters with `period`: three periods and a second.
    pub fn ttl_for_period(period: Duration) -> Duration {
        period.saturating_mul(3) + Duration::from_secs(1)
    }
}

/// Why a new stream was refused (reset it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamRefused {
    /// The peer holds `max_streams_per_peer` already.
    #[error("the peer has too many heartbeat streams open")]
    TooManyForPeer,
    /// `max_streams` are open.
    #[error("too many heartbeat streams are open")]
    TooMany,
    /// The stream is known already.
    #[error("the heartbeat stream is open already")]
    Duplicate,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A heartbeat.
    Beat {
        /// From whom.
        peer: PeerId,
        /// When it was read.
        received: Instant,
        /// What it said.
        heartbeat: Heartbeat,
    },
    /// A stream was refused when it opened (reset it).
    Refused {
        /// Whose.
        peer: PeerId,
        /// Why.
        reason: StreamRefused,
    },
    /// A stream sent what is not a heartbeat and was dropped (reset it).
    Failed {
        /// Whose.
        peer: PeerId,
        /// Why.
        error: DecodeError,
    },
}

#[derive(Debug)]
struct Inbound {
    peer: PeerId,
    decoder: LineDecoder,
    /// Its beats in the event queue.
    pending: usize,
}

/// Heartbeat streams by key `K` (the node uses its stream handles).
///
/// Feed it with [`handle_stream_opened`](Self::handle_stream_opened),
/// [`handle_bytes`](Self::handle_bytes) and
/// [`handle_stream_closed`](Self::handle_stream_closed), then drain
/// [`poll_event`](Self::poll_event). It has no timers.
#[derive(Debug)]
pub struct Aggregator<K> {
    config: AggregatorConfig,
    streams: BTreeMap<K, Inbound>,
    per_peer: BTreeMap<PeerId, usize>,
    /// Events, with the stream of each beat (for its pending count).
    events: VecDeque<(Option<K>, Event)>,
    scratch: Vec<Heartbeat>,
    beats_dropped: u64,
}

impl<K: Ord + Copy> Aggregator<K> {
    /// An aggregator with no streams.
    pub fn new(config: AggregatorConfig) -> Self {
        Aggregator {
            config,
            streams: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            beats_dropped: 0,
        }
    }

    /// Beats dropped because their stream had `max_pending_beats` waiting.
    pub fn beats_dropped(&self) -> u64 {
        self.beats_dropped
    }

    /// The configuration.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// Streams open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Streams `peer` holds open.
    pub fn streams_of(&self, peer: &PeerId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Bytes of unfinished lines held over all streams (at most
    /// `max_line` each).
    pub fn buffered(&self) -> usize {
        self.streams.values().map(|s| s.decoder.buffered()).sum()
    }

    /// `peer` opened the stream `key`.
    pub fn handle_stream_opened(&mut self, key: K, peer: PeerId) -> Result<(), StreamRefused> {
        let opened = self.open(key, peer);
        if let Err(reason) = opened {
            self.events
                .push_back((None, Event::Refused { peer, reason }));
        }
        opened
    }

    /// Whether `key` is a stream being read.
    pub fn has_stream(&self, key: &K) -> bool {
        self.streams.contains_key(key)
    }

    fn open(&mut self, key: K, peer: PeerId) -> Result<(), StreamRefused> {
        if self.streams.contains_key(&key) {
            return Err(StreamRefused::Duplicate);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(StreamRefused::TooMany);
        }
        let count = self.per_peer.entry(peer).or_insert(0);
        if *count >= self.config.max_streams_per_peer {
            return Err(StreamRefused::TooManyForPeer);
        }
        *count += 1;
        let decoder = LineDecoder::new(self.config.max_line);
        let inbound = Inbound {
            peer,
            decoder,
            pending: 0,
        };
        self.streams.insert(key, inbound);
        Ok(())
    }

    /// Bytes read from `key`. On an error the stream is forgotten (reset
    /// it); heartbeats before the bad line are still reported.
    pub fn handle_bytes(&mut self, now: Instant, key: K, bytes: &[u8]) -> Result<(), DecodeError> {
        let inbound = self
            .streams
            .get_mut(&key)
            .ok_or(DecodeError::UnknownStream)?;
        let peer = inbound.peer;
        let room = self
            .config
            .max_pending_beats
            .saturating_sub(inbound.pending);
        let result = inbound.decoder.push(bytes, &mut self.scratch, room);
        inbound.pending += self.scratch.len();
        for heartbeat in self.scratch.drain(..) {
            let beat = Event::Beat {
                peer,
                received: now,
                heartbeat,
            };
            self.events.push_back((Some(key), beat));
        }
        match result {
            Ok(dropped) => {
                self.beats_dropped += dropped;
                Ok(())
            }
            Err(error) => {
                let failed = Event::Failed {
                    peer,
                    error: error.clone(),
                };
                self.events.push_back((None, failed));
                self.handle_stream_closed(key);
                Err(error)
            }
        }
    }

    /// The stream ended (closed, reset, or its connection went). An
    /// unfinished last line is dropped.
    pub fn handle_stream_closed(&mut self, key: K) {
        let Some(inbound) = self.streams.remove(&key) else {
            return;
        };
        if let Some(count) = self.per_peer.get_mut(&inbound.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&inbound.peer);
            }
        }
    }

    /// What arrived.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let (key, event) = self.events.pop_front()?;
        if let Some(inbound) = key.and_then(|k| self.streams.get_mut(&k)) {
            inbound.pending = inbound.pending.saturating_sub(1);
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use alloc::vec;

    fn peer(n: u8) -> PeerId {
        Keypair::from_secret_bytes([n; 32]).public().to_peer_id()
    }

    fn heights(agg: &mut Aggregator<u32>) -> Vec<(PeerId, u64)> {
        core::iter::from_fn(|| agg.poll_event())
            .filter_map(|e| match e {
                Event::Beat {
                    peer, heartbeat, ..
                } => Some((peer, heartbeat.height)),
                _ => None,
            })
            .collect()
    }

    const T: Instant = Instant::ZERO;

    #[test]
    fn lines_split_anywhere_decode_the_same() {
        let stream = b"{\"Height\":1,\"Head\":\"a\"}\n\n{\"Height\":2} {\"Height\":3}\r\n";
        for split in 0..stream.len() {
            let mut agg = Aggregator::new(AggregatorConfig::default());
            agg.handle_stream_opened(1, peer(1)).unwrap();
            agg.handle_bytes(T, 1, &stream[..split]).unwrap();
            agg.handle_bytes(T, 1, &stream[split..]).unwrap();
            let got: Vec<u64> = heights(&mut agg).into_iter().map(|(_, h)| h).collect();
            assert_eq!(got, [1, 2, 3], "split at {split}");
        }
        // One byte at a time.
        let mut agg = Aggregator::new(AggregatorConfig::default());
        agg.handle_stream_opened(1, peer(1)).unwrap();
        for b in stream {
            agg.handle_bytes(T, 1, &[*b]).unwrap();
        }
        assert_eq!(heights(&mut agg).len(), 3);
    }

    #[test]
    fn a_malformed_line_fails_its_stream_only() {
        let mut agg = Aggregator::new(AggregatorConfig::default());
        agg.handle_stream_opened(1, peer(1)).unwrap();
        agg.handle_stream_opened(2, peer(2)).unwrap();
        let err = agg
            .handle_bytes(
                T,
                1,
                b"{\"Height\":5}\n{\"Height\":\"x\"}\n{\"Height\":6}\n",
            )
            .unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
        // What came before the bad line counts; the stream is gone.
        assert_eq!(heights(&mut agg), vec![(peer(1), 5)]);
        assert_eq!(agg.streams(), 1);
        assert_eq!(agg.streams_of(&peer(1)), 0);
        assert_eq!(
            agg.handle_bytes(T, 1, b"{}\n"),
            Err(DecodeError::UnknownStream)
        );
        // The other stream goes on.
        agg.handle_bytes(T, 2, b"{\"Height\":9}\n").unwrap();
        assert_eq!(heights(&mut agg), vec![(peer(2), 9)]);
        for bad in [&b"[1]\n"[..], b"nope\n", b"{\"Height\":1\n", b"\"str\"\n"] {
            agg.handle_stream_opened(3, peer(3)).unwrap();
            assert!(agg.handle_bytes(T, 3, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_line_longer_than_the_bound_is_refused_before_it_is_held() {
        let config = AggregatorConfig {
            max_line: 100,
            ..AggregatorConfig::default()
        };
        let mut agg = Aggregator::new(config);
        agg.handle_stream_opened(1, peer(1)).unwrap();
        // 100 bytes without a newline are held; one more is too many.
        agg.handle_bytes(T, 1, &[b' '; 60]).unwrap();
        agg.handle_bytes(T, 1, &[b' '; 40]).unwrap();
        assert_eq!(agg.buffered(), 100);
        assert_eq!(
            agg.handle_bytes(T, 1, b" "),
            Err(DecodeError::LineTooLong { max: 100 })
        );
        assert_eq!(agg.buffered(), 0);
        // A long line inside one chunk too.
        agg.handle_stream_opened(2, peer(1)).unwrap();
        let mut long = vec![b' '; 101];
        long.push(b'\n');
        assert_eq!(
            agg.handle_bytes(T, 2, &long),
            Err(DecodeError::LineTooLong { max: 100 })
        );
    }

    #[test]
    fn a_flood_of_tiny_heartbeats_is_held_to_the_pending_bound() {
        let mut agg = Aggregator::new(AggregatorConfig::default());
        agg.handle_stream_opened(1, peer(1)).unwrap();
        agg.handle_stream_opened(2, peer(2)).unwrap();
        // 10 000 lines of `{}`, then one line of 20 000 values.
        agg.handle_bytes(T, 1, &b"{}\n".repeat(10_000)).unwrap();
        let mut line = b"{}".repeat(20_000);
        line.push(b'\n');
        agg.handle_bytes(T, 1, &line).unwrap();
        agg.handle_bytes(T, 2, b"{}\n").unwrap();
        let beats = |agg: &mut Aggregator<u8>| {
            let mut n = [0; 2];
            while let Some(e) = agg.poll_event() {
                if let Event::Beat { peer: p, .. } = e {
                    n[usize::from(p != peer(1))] += 1;
                }
            }
            n
        };
        assert_eq!(
            beats(&mut agg),
            [16, 1],
            "the other stream is not held back"
        );
        assert_eq!(agg.beats_dropped(), 30_000 - 16);
        // Once polled, the stream has room again.
        agg.handle_bytes(T, 1, b"{}\n{}\n").unwrap();
        assert_eq!(beats(&mut agg), [2, 0]);
    }

    #[test]
    fn streams_are_bounded_per_peer_and_overall() {
        let config = AggregatorConfig {
            max_streams_per_peer: 2,
            max_streams: 3,
            ..AggregatorConfig::default()
        };
        let mut agg = Aggregator::new(config);
        agg.handle_stream_opened(1, peer(1)).unwrap();
        agg.handle_stream_opened(2, peer(1)).unwrap();
        assert_eq!(
            agg.handle_stream_opened(3, peer(1)),
            Err(StreamRefused::TooManyForPeer)
        );
        assert_eq!(
            agg.handle_stream_opened(1, peer(2)),
            Err(StreamRefused::Duplicate)
        );
        agg.handle_stream_opened(3, peer(2)).unwrap();
        assert_eq!(
            agg.handle_stream_opened(4, peer(3)),
            Err(StreamRefused::TooMany)
        );
        agg.handle_stream_closed(1);
        agg.handle_stream_closed(1);
        assert_eq!(agg.streams_of(&peer(1)), 1);
        agg.handle_stream_opened(4, peer(1)).unwrap();
    }
}
