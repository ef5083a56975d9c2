//! `/perf/1.0.0` in the node: our runs ([`Node::perf`]) and serving peers'
//! runs ([`PerfConfig::serve`], [`Node::serve_perf`]). The byte machines
//! are in `builtin/perf.rs`; the wire is described in
//! [`crate::protocols::perf`].

use core::time::Duration;

use super::stream::Builtin;
use super::{Event, Node, OpenStreamError, PeerId, PerfId, StreamHandle, TimerKey};
use crate::protocols::perf::PROTOCOL;
use crate::time::Instant;
use crate::yamux;

/// Serving perf and the limits of our own runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerfConfig {
    /// Serve `/perf/1.0.0` to peers that open it (and list it in
    /// identify). Default false: the spec says perf SHOULD NOT be on by
    /// default, since a client may ask for any amount of work; turn it on
    /// for trusted networks only, here or with [`Node::serve_perf`]. On
    /// limited (relayed) connections it is served only when also allowed
    /// there ([`Node::allow_on_limited`]). A served run holds at most one
    /// 16 KiB chunk of its own beyond the stream's yamux send buffer
    /// (`yamux.max_stream_send_buffer`), however much it is asked for.
    pub serve: bool,
    /// Time for one of our runs, from [`Node::perf`] to the server's close;
    /// then it fails with [`PerfFailure::Timeout`] and its stream is reset.
    /// Default 60 s: raise it for long runs.
    pub timeout: Duration,
    /// Our runs under way at once; [`Node::perf`] beyond it fails with
    /// [`PerfError::TooManyRuns`]. Default 16.
    pub max_runs: usize,
    /// Runs served to peers at once, over all connections; a perf stream
    /// beyond it is reset once agreed. Each may hold a stream's whole yamux
    /// send buffer (256 KiB by default), so this bounds what serving can
    /// cost. Default 16.
    pub max_served: usize,
}

impl Default for PerfConfig {
    fn default() -> Self {
        PerfConfig {
            serve: false,
            timeout: Duration::from_secs(60),
            max_runs: 16,
            max_served: 16,
        }
    }
}

/// What one run moves: both sizes may be zero, or up to `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerfParams {
    /// Bytes we send the server before closing our side.
    pub upload: u64,
    /// Bytes we ask the server to send back after that.
    pub download: u64,
}

/// A finished run, in [`Event::PerfDone`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerfReport {
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded (exactly as asked).
    pub downloaded: u64,
    /// From the protocol's confirmation to the last upload byte handed to
    /// the stream (what the stream buffers is still on its way).
    pub upload: Duration,
    /// From then to the server's close: the server reading the rest of the
    /// upload, then sending the download.
    pub download: Duration,
    /// From [`Node::perf`] (the stream's opening) to the server's close:
    /// the spec's measure.
    pub total: Duration,
}

/// A refused [`Node::perf`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PerfError {
    /// No upgraded connection to the peer.
    #[error("not connected to the peer")]
    NotConnected,
    /// The only connection to the peer is limited (relayed) and perf is
    /// not allowed there ([`Node::allow_on_limited`]).
    #[error("the connection is limited and perf does not run there")]
    Limited,
    /// `perf.max_runs` runs are under way.
    #[error("too many perf runs under way")]
    TooManyRuns,
    /// The stream could not be opened.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::OpenError),
}

/// Why a run failed, in [`Event::PerfFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PerfFailure {
    /// Not finished within `perf.timeout`: what had moved by then (the
    /// spec's timed runs ask for `u64::MAX` and stop after a while: this is
    /// their figure).
    #[error("timed out after {uploaded} bytes up and {downloaded} down")]
    Timeout {
        /// Upload bytes handed to the stream (at most one 16 KiB chunk
        /// more than yamux has taken).
        uploaded: u64,
        /// Download bytes received.
        downloaded: u64,
    },
    /// The stream ended before the peer confirmed perf: it does not serve
    /// it (perf is off by default everywhere; on a limited connection it
    /// must also be allowed there), or the stream or the connection was
    /// lost first.
    #[error("the peer does not serve perf")]
    Unsupported,
    /// The server sent more than we asked for (the stream is reset).
    #[error("the server sent more than the {requested} bytes asked for")]
    TooMuchData {
        /// What we asked for.
        requested: u64,
    },
    /// The server closed after fewer bytes than we asked for.
    #[error("the server sent {received} of the {requested} bytes asked for")]
    TooLittleData {
        /// What we asked for.
        requested: u64,
        /// What came.
        received: u64,
    },
    /// The server sent data or closed before our upload ended (it must
    /// read to our close first; the stream is reset).
    #[error("the server answered before our upload ended")]
    AnsweredEarly,
    /// The peer reset the stream, or the connection closed, during the run.
    #[error("stream failed")]
    Stream,
}

/// One of our runs under way.
#[derive(Debug)]
pub(super) struct PerfRun {
    peer: PeerId,
    stream: StreamHandle,
    params: PerfParams,
    started: Instant,
    deadline: Instant,
}

impl Node {
    /// Runs perf against `peer` on a new stream of the best connection:
    /// `params.upload` bytes go up, then the server sends
    /// `params.download` bytes back. [`Event::PerfDone`] with the
    /// [`PerfReport`] or [`Event::PerfFailed`] follows, within
    /// `perf.timeout`. The bytes are made as the stream takes them, so a
    /// run of any size holds at most one chunk beyond the stream's send
    /// buffer; the download is counted, not kept. The peer must serve perf
    /// ([`PerfConfig::serve`]), else the run fails with
    /// [`PerfFailure::Unsupported`].
    ///
    /// Two nodes in memory (plaintext, a pipe, a clock that stands still):
    ///
    /// ```
    /// use sansp2p::identity::Keypair;
    /// use sansp2p::node::{Config, Event, Node, PerfParams, Security};
    /// use sansp2p::Instant;
    /// # use sansp2p::node::{Action, ConnectionId, Output};
    /// #
    /// # /// One connection between two nodes, and its bytes in flight.
    /// # #[derive(Default)]
    /// # struct Pipe { conns: [Option<ConnectionId>; 2], wire: [Vec<u8>; 2] }
    /// #
    /// # impl Pipe {
    /// #     /// Carries outputs and bytes until `done` takes an event.
    /// #     fn run(&mut self, nodes: &mut [Node; 2], now: Instant, mut done: impl FnMut(&Event) -> bool) {
    /// #         for _ in 0..100_000 {
    /// #             for i in 0..2 {
    /// #                 loop {
    /// #                     match nodes[i].poll_output() {
    /// #                         Output::Action(Action::Connect { conn, .. }) => {
    /// #                             let from = vec![0x04, 10, 0, 0, 1, 0x06, 0x0f, 0xa1];
    /// #                             self.conns[1 - i] = Some(nodes[1 - i].handle_inbound(now, from).unwrap());
    /// #                             self.conns[i] = Some(conn);
    /// #                             nodes[i].handle_connected(now, conn);
    /// #                         }
    /// #                         Output::Transmit(conn) => {
    /// #                             while nodes[i].poll_transmit(now, conn, &mut self.wire[i], 1 << 16) > 0 {}
    /// #                         }
    /// #                         Output::Event(e) if done(&e) => return,
    /// #                         Output::Timeout(_) => break,
    /// #                         _ => {}
    /// #                     }
    /// #                 }
    /// #                 if let Some(conn) = self.conns[1 - i] {
    /// #                     let n = nodes[1 - i].handle_read(now, conn, &self.wire[i]);
    /// #                     self.wire[i].drain(..n);
    /// #                 }
    /// #             }
    /// #         }
    /// #         panic!("not done");
    /// #     }
    /// # }
    ///
    /// let now = Instant::ZERO;
    /// let node = |seed: u8| {
    ///     let mut config = Config::new(Keypair::from_secret_bytes([seed; 32]));
    ///     config.security = vec![Security::Plaintext];
    ///     config.rng_seed = [seed; 32];
    ///     Node::new(now, config).unwrap()
    /// };
    /// let mut nodes = [node(1), node(2)];
    /// // Serving perf is off by default.
    /// nodes[1].serve_perf(true);
    /// let server = nodes[1].local_peer_id();
    /// let addr = vec![0x04, 10, 0, 0, 2, 0x06, 0x0f, 0xa1]; // /ip4/10.0.0.2/tcp/4001
    /// nodes[0].dial(now, Some(server), vec![addr]).unwrap();
    /// let mut pipe = Pipe::default();
    /// pipe.run(&mut nodes, now, |e| matches!(e, Event::Dialed { .. }));
    ///
    /// let params = PerfParams { upload: 3 << 20, download: 5 << 20 };
    /// let perf = nodes[0].perf(now, server, params).unwrap();
    /// let mut done = None;
    /// pipe.run(&mut nodes, now, |e| match e {
    ///     Event::PerfDone { perf: p, report, .. } if *p == perf => {
    ///         done = Some(report.clone());
    ///         true
    ///     }
    ///     Event::PerfFailed { error, .. } => panic!("{error}"),
    ///     _ => false,
    /// });
    /// let report = done.unwrap();
    /// assert_eq!((report.uploaded, report.downloaded), (3 << 20, 5 << 20));
    /// ```
    pub fn perf(
        &mut self,
        now: Instant,
        peer: PeerId,
        params: PerfParams,
    ) -> Result<PerfId, PerfError> {
        let now = self.tick(now);
        if self.perfs.len() >= self.config.perf.max_runs {
            return Err(PerfError::TooManyRuns);
        }
        let conn = self.best_connection(&peer).ok_or(PerfError::NotConnected)?;
        if self.is_limited(conn) && !self.perf_on_limited() {
            return Err(PerfError::Limited);
        }
        let perf = PerfId(self.fresh_id());
        let stream = match self.open_builtin_checked(conn, Builtin::Perf(perf, params)) {
            Ok(stream) => stream,
            Err(OpenStreamError::Yamux(e)) => return Err(PerfError::Yamux(e)),
            Err(_) => return Err(PerfError::NotConnected),
        };
        let deadline = now + self.config.perf.timeout;
        self.perfs.insert(
            perf,
            PerfRun {
                peer,
                stream,
                params,
                started: now,
                deadline,
            },
        );
        self.timers.insert((deadline, TimerKey::Perf(perf)));
        Ok(perf)
    }

    /// Turns serving `/perf/1.0.0` on or off ([`PerfConfig::serve`]);
    /// connected peers hear of the change by identify push. Runs already
    /// under way go on.
    pub fn serve_perf(&mut self, on: bool) {
        if self.config.perf.serve != on {
            self.config.perf.serve = on;
            self.push_identify();
        }
    }

    /// Whether inbound perf streams are served on a connection that is
    /// `limited` or not.
    pub(super) fn serves_perf(&self, limited: bool) -> bool {
        self.config.perf.serve && (!limited || self.perf_on_limited())
    }

    fn perf_on_limited(&self) -> bool {
        self.limited_protocols.iter().any(|p| p == PROTOCOL)
    }

    /// A run's stream ended: the upload and download times, or why not.
    pub(super) fn perf_done(
        &mut self,
        perf: PerfId,
        result: Result<(Duration, Duration), PerfFailure>,
    ) {
        let Some(run) = self.perfs.remove(&perf) else {
            return;
        };
        self.timers.remove(&(run.deadline, TimerKey::Perf(perf)));
        let peer = run.peer;
        self.events.push_back(match result {
            Ok((upload, download)) => Event::PerfDone {
                perf,
                peer,
                report: PerfReport {
                    uploaded: run.params.upload,
                    downloaded: run.params.download,
                    upload,
                    download,
                    total: self.now.saturating_duration_since(run.started),
                },
            },
            Err(error) => Event::PerfFailed { perf, peer, error },
        });
    }

    /// A run's deadline: it fails and its stream is reset.
    pub(super) fn perf_timeout(&mut self, now: Instant, perf: PerfId) {
        if self.perfs.get(&perf).is_none_or(|r| r.deadline > now) {
            return;
        }
        let run = self.perfs.remove(&perf).expect("checked");
        let (uploaded, downloaded) = self
            .stream_parts(run.stream)
            .ok()
            .and_then(|(_, st)| match &st.kind {
                super::stream::Kind::Builtin(machine) => machine.perf_moved(),
                _ => None,
            })
            .unwrap_or((0, 0));
        // The machine's own report on the reset finds the run gone.
        self.reset_stream(run.stream);
        self.events.push_back(Event::PerfFailed {
            perf,
            peer: run.peer,
            error: PerfFailure::Timeout {
                uploaded,
                downloaded,
            },
        });
    }
}
