//! Heartbeats inside the node: every [`Beater`] started with
//! [`Node::start_heartbeat`] runs on the node's dialer and streams, and
//! [`Node::serve_heartbeat`] makes the node an aggregator whose heartbeats
//! feed a [`PeerMonitor`], so every adapter gets both by one call.
//!
//! The streams involved belong to this module: their events (opened,
//! readable, writable, closed, reset) and the dials made for beaters are
//! taken on their way out of the node and never reach the application,
//! which hears [`Event::Heartbeat`], [`Event::Aggregator`] and
//! [`Event::Monitor`] instead.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{DialId, Event, Node, StreamError, StreamHandle, TimerKey};
use crate::identity::PeerId;
use crate::liveness::aggregator::{self, Aggregator, AggregatorConfig};
use crate::liveness::heartbeat::{
    self, Action, Beater, BeaterConfig, BeaterConfigError, Heartbeat,
};
use crate::liveness::monitor::{MonitorConfig, MonitorConfigError, PeerMonitor};
use crate::time::Instant;

/// One heartbeat target started with [`Node::start_heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BeatId(pub(crate) u64);

/// Supplies the heartbeat each time one is due.
pub type Payload = Box<dyn FnMut() -> Heartbeat + Send>;

/// The node's heartbeat state.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    beaters: BTreeMap<BeatId, Beating>,
    serving: Option<Serving>,
    /// The earliest deadline registered in the timer table.
    timer: Option<Instant>,
}

struct Beating {
    beater: Beater,
    payload: Payload,
    dial: Option<DialId>,
    stream: Option<StreamHandle>,
    /// Whether the stream reported its protocol agreed.
    open: bool,
    /// What is left to write of the current beat.
    out: Vec<u8>,
}

impl fmt::Debug for Beating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Beating")
            .field("beater", &self.beater)
            .field("dial", &self.dial)
            .field("stream", &self.stream)
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Serving {
    aggregator: Aggregator<StreamHandle>,
    monitor: PeerMonitor,
}

/// Whose a stream or dial is.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Beater(BeatId),
    Aggregator,
}

impl Node {
    // ------------------------------------------------------------ getters

    /// The peer monitor of [`serve_heartbeat`](Self::serve_heartbeat):
    /// last metrics, alerted peers.
    pub fn monitor(&self) -> Option<&PeerMonitor> {
        self.liveness
            .as_ref()
            .and_then(|l| l.serving.as_ref())
            .map(|s| &s.monitor)
    }

    /// The beater of a heartbeat target.
    pub fn beater(&self, beat: BeatId) -> Option<&Beater> {
        self.liveness
            .as_ref()
            .and_then(|l| l.beaters.get(&beat))
            .map(|b| &b.beater)
    }

    // ------------------------------------------------------------ commands

    /// Starts beating to `config.target` on `fil/heartbeat/1.0.0`:
    /// `payload` gives each heartbeat when it is due;
    /// [`Event::Heartbeat`] tells how it goes. An empty target means off:
    /// `Ok(None)`, nothing started. Several targets run independently.
    pub fn start_heartbeat(
        &mut self,
        now: Instant,
        config: BeaterConfig,
        payload: Payload,
    ) -> Result<Option<BeatId>, BeaterConfigError> {
        let now = self.tick(now);
        if config.target.is_empty() {
            return Ok(None);
        }
        // The node's RNG is mixed in: nodes that keep the default seed must
        // not all draw the same jitter (a restarted aggregator would see
        // every beater come back in the same instant).
        let mut config = config;
        config.rng_seed ^= rand_core::Rng::next_u64(&mut self.rng);
        let beater = Beater::new(now, config, self.local_peer)?;
        let beat = BeatId(self.fresh_id());
        self.liveness
            .get_or_insert_with(Box::default)
            .beaters
            .insert(
                beat,
                Beating {
                    beater,
                    payload,
                    dial: None,
                    stream: None,
                    open: false,
                    out: Vec::new(),
                },
            );
        self.run_liveness();
        Ok(Some(beat))
    }

    /// Stops a heartbeat target; its stream is closed.
    pub fn stop_heartbeat(&mut self, now: Instant, beat: BeatId) {
        let now = self.tick(now);
        let Some(b) = self.liveness.as_mut().and_then(|l| l.beaters.remove(&beat)) else {
            return;
        };
        if let Some(stream) = b.stream {
            self.stream_detach(now, stream);
        }
        self.run_liveness();
    }

    /// Serves `fil/heartbeat/1.0.0`: heartbeats from peers become
    /// [`Event::Aggregator`] and metrics (`config.metric_name`, TTL
    /// `config.metric_ttl` from receipt) of a [`PeerMonitor`] with
    /// `monitor`, whose alerts and recoveries are [`Event::Monitor`].
    pub fn serve_heartbeat(
        &mut self,
        now: Instant,
        config: AggregatorConfig,
        monitor: MonitorConfig,
    ) -> Result<(), MonitorConfigError> {
        let now = self.tick(now);
        let monitor = PeerMonitor::new(now, monitor)?;
        // A constant, valid name.
        let _ = self.register_protocol(heartbeat::PROTOCOL);
        self.liveness.get_or_insert_with(Box::default).serving = Some(Serving {
            aggregator: Aggregator::new(config),
            monitor,
        });
        self.run_liveness();
        Ok(())
    }

    /// Sets the peers the monitor watches (others are purged); by default
    /// a peer joins when its first heartbeat arrives.
    pub fn set_monitored_peers(&mut self, now: Instant, peers: Vec<PeerId>) {
        let now = self.tick(now);
        if let Some(s) = self.serving() {
            s.monitor.set_peers(now, peers);
        }
        self.run_liveness();
    }

    // ------------------------------------------------------------ internals

    pub(super) fn liveness_timeout(&mut self, now: Instant) {
        let Some(l) = self.liveness.as_mut() else {
            return;
        };
        l.timer = None;
        for b in l.beaters.values_mut() {
            b.beater.handle_timeout(now);
        }
        if let Some(s) = l.serving.as_mut() {
            s.monitor.handle_timeout(now);
        }
        self.run_liveness();
    }

    /// Takes the events of the module's own streams and dials; `None` when
    /// the event was one of those.
    pub(super) fn liveness_take(&mut self, event: Event) -> Option<Event> {
        if self.liveness.is_none() {
            return Some(event);
        }
        match &event {
            Event::Dialed { dial, peer, .. } => {
                let Some(beat) = self.beater_of_dial(*dial) else {
                    return Some(event);
                };
                let peer = *peer;
                self.open_beat_stream(beat, peer);
            }
            Event::DialFailed { dial, .. } => {
                let Some(beat) = self.beater_of_dial(*dial) else {
                    return Some(event);
                };
                self.with_beater(beat, |b, now| {
                    b.dial = None;
                    b.beater.handle_connect_failed(now);
                });
            }
            Event::InboundStream {
                stream,
                peer,
                protocol,
            } if &**protocol == heartbeat::PROTOCOL => {
                let (stream, peer) = (*stream, *peer);
                let refused = match self.serving() {
                    Some(s) => s.aggregator.handle_stream_opened(stream, peer).is_err(),
                    None => true,
                };
                if refused {
                    self.reset_stream(stream);
                } else {
                    self.read_aggregated(stream);
                }
                self.run_liveness();
            }
            Event::StreamOpened { stream, .. } => {
                let Some(Owner::Beater(beat)) = self.owner_of(*stream) else {
                    return Some(event);
                };
                self.with_beater(beat, |b, now| {
                    b.open = true;
                    b.beater.handle_connected(now);
                });
            }
            Event::StreamOpenFailed { stream, .. } => {
                let Some(Owner::Beater(beat)) = self.owner_of(*stream) else {
                    return Some(event);
                };
                self.with_beater(beat, |b, now| {
                    b.stream = None;
                    b.beater.handle_connect_failed(now);
                });
            }
            Event::StreamWritable { stream } => match self.owner_of(*stream) {
                Some(Owner::Beater(beat)) => {
                    self.write_beat(beat);
                    self.run_liveness();
                }
                Some(Owner::Aggregator) => {}
                None => return Some(event),
            },
            Event::StreamReadable { stream } => match self.owner_of(*stream) {
                Some(Owner::Beater(_)) => self.discard_input(*stream),
                Some(Owner::Aggregator) => {
                    self.read_aggregated(*stream);
                    self.run_liveness();
                }
                None => return Some(event),
            },
            Event::StreamClosed { stream } | Event::StreamReset { stream } => {
                match self.owner_of(*stream) {
                    Some(Owner::Beater(beat)) => self.with_beater(beat, |b, now| {
                        b.stream = None;
                        b.out.clear();
                        if b.open {
                            b.beater.handle_stream_lost(now);
                        } else {
                            b.beater.handle_connect_failed(now);
                        }
                    }),
                    Some(Owner::Aggregator) => {
                        let stream = *stream;
                        if let Some(s) = self.serving() {
                            s.aggregator.handle_stream_closed(stream);
                        }
                    }
                    None => return Some(event),
                }
            }
            _ => return Some(event),
        }
        None
    }

    fn beating(&mut self, beat: BeatId) -> Option<&mut Beating> {
        self.liveness.as_mut()?.beaters.get_mut(&beat)
    }

    fn serving(&mut self) -> Option<&mut Serving> {
        self.liveness.as_mut()?.serving.as_mut()
    }

    fn beater_of_dial(&self, dial: DialId) -> Option<BeatId> {
        let l = self.liveness.as_ref()?;
        l.beaters
            .iter()
            .find(|(_, b)| b.dial == Some(dial))
            .map(|(id, _)| *id)
    }

    fn owner_of(&self, stream: StreamHandle) -> Option<Owner> {
        let l = self.liveness.as_ref()?;
        if let Some((id, _)) = l.beaters.iter().find(|(_, b)| b.stream == Some(stream)) {
            return Some(Owner::Beater(*id));
        }
        l.serving
            .as_ref()
            .filter(|s| s.aggregator.has_stream(&stream))
            .map(|_| Owner::Aggregator)
    }

    /// Feeds one beater, then runs what follows.
    fn with_beater(&mut self, beat: BeatId, f: impl FnOnce(&mut Beating, Instant)) {
        let now = self.now;
        if let Some(b) = self.beating(beat) {
            f(b, now);
        }
        self.run_liveness();
    }

    /// Carries out every beater's actions, hands on every event, and
    /// registers the earliest deadline.
    fn run_liveness(&mut self) {
        loop {
            let Some(l) = self.liveness.as_mut() else {
                return;
            };
            let mut actions = Vec::new();
            for (id, b) in &mut l.beaters {
                while let Some(action) = b.beater.poll_action() {
                    actions.push((*id, action));
                }
                while let Some(event) = b.beater.poll_event() {
                    self.events.push_back(Event::Heartbeat { beat: *id, event });
                }
            }
            if let Some(s) = l.serving.as_mut() {
                let now = self.now;
                while let Some(event) = s.aggregator.poll_event() {
                    if let aggregator::Event::Beat {
                        peer, heartbeat, ..
                    } = &event
                    {
                        let config = s.aggregator.config();
                        let value = String::from_utf8(heartbeat::encode_line(heartbeat))
                            .unwrap_or_default();
                        let value = String::from(value.trim_end());
                        let (name, ttl) = (config.metric_name, config.metric_ttl);
                        // A refused metric (monitor full) is counted there.
                        let _ = s.monitor.handle_metric(now, name, *peer, value, ttl, true);
                    }
                    self.events.push_back(Event::Aggregator(event));
                }
                while let Some(event) = s.monitor.poll_event() {
                    self.events.push_back(Event::Monitor(event));
                }
            }
            if actions.is_empty() {
                break;
            }
            for (id, action) in actions {
                self.beater_action(id, action);
            }
        }
        let Some(l) = self.liveness.as_mut() else {
            return;
        };
        let beaters = l.beaters.values().filter_map(|b| b.beater.poll_timeout());
        let monitor = l.serving.as_ref().and_then(|s| s.monitor.poll_timeout());
        let next = beaters.chain(monitor).min();
        if next != l.timer {
            if let Some(old) = l.timer.take() {
                self.timers.remove(&(old, TimerKey::Liveness));
            }
            if let Some(at) = next {
                l.timer = Some(at);
                self.timers.insert((at, TimerKey::Liveness));
            }
        }
    }

    fn beater_action(&mut self, beat: BeatId, action: Action) {
        let now = self.now;
        match action {
            Action::Connect { peer, addr } => {
                if self.best_connection(&peer).is_some() {
                    self.open_beat_stream(beat, peer);
                    return;
                }
                let dialed = self.dial(now, Some(peer), alloc::vec![addr]);
                let Some(b) = self.beating(beat) else {
                    return;
                };
                match dialed {
                    Ok(dial) => b.dial = Some(dial),
                    Err(_) => b.beater.handle_connect_failed(now),
                }
            }
            Action::Beat => {
                let Some(b) = self.beating(beat) else {
                    return;
                };
                let heartbeat = (b.payload)();
                b.out = b.beater.encode(&heartbeat);
                self.write_beat(beat);
            }
            Action::Reset => {
                let Some(b) = self.beating(beat) else {
                    return;
                };
                b.dial = None;
                b.open = false;
                b.out.clear();
                if let Some(stream) = b.stream.take() {
                    self.reset_stream(stream);
                }
            }
        }
    }

    /// Opens the beater's stream on the connection to `peer`.
    fn open_beat_stream(&mut self, beat: BeatId, peer: PeerId) {
        let now = self.now;
        let opened = self.open_stream(now, peer, [heartbeat::PROTOCOL]);
        let Some(b) = self.beating(beat) else {
            if let Ok(stream) = opened {
                self.reset_stream(stream);
            }
            return;
        };
        b.dial = None;
        match opened {
            Ok(stream) => {
                b.stream = Some(stream);
                b.open = false;
            }
            Err(_) => b.beater.handle_connect_failed(now),
        }
        self.run_liveness();
    }

    /// Writes what is left of the current beat; tells the beater once all
    /// of it is on the stream, or that the stream is lost.
    fn write_beat(&mut self, beat: BeatId) {
        let now = self.now;
        let Some(b) = self.beating(beat) else {
            return;
        };
        let Some(stream) = b.stream else {
            return;
        };
        if b.out.is_empty() {
            return;
        }
        let mut out = core::mem::take(&mut b.out);
        let mut lost = false;
        while !out.is_empty() {
            match self.stream_write(now, stream, &out) {
                Ok(0) | Err(StreamError::WouldBlock) => break,
                Ok(n) => {
                    out.drain(..n);
                }
                Err(_) => {
                    lost = true;
                    break;
                }
            }
        }
        let Some(b) = self.beating(beat) else {
            return;
        };
        if lost {
            b.stream = None;
            b.beater.handle_stream_lost(now);
            self.reset_stream(stream);
        } else if out.is_empty() {
            b.beater.handle_written(now);
        } else {
            b.out = out;
        }
    }

    /// An aggregator never writes to a beater: whatever comes is dropped.
    fn discard_input(&mut self, stream: StreamHandle) {
        let now = self.now;
        let mut buf = [0u8; 512];
        while let Ok(n) = self.stream_read(now, stream, &mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// Reads an inbound heartbeat stream until it would block.
    fn read_aggregated(&mut self, stream: StreamHandle) {
        let now = self.now;
        let mut buf = [0u8; 4096];
        loop {
            let read = self.stream_read(now, stream, &mut buf);
            let Some(s) = self.serving() else {
                return;
            };
            match read {
                Ok(0) => {
                    // The beater is done: close our side too.
                    s.aggregator.handle_stream_closed(stream);
                    self.stream_detach(now, stream);
                    return;
                }
                Ok(n) => {
                    if s.aggregator.handle_bytes(now, stream, &buf[..n]).is_err() {
                        self.reset_stream(stream);
                        return;
                    }
                }
                Err(StreamError::WouldBlock) => return,
                Err(_) => {
                    s.aggregator.handle_stream_closed(stream);
                    return;
                }
            }
        }
    }
}
