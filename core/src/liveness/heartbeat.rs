//! go-filecoin's heartbeat: the `fil/heartbeat/1.0.0` wire format and the
//! [`Beater`], which keeps a stream open to an aggregator and writes a
//! [`Heartbeat`] on it every period.
//!
//! # Wire
//! The beater opens a stream for [`PROTOCOL`] and writes one JSON object
//! per line, as Go's `json.Encoder` does: `Head` (string), `Height`
//! (number), `Nickname` (string), `MinerAddress` (string) and
//! `GenesisCID` (go-cid's JSON, `{"/":"<cid>"}`). Nothing comes back.
//! [`encode_line`] writes one; the aggregator side
//! ([`aggregator`](super::aggregator)) reads them.
//!
//! # The beater
//! One [`Beater`] per target (go-filecoin ran a second "alerts" target
//! beside the main one: make two). It is a policy machine in its own
//! vocabulary: it asks its driver to [`Connect`](Action::Connect) (dial the
//! target and open a stream), to write a [`Beat`](Action::Beat) and to
//! [`Reset`](Action::Reset) the stream, and hears back how that went. The
//! node runs it for every adapter ([`Node::start_heartbeat`]).
//!
//! Where it does better than go-filecoin:
//! - the first dial goes out at once and the first beat as soon as the
//!   stream opens (go waited a reconnect period, then a beat period);
//! - reconnects back off exponentially from `reconnect` to
//!   `reconnect_max`, each wait lengthened by a random part of up to
//!   `jitter_percent`, so beaters that lost the same aggregator do not come
//!   back in step (go: a fixed 10 s from every node);
//! - a beat not written within `write_timeout` is a failure; a failure
//!   resets the stream only, never the connection (go closed the whole
//!   connection, and every other protocol on it);
//! - beats due while a write is blocked are skipped, never sent in a burst;
//! - the outage is reported as events with levels decided from `now`: a
//!   warning at its first failure, an error at most every `error_every`
//!   (10 min, go's rule) with its length so far, and an info event with its
//!   length when it ends (go had none). It ends when a stream has carried
//!   beats for a period, not when one merely opens: an aggregator that
//!   accepts and resets every stream is one outage, with the full backoff.
//!
//! [`Node::start_heartbeat`]: crate::node::Node::start_heartbeat
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::liveness::heartbeat::{Action, Beater, BeaterConfig, Event, Heartbeat};
//! use sansp2p::time::Instant;
//! use sansp2p::{Keypair, PeerId};
//!
//! let us = Keypair::from_secret_bytes([1; 32]).public().to_peer_id();
//! let aggregator = Keypair::from_secret_bytes([2; 32]).public().to_peer_id();
//! // /ip4/127.0.0.1/tcp/4001/p2p/<aggregator>, binary
//! let mut target = vec![0x04, 127, 0, 0, 1, 0x06, 0x0f, 0xa1];
//! target.extend(sansp2p::relay::p2p_suffix(&aggregator));
//! let t0 = Instant::from_nanos(0);
//! let mut beater = Beater::new(t0, BeaterConfig::new(target), us).unwrap();
//! // The first dial goes out at once...
//! assert!(matches!(beater.poll_action(), Some(Action::Connect { .. })));
//! beater.handle_connected(t0);
//! // ...and the first beat as soon as the stream is open.
//! assert_eq!(beater.poll_action(), Some(Action::Beat));
//! let line = beater.encode(&Heartbeat { height: 7, ..Heartbeat::default() });
//! assert!(line.ends_with(b"\n"));
//! beater.handle_written(t0);
//! assert_eq!(beater.poll_event(), Some(Event::Connected));
//! assert_eq!(beater.poll_event(), Some(Event::BeatSent { count: 1 }));
//! // The next one is due a period later.
//! assert_eq!(beater.poll_timeout(), Some(t0 + Duration::from_secs(3)));
//! ```

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use rand_core::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::addr;
use crate::identity::PeerId;
use crate::time::Instant;

/// The protocol name.
pub const PROTOCOL: &str = "fil/heartbeat/1.0.0";

/// A CID as go-cid writes it in JSON, `{"/":"<cid>"}`; a plain string is
/// read as well.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cid(pub String);

impl Serialize for Cid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Link<'a> {
            #[serde(rename = "/")]
            link: &'a str,
        }
        Link { link: &self.0 }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Link {
                #[serde(rename = "/")]
                link: String,
            },
            Text(String),
        }
        Ok(match Form::deserialize(d)? {
            Form::Link { link } => Cid(link),
            Form::Text(text) => Cid(text),
        })
    }
}

/// One heartbeat: go-filecoin's fields, and any others a sender adds
/// (kept in `extra`, written back as they came).
///
/// Every field may be missing on the wire (it reads as empty), as Go's
/// decoder allows; `GenesisCID` is left out when `None`, and `null` reads
/// as `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The heaviest tipset the node is on.
    #[serde(rename = "Head", default)]
    pub head: String,
    /// The tipset's height.
    #[serde(rename = "Height", default)]
    pub height: u64,
    /// The node's nickname (the beater's configured one when empty).
    #[serde(rename = "Nickname", default)]
    pub nickname: String,
    /// The node's miner address (go-filecoin writes its zero address when
    /// it has none).
    #[serde(rename = "MinerAddress", default)]
    pub miner_address: String,
    /// The chain's genesis block.
    #[serde(
        rename = "GenesisCID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub genesis_cid: Option<Cid>,
    /// Fields beyond go-filecoin's.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `heartbeat` as one line of the wire: compact JSON and `\n`.
pub fn encode_line(heartbeat: &Heartbeat) -> Vec<u8> {
    // Serializing plain strings, numbers and a JSON map cannot fail.
    let mut line = serde_json::to_vec(heartbeat).unwrap_or_default();
    line.push(b'\n');
    line
}

// ---------------------------------------------------------------------------
// Configuration

/// How a [`Beater`] beats. [`BeaterConfig::new`] gives go-filecoin's
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaterConfig {
    /// The aggregator, a binary multiaddr ending in `/p2p/<id>`. Empty
    /// means off: the node starts nothing for it.
    pub target: Vec<u8>,
    /// A beat every this long once connected (go-filecoin: 3 s).
    pub period: Duration,
    /// The first wait after a failure (go-filecoin: 10 s, its fixed retry).
    pub reconnect: Duration,
    /// The longest wait, before jitter: 5 min.
    pub reconnect_max: Duration,
    /// Each wait is lengthened by a random part of up to this share of it:
    /// 50 %. At most 100.
    pub jitter_percent: u8,
    /// A beat not handed to the stream by then has failed (the stream is
    /// reset): 10 s.
    pub write_timeout: Duration,
    /// A dial and stream that did not open by then have failed: 30 s.
    pub connect_timeout: Duration,
    /// During an outage, an [`Level::Error`] event at most this often
    /// (go-filecoin: 10 min).
    pub error_every: Duration,
    /// Written into beats whose nickname is empty.
    pub nickname: String,
    /// Seeds the jitter. [`Node::start_heartbeat`](crate::node::Node::start_heartbeat)
    /// mixes a draw of the node's RNG into it, so that nodes keeping the
    /// default still jitter apart.
    pub rng_seed: u64,
}

impl BeaterConfig {
    /// go-filecoin's defaults, beating to `target`.
    pub fn new(target: Vec<u8>) -> BeaterConfig {
        BeaterConfig {
            target,
            period: Duration::from_secs(3),
            reconnect: Duration::from_secs(10),
            reconnect_max: Duration::from_secs(300),
            jitter_percent: 50,
            write_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            error_every: Duration::from_secs(600),
            nickname: String::new(),
            rng_seed: 0x6865_6172_7462_6561,
        }
    }
}

/// Why a [`BeaterConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BeaterConfigError {
    /// The target is empty: heartbeats are off.
    #[error("no heartbeat target: heartbeats are off")]
    NoTarget,
    /// The target is not a valid multiaddr.
    #[error("the heartbeat target is not a valid multiaddr")]
    InvalidTarget,
    /// The target does not say whom to reach.
    #[error("the heartbeat target needs /p2p/<aggregator id>")]
    NoPeerId,
    /// The target is this node (go-filecoin users retried a dial to self
    /// for 15 hours).
    #[error("the heartbeat target is this node itself")]
    TargetIsSelf,
    /// A duration that must be above zero is zero.
    #[error("{0} must be above 0")]
    Zero(&'static str),
    /// `reconnect_max` is below `reconnect`.
    #[error("reconnect_max is below reconnect")]
    ReconnectMaxTooSmall,
    /// `jitter_percent` is above 100.
    #[error("jitter_percent must be at most 100")]
    Jitter,
}

// ---------------------------------------------------------------------------
// Outputs

/// What the beater asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial `peer` (at `addr`, the target without `/p2p/`) and open a
    /// [`PROTOCOL`] stream; answer with [`Beater::handle_connected`] or
    /// [`Beater::handle_connect_failed`].
    Connect {
        /// The aggregator.
        peer: PeerId,
        /// Where.
        addr: Vec<u8>,
    },
    /// Write one heartbeat ([`Beater::encode`] makes the line) on the
    /// stream, and say [`Beater::handle_written`] once the stream took all
    /// of it.
    Beat,
    /// Reset the stream (only the stream: the connection stays).
    Reset,
}

/// How much an [`Event`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Good news.
    Info,
    /// Something failed; it is being retried.
    Warn,
    /// It has been failing for a while.
    Error,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The dial or the stream failed.
    Connect,
    /// The dial and stream did not open within `connect_timeout`.
    ConnectTimeout,
    /// A beat was not written within `write_timeout`.
    WriteTimeout,
    /// The stream or its connection ended.
    StreamLost,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The stream to the aggregator is open.
    Connected,
    /// A beat was written; `count` so far.
    BeatSent {
        /// Beats written since the start.
        count: u64,
    },
    /// Beats fell due while a write was blocked and were dropped.
    BeatsSkipped {
        /// How many this time.
        skipped: u64,
    },
    /// A failure worth telling: the first of an outage ([`Level::Warn`]),
    /// then one every `error_every` ([`Level::Error`]).
    Failed {
        /// Warn or Error.
        level: Level,
        /// What failed this time.
        failure: Failure,
        /// How long the outage has lasted.
        outage: Duration,
        /// Failures in this outage so far.
        failures: u32,
    },
    /// The outage ended: a stream is open again ([`Level::Info`]).
    Recovered {
        /// How long it lasted.
        outage: Duration,
    },
}

impl Event {
    /// How much it matters.
    pub fn level(&self) -> Level {
        match self {
            Event::Failed { level, .. } => *level,
            _ => Level::Info,
        }
    }
}

// ---------------------------------------------------------------------------
// The machine

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to dial again.
    Waiting { until: Instant },
    /// A Connect is out.
    Connecting { deadline: Instant },
    /// The stream is open.
    Open {
        /// When it opened.
        opened: Instant,
        /// Whether it has proved itself: a beat written a period or more
        /// after it opened, when a refusal would have come back.
        proven: bool,
        next_beat: Instant,
        /// The deadline of the beat being written.
        writing: Option<Instant>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    /// The last Warn or Error event.
    reported: Instant,
    failures: u32,
}

/// Beats to one aggregator. See the [module docs](self).
///
/// After any input, drain [`poll_action`](Self::poll_action) and
/// [`poll_event`](Self::poll_event), then call
/// [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Beater {
    config: BeaterConfig,
    peer: PeerId,
    /// The target without `/p2p/<id>`.
    addr: Vec<u8>,
    state: State,
    /// Failures in a row since the last beat written (sets the backoff).
    streak: u32,
    outage: Option<Outage>,
    sent: u64,
    rng: rand_chacha::ChaCha8Rng,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Beater {
    /// A beater for `config.target`; `local` is our own id (a target that
    /// is us is refused). The first [`Action::Connect`] is out at once.
    pub fn new(
        now: Instant,
        config: BeaterConfig,
        local: PeerId,
    ) -> Result<Beater, BeaterConfigError> {
        if config.target.is_empty() {
            return Err(BeaterConfigError::NoTarget);
        }
        for (value, name) in [
            (config.period, "period"),
            (config.reconnect, "reconnect"),
            (config.write_timeout, "write_timeout"),
            (config.connect_timeout, "connect_timeout"),
            (config.error_every, "error_every"),
        ] {
            if value.is_zero() {
                return Err(BeaterConfigError::Zero(name));
            }
        }
        if config.reconnect_max < config.reconnect {
            return Err(BeaterConfigError::ReconnectMaxTooSmall);
        }
        if config.jitter_percent > 100 {
            return Err(BeaterConfigError::Jitter);
        }
        let info = addr::classify(&config.target).map_err(|_| BeaterConfigError::InvalidTarget)?;
        let peer = info.peer.ok_or(BeaterConfigError::NoPeerId)?;
        if peer == local {
            return Err(BeaterConfigError::TargetIsSelf);
        }
        let suffix = crate::relay::p2p_suffix(&peer);
        let addr = config
            .target
            .strip_suffix(suffix.as_slice())
            .unwrap_or(&config.target)
            .to_vec();
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.rng_seed);
        let mut beater = Beater {
            peer,
            addr,
            state: State::Waiting { until: now },
            streak: 0,
            outage: None,
            sent: 0,
            rng,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        beater.connect(now);
        Ok(beater)
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &BeaterConfig {
        &self.config
    }

    /// The aggregator.
    pub fn target_peer(&self) -> PeerId {
        self.peer
    }

    /// Whether the stream is open.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Beats written so far.
    pub fn beats_sent(&self) -> u64 {
        self.sent
    }

    /// When the current outage began, if there is one.
    pub fn outage_since(&self) -> Option<Instant> {
        self.outage.map(|o| o.since)
    }

    /// The line for `heartbeat`, with the configured nickname when its own
    /// is empty.
    pub fn encode(&self, heartbeat: &Heartbeat) -> Vec<u8> {
        if heartbeat.nickname.is_empty() && !self.config.nickname.is_empty() {
            let mut named = heartbeat.clone();
            named.nickname.clone_from(&self.config.nickname);
            encode_line(&named)
        } else {
            encode_line(heartbeat)
        }
    }

    // ------------------------------------------------------------ inputs

    /// The [`Action::Connect`] succeeded: the stream is open. The first
    /// beat is due now.
    ///
    /// An outage ends, and the backoff starts over, only once the stream
    /// has proved itself: a beat written a period after it opened. A
    /// stream the aggregator accepts and then resets (a lazy stream is
    /// "open" before the peer has answered) does not count as a recovery,
    /// so a refusing aggregator sees the full backoff and the application
    /// one warning, not one per attempt.
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        self.events.push_back(Event::Connected);
        self.state = State::Open {
            opened: now,
            proven: false,
            next_beat: now,
            writing: None,
        };
        self.handle_timeout(now);
    }

    /// The [`Action::Connect`] failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if matches!(self.state, State::Connecting { .. }) {
            self.fail(now, Failure::Connect, false);
        }
    }

    /// The beat of the last [`Action::Beat`] is all on the stream.
    pub fn handle_written(&mut self, now: Instant) {
        let period = self.config.period;
        let State::Open {
            opened,
            proven,
            writing,
            ..
        } = &mut self.state
        else {
            return;
        };
        if writing.take().is_none() {
            return;
        }
        self.sent += 1;
        self.events.push_back(Event::BeatSent { count: self.sent });
        if !*proven && now.saturating_duration_since(*opened) >= period {
            *proven = true;
            self.streak = 0;
            if let Some(outage) = self.outage.take() {
                self.events.push_back(Event::Recovered {
                    outage: opened.saturating_duration_since(outage.since),
                });
            }
        }
        self.handle_timeout(now);
    }

    /// The stream (or its connection) ended, or could not be written.
    pub fn handle_stream_lost(&mut self, now: Instant) {
        if matches!(self.state, State::Open { .. }) {
            self.fail(now, Failure::StreamLost, false);
        }
    }

    /// Time passed: beats fall due, deadlines expire, waits end. Safe to
    /// call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waiting { until } if now >= until => self.connect(now),
            State::Connecting { deadline } if now >= deadline => {
                self.fail(now, Failure::ConnectTimeout, true);
            }
            State::Open {
                writing: Some(deadline),
                ..
            } if now >= deadline => self.fail(now, Failure::WriteTimeout, true),
            State::Open {
                opened,
                proven,
                next_beat,
                writing,
            } if now >= next_beat => {
                // Every due beat but one is skipped, and none while a
                // write is blocked: never a burst.
                let period = self.config.period;
                let late = now.saturating_duration_since(next_beat);
                let due = 1 + (late.as_nanos() / period.as_nanos().max(1)) as u64;
                let next_beat = next_beat + period * u32::try_from(due).unwrap_or(u32::MAX);
                let skipped = if writing.is_some() { due } else { due - 1 };
                if skipped > 0 {
                    self.events.push_back(Event::BeatsSkipped { skipped });
                }
                let writing = match writing {
                    Some(deadline) => Some(deadline),
                    None => {
                        self.actions.push_back(Action::Beat);
                        Some(now + self.config.write_timeout)
                    }
                };
                self.state = State::Open {
                    opened,
                    proven,
                    next_beat,
                    writing,
                };
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ outputs

    /// What to do next.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.state {
            State::Waiting { until } => until,
            State::Connecting { deadline } => deadline,
            State::Open {
                next_beat,
                writing: Some(deadline),
                ..
            } => next_beat.min(deadline),
            State::Open { next_beat, .. } => next_beat,
        })
    }

    // ------------------------------------------------------------ internals

    fn connect(&mut self, now: Instant) {
        self.actions.push_back(Action::Connect {
            peer: self.peer,
            addr: self.addr.clone(),
        });
        self.state = State::Connecting {
            deadline: now + self.config.connect_timeout,
        };
    }

    /// A failure: reported by the outage rule, the stream reset if the
    /// driver still holds it, and the next dial after the backoff.
    fn fail(&mut self, now: Instant, failure: Failure, reset: bool) {
        if reset {
            self.actions.push_back(Action::Reset);
        }
        self.streak = self.streak.saturating_add(1);
        let report = match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    reported: now,
                    failures: 1,
                });
                Some(Level::Warn)
            }
            Some(o) => {
                o.failures = o.failures.saturating_add(1);
                if now.saturating_duration_since(o.reported) >= self.config.error_every {
                    o.reported = now;
                    Some(Level::Error)
                } else {
                    None
                }
            }
        };
        if let (Some(level), Some(o)) = (report, self.outage) {
            self.events.push_back(Event::Failed {
                level,
                failure,
                outage: now.saturating_duration_since(o.since),
                failures: o.failures,
            });
        }
        let until = now + self.backoff();
        self.state = State::Waiting { until };
    }

    /// `reconnect * 2^(streak - 1)` up to `reconnect_max`, plus up to
    /// `jitter_percent` of that.
    fn backoff(&mut self) -> Duration {
        let doublings = self.streak.saturating_sub(1).min(32);
        let base = self
            .config
            .reconnect
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.config.reconnect_max)
            .min(self.config.reconnect_max);
        let spread = base.as_nanos() * u128::from(self.config.jitter_percent) / 100;
        let spread = u64::try_from(spread).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            self.rng.next_u64() % (spread + 1)
        };
        base + Duration::from_nanos(extra)
    }
}

#[cfg(test)]
#[path = "heartbeat_tests.rs"]
mod tests;
