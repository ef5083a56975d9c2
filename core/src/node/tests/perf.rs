//! Perf runs between nodes, in memory: against our server, against a
//! server played by hand that breaks the protocol, and with sizes no
//! buffer could hold.

use super::*;
use crate::protocols::perf::{encode_header, PROTOCOL as PERF};
use crate::yamux::StreamId;
use stream::yamux_id;

/// Two plaintext nodes (perf moves megabytes), connected; node 1 serves
/// perf when `serve`.
fn perf_net(serve: bool) -> Net {
    let mut net = Net::with_security(2, &[Security::Plaintext]);
    net.nodes[1].serve_perf(serve);
    net.connect(0, 1);
    net
}

/// The same with stream windows that do not grow, so a long run moves a
/// known amount per round trip (256 KiB) and the test stays quick.
fn fixed_window_net() -> Net {
    let mut net = Net::with_security(2, &[Security::Plaintext]);
    for node in &mut net.nodes {
        node.config.yamux.max_window = node.config.yamux.initial_window;
    }
    net.nodes[1].serve_perf(true);
    net.connect(0, 1);
    net
}

/// How run `perf` ended at node 0, once it did.
fn outcome(net: &Net, perf: PerfId) -> Option<Event> {
    net.events[0]
        .iter()
        .find(|e| {
            matches!(e, Event::PerfDone { perf: p, .. } | Event::PerfFailed { perf: p, .. } if *p == perf)
        })
        .cloned()
}

/// Runs `params` from node 0 against node 1 and waits for the outcome.
fn run_perf(net: &mut Net, params: PerfParams) -> Event {
    let b = net.peer(1);
    let perf = net.nodes[0].perf(net.now, b, params).unwrap();
    net.run_until(Duration::from_secs(30), |net| outcome(net, perf).is_some());
    outcome(net, perf).unwrap()
}

/// A perf stream's memory on `node`: (bytes in `out`, `out`'s capacity,
/// bytes queued in yamux, bytes buffered for reading), one entry per perf
/// stream.
fn perf_streams(node: &Node) -> Vec<(usize, usize, usize, usize)> {
    let mut found = Vec::new();
    for c in node.conns.values() {
        let ConnState::Muxed(session) = &c.state else {
            continue;
        };
        for (id, st) in &c.streams {
            if st.protocol.as_deref() == Some(PERF) && matches!(st.kind, stream::Kind::Builtin(_)) {
                let sid = StreamId::new(*id).unwrap();
                found.push((
                    st.out.len(),
                    st.out.capacity(),
                    session.queued_bytes(sid).unwrap_or(0),
                    session.readable_bytes(sid).unwrap_or(0) + st.pending.len(),
                ));
            }
        }
    }
    found
}

/// What run `perf` had moved when it timed out (up, down); panics if it
/// ended otherwise.
fn timed_out(net: &Net, perf: PerfId) -> (u64, u64) {
    match outcome(net, perf).map(|e| failure(&e)) {
        Some(PerfFailure::Timeout {
            uploaded,
            downloaded,
        }) => (uploaded, downloaded),
        other => panic!("not a timeout: {other:?}"),
    }
}

fn stream_count(node: &Node) -> usize {
    node.conns.values().map(|c| c.streams.len()).sum()
}

#[test]
fn perf_against_our_server_uploads_downloads_and_both() {
    let mut net = perf_net(true);
    net.latency = Duration::from_millis(20);
    for (upload, download) in [
        (0, 0),
        (3 << 20, 0),
        (0, 3 << 20),
        (2 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 1),
    ] {
        let params = PerfParams { upload, download };
        let Event::PerfDone { peer, report, .. } = run_perf(&mut net, params) else {
            panic!("{upload}/{download}: {:#?}", net.events[0]);
        };
        assert_eq!(peer, net.peer(1));
        assert_eq!((report.uploaded, report.downloaded), (upload, download));
        // At least the close's round trip after the upload; the total
        // holds both phases.
        assert!(report.download >= Duration::from_millis(40), "{report:?}");
        assert!(
            report.total >= report.upload + report.download,
            "{report:?}"
        );
        // Each direction moves at most a 256 KiB window per round trip.
        let rtts = |bytes: u64| (bytes / (256 * 1024)) as u32;
        assert!(report.upload >= Duration::from_millis(40) * rtts(upload) / 2);
        assert!(report.download >= Duration::from_millis(40) * rtts(download) / 2);
        // Both sides free their streams.
        net.run_until(Duration::from_secs(1), |net| {
            stream_count(&net.nodes[0]) + stream_count(&net.nodes[1]) == 0
        });
    }
}

#[test]
fn perf_runs_in_small_reads_and_several_at_once() {
    let mut net = perf_net(true);
    net.chunk = 1000;
    let b = net.peer(1);
    let runs: Vec<(PerfId, u64, u64)> = (0..4u64)
        .map(|i| {
            let (upload, download) = (100_000 * i + 1, 300_000 - 50_000 * i);
            let params = PerfParams { upload, download };
            (
                net.nodes[0].perf(net.now, b, params).unwrap(),
                upload,
                download,
            )
        })
        .collect();
    net.run_until(Duration::from_secs(30), |net| {
        runs.iter().all(|(p, ..)| outcome(net, *p).is_some())
    });
    for (perf, upload, download) in runs {
        let Some(Event::PerfDone { report, .. }) = outcome(&net, perf) else {
            panic!("{perf}: {:?}", outcome(&net, perf));
        };
        assert_eq!((report.uploaded, report.downloaded), (upload, download));
    }
}

#[test]
fn perf_is_not_served_until_the_node_is_told_to() {
    let mut net = perf_net(false);
    let (a, b) = (net.peer(0), net.peer(1));
    assert!(!net.nodes[0]
        .peer_protocols(&b)
        .unwrap()
        .iter()
        .any(|p| p == PERF));
    let params = PerfParams {
        upload: 10,
        download: 10,
    };
    let failed = run_perf(&mut net, params);
    assert!(
        matches!(failed, Event::PerfFailed { error: PerfFailure::Unsupported, peer, .. } if peer == b),
        "{failed:?}"
    );
    // Turned on: identify push tells the peer, and runs go through.
    net.nodes[1].serve_perf(true);
    net.run_until(Duration::from_secs(5), |net| {
        net.nodes[0]
            .peer_protocols(&b)
            .is_some_and(|list| list.iter().any(|p| p == PERF))
    });
    assert!(matches!(run_perf(&mut net, params), Event::PerfDone { .. }));
    // Off again: the next run is refused by the server.
    net.nodes[1].serve_perf(false);
    net.run_until(Duration::from_secs(5), |net| {
        !net.nodes[0]
            .peer_protocols(&b)
            .unwrap()
            .iter()
            .any(|p| p == PERF)
    });
    let failed = run_perf(&mut net, params);
    assert!(matches!(
        failed,
        Event::PerfFailed {
            error: PerfFailure::Unsupported,
            ..
        }
    ));
    // Node 0 never served it.
    assert!(!net.nodes[1]
        .peer_protocols(&a)
        .unwrap()
        .iter()
        .any(|p| p == PERF));
}

#[test]
fn perf_commands_are_refused_when_they_cannot_run() {
    let mut net = perf_net(true);
    net.nodes[0].config.perf.max_runs = 1;
    let b = net.peer(1);
    let params = PerfParams::default();
    net.nodes[0].perf(net.now, b, params).unwrap();
    assert_eq!(
        net.nodes[0].perf(net.now, b, params),
        Err(PerfError::TooManyRuns)
    );
    let stranger = Keypair::from_secret_bytes([99; 32]).peer_id();
    net.nodes[0].config.perf.max_runs = 2;
    assert_eq!(
        net.nodes[0].perf(net.now, stranger, params),
        Err(PerfError::NotConnected)
    );
}

/// How node 1 breaks the protocol, playing the server by hand.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// Reads to the client's close, then sends this many bytes and closes.
    Answer(usize),
    /// Sends this many bytes at once, while the client uploads.
    Early(usize),
    /// Closes its side at once.
    CloseAtOnce,
    /// Resets the stream in the middle of the upload.
    Reset,
    /// Closes the connection once the upload is in.
    Hangup,
}

/// Node 1 playing the server by hand, as `how` says.
struct HandServer {
    how: Hostile,
    stream: Option<StreamHandle>,
    /// The first 8 bytes it read.
    request: Vec<u8>,
    /// All it read.
    read: usize,
    eof: bool,
    done: bool,
}

impl HandServer {
    /// Does what node 1's application would on its events now; returns
    /// whether it did anything.
    fn act(&mut self, net: &mut Net) -> bool {
        let now = net.now;
        let node = &mut net.nodes[1];
        let mut acted = false;
        if self.stream.is_none() {
            self.stream = net.events[1].iter().find_map(|e| match e {
                Event::InboundStream {
                    stream, protocol, ..
                } if protocol == PERF => Some(*stream),
                _ => None,
            });
            let Some(s) = self.stream else {
                return false;
            };
            acted = true;
            match self.how {
                Hostile::Early(n) => {
                    assert_eq!(node.stream_write(now, s, &vec![0; n]), Ok(n));
                }
                Hostile::CloseAtOnce => node.stream_close(now, s).unwrap(),
                _ => {}
            }
        }
        let Some(s) = self.stream.filter(|_| !self.done) else {
            return acted;
        };
        let mut buf = [0; 64 * 1024];
        loop {
            match node.stream_read(now, s, &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    acted = true;
                    let want = 8usize.saturating_sub(self.request.len()).min(n);
                    self.request.extend_from_slice(&buf[..want]);
                    self.read += n;
                    if matches!(self.how, Hostile::Reset) && self.read > 100_000 {
                        node.stream_reset(now, s);
                        self.done = true;
                        return true;
                    }
                }
                Err(_) => break,
            }
        }
        if self.eof {
            acted = true;
            self.done = true;
            match self.how {
                Hostile::Answer(n) => {
                    assert_eq!(node.stream_write(now, s, &vec![0; n]), Ok(n));
                    node.stream_close(now, s).unwrap();
                }
                Hostile::Hangup => node.close_connection(s.connection()),
                _ => {}
            }
        }
        acted
    }
}

/// Node 1 serves perf as an application protocol, misbehaving as `how`
/// (reading as soon as there is something to read); returns how node 0's
/// run of `params` ended, and the request node 1 read.
fn against_hostile(net: &mut Net, params: PerfParams, how: Hostile) -> (Event, Vec<u8>) {
    let b = net.peer(1);
    net.take_events(1);
    let perf = net.nodes[0].perf(net.now, b, params).unwrap();
    let mut server = HandServer {
        how,
        stream: None,
        request: Vec::new(),
        read: 0,
        eof: false,
        done: false,
    };
    for _ in 0..100_000 {
        while net.step() {}
        while server.act(net) {
            while net.step() {}
        }
        if let Some(e) = outcome(net, perf) {
            return (e, server.request);
        }
        net.advance();
    }
    panic!("no outcome: {:#?}", net.events[0]);
}

fn failure(event: &Event) -> PerfFailure {
    match event {
        Event::PerfFailed { error, .. } => *error,
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn a_server_sending_too_much_or_too_little_fails_the_run() {
    let mut net = perf_net(false);
    net.nodes[1].register_protocol(PERF).unwrap();
    let params = PerfParams {
        upload: 100_000,
        download: 100,
    };
    // The harness is a fair server when it answers what was asked.
    let (done, request) = against_hostile(&mut net, params, Hostile::Answer(100));
    assert!(matches!(done, Event::PerfDone { .. }), "{done:?}");
    assert_eq!(
        request,
        encode_header(100),
        "the spec's request: u64, big-endian"
    );
    let (e, _) = against_hostile(&mut net, params, Hostile::Answer(101));
    assert_eq!(failure(&e), PerfFailure::TooMuchData { requested: 100 });
    let (e, _) = against_hostile(&mut net, params, Hostile::Answer(99));
    assert_eq!(
        failure(&e),
        PerfFailure::TooLittleData {
            requested: 100,
            received: 99
        }
    );
    let (e, _) = against_hostile(&mut net, params, Hostile::Answer(200_000));
    assert_eq!(failure(&e), PerfFailure::TooMuchData { requested: 100 });
    // The connection is fine: only the streams failed.
    assert!(net.nodes[0].is_connected(&net.peer(1)));
}

#[test]
fn a_server_answering_early_resetting_or_hanging_up_fails_the_run() {
    let mut net = perf_net(false);
    net.nodes[1].register_protocol(PERF).unwrap();
    // An upload of several round trips, so the server acts while it runs.
    let params = PerfParams {
        upload: 4 << 20,
        download: 10,
    };
    let (e, _) = against_hostile(&mut net, params, Hostile::Early(1));
    assert_eq!(failure(&e), PerfFailure::AnsweredEarly);
    let (e, _) = against_hostile(&mut net, params, Hostile::CloseAtOnce);
    assert_eq!(failure(&e), PerfFailure::AnsweredEarly);
    let (e, _) = against_hostile(&mut net, params, Hostile::Reset);
    assert_eq!(failure(&e), PerfFailure::Stream);
    assert!(net.nodes[0].is_connected(&net.peer(1)));
    let (e, _) = against_hostile(&mut net, params, Hostile::Hangup);

    assert_eq!(failure(&e), PerfFailure::Stream);
}

#[test]
fn a_huge_download_holds_the_server_to_a_chunk_and_the_send_buffer() {
    let mut net = fixed_window_net();
    net.nodes[0].config.perf.timeout = Duration::from_secs(1);
    let send_buffer = net.nodes[1].config.yamux.max_stream_send_buffer;
    let b = net.peer(1);
    let conn = net.nodes[0].connections_to(&b).next().unwrap();
    let params = PerfParams {
        upload: 0,
        download: u64::MAX,
    };
    let perf = net.nodes[0].perf(net.now, b, params).unwrap();
    let mut peak = (0, 0);
    for steps in 0.. {
        if outcome(&net, perf).is_some() {
            break;
        }
        assert!(steps < 10_000, "the run never timed out");
        net.advance();
        for (out, cap, queued, _) in perf_streams(&net.nodes[1]) {
            assert!(
                out <= builtin::perf::CHUNK && cap <= 2 * builtin::perf::CHUNK,
                "{out}/{cap}"
            );
            assert!(queued <= send_buffer, "{queued}");
            peak = (peak.0.max(cap), peak.1.max(queued));
        }
    }
    // The timed-out run says what moved: the spec's timed measurement.
    let (uploaded, downloaded) = timed_out(&net, perf);
    assert_eq!(uploaded, 0);
    assert!(downloaded > 1 << 20, "{downloaded} bytes came");
    let ConnState::Muxed(session) = &net.nodes[0].conns[&conn].state else {
        panic!("connected");
    };
    // A second moved about 100 windows (25 MB): far more than any buffer
    // holds.
    let moved = session.stats().bytes_read_zero_copy;
    assert!(moved > 64 * send_buffer as u64, "{moved}");
    assert!(peak.1 > 0, "the server's send buffer was used");
    // The reset reaches the server, which drops the stream.
    net.run_until(Duration::from_secs(1), |net| {
        perf_streams(&net.nodes[1]).is_empty()
    });
}

#[test]
fn a_client_that_never_reads_holds_the_server_at_its_window() {
    let mut net = fixed_window_net();
    let b = net.peer(1);
    // Node 0 opens perf as an application stream: a request for
    // everything, a close, and no read ever.
    let stream = net.nodes[0].open_stream(net.now, b, [PERF]).unwrap();
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::StreamOpened { .. }))
    });
    let now = net.now;
    assert_eq!(
        net.nodes[0].stream_write(now, stream, &encode_header(u64::MAX)),
        Ok(8)
    );
    net.nodes[0].stream_close(now, stream).unwrap();
    let send_buffer = net.nodes[1].config.yamux.max_stream_send_buffer;
    for _ in 0..200 {
        net.advance();
        for (out, _, queued, _) in perf_streams(&net.nodes[1]) {
            assert!(out <= builtin::perf::CHUNK && queued <= send_buffer);
        }
    }
    let conn = stream.connection();
    let ConnState::Muxed(session) = &net.nodes[0].conns[&conn].state else {
        panic!("connected");
    };
    // What reached the client is one window, unread
    let window = net.nodes[0].config.yamux.initial_window as usize;
    // (less the protocol's confirmation, which the negotiation read).
    let unread = session.readable_bytes(yamux_id(stream)).unwrap();
    assert!(unread <= window && unread > window - 64, "{unread}");
    let served = perf_streams(&net.nodes[1]);
    assert_eq!(served.len(), 1, "still served, waiting for room");
    assert!(served[0].2 <= send_buffer);
}

#[test]
fn an_endless_upload_costs_the_server_nothing_and_the_client_a_chunk() {
    let mut net = fixed_window_net();
    net.nodes[0].config.perf.timeout = Duration::from_millis(500);
    let b = net.peer(1);
    let conn = net.nodes[0].connections_to(&b).next().unwrap();
    let send_buffer = net.nodes[0].config.yamux.max_stream_send_buffer;
    let window = net.nodes[1].config.yamux.initial_window as usize;
    let params = PerfParams {
        upload: u64::MAX,
        download: 0,
    };
    let perf = net.nodes[0].perf(net.now, b, params).unwrap();
    for steps in 0.. {
        if outcome(&net, perf).is_some() {
            break;
        }
        assert!(steps < 10_000, "the run never timed out");
        net.advance();
        for (out, cap, queued, _) in perf_streams(&net.nodes[0]) {
            assert!(out <= builtin::perf::CHUNK && cap <= 2 * builtin::perf::CHUNK);
            assert!(queued <= send_buffer);
        }
        for (out, _, _, readable) in perf_streams(&net.nodes[1]) {
            assert_eq!(out, 0, "the server says nothing while it reads");
            assert!(readable <= window);
        }
    }
    let (uploaded, downloaded) = timed_out(&net, perf);
    assert!(uploaded > 1 << 20, "{uploaded} bytes went");
    assert_eq!(downloaded, 0);
    let ConnState::Muxed(session) = &net.nodes[0].conns[&conn].state else {
        panic!("connected");
    };
    let sent = session.stats().bytes_written;
    assert!(sent > 32 * send_buffer as u64, "{sent}");
}

#[test]
fn perf_runs_on_a_limited_connection_only_where_both_allow_it() {
    let mut net = perf_net(true);
    let b = net.peer(1);
    // A relayed connection with a limit, as far as perf is concerned.
    for node in &mut net.nodes {
        for c in node.conns.values_mut() {
            c.limited = true;
        }
    }
    let params = PerfParams {
        upload: 1000,
        download: 1000,
    };
    assert_eq!(
        net.nodes[0].perf(net.now, b, params),
        Err(PerfError::Limited)
    );
    // We allow it; the server does not serve it there.
    net.nodes[0].allow_on_limited(PERF);
    let failed = run_perf(&mut net, params);
    assert_eq!(failure(&failed), PerfFailure::Unsupported);
    net.nodes[1].allow_on_limited(PERF);
    assert!(matches!(run_perf(&mut net, params), Event::PerfDone { .. }));
}

#[test]
fn served_runs_are_bounded_node_wide_and_the_bound_frees_as_runs_end() {
    let mut net = perf_net(true);
    net.nodes[1].config.perf.max_served = 1;
    let b = net.peer(1);
    // Two runs at once: the server takes one, resets the other.
    let big = PerfParams {
        upload: 1 << 20,
        download: 1 << 20,
    };
    let first = net.nodes[0].perf(net.now, b, big).unwrap();
    let second = net.nodes[0].perf(net.now, b, big).unwrap();
    net.run_until(Duration::from_secs(30), |net| {
        outcome(net, first).is_some() && outcome(net, second).is_some()
    });
    assert!(
        matches!(outcome(&net, first), Some(Event::PerfDone { .. })),
        "{:?}",
        outcome(&net, first)
    );
    assert!(
        matches!(outcome(&net, second), Some(Event::PerfFailed { .. })),
        "{:?}",
        outcome(&net, second)
    );
    // Done runs and lost streams both give their place back.
    assert_eq!(net.nodes[1].perf_served, 0);
    let Event::PerfDone { report, .. } = run_perf(
        &mut net,
        PerfParams {
            upload: 10,
            download: 20,
        },
    ) else {
        panic!("{:#?}", net.events[0]);
    };
    assert_eq!((report.uploaded, report.downloaded), (10, 20));
    let third = net.nodes[0].perf(net.now, b, big).unwrap();
    net.run_until(Duration::from_secs(5), |net| net.nodes[1].perf_served == 1);
    let conn = net.nodes[0].connections_to(&b).next().unwrap();
    net.nodes[0].close_connection(conn);
    net.run_until(Duration::from_secs(5), |net| outcome(net, third).is_some());
    net.run_until(Duration::from_secs(30), |net| net.nodes[1].conns.is_empty());
    assert_eq!(net.nodes[1].perf_served, 0, "a lost run frees its place");
    // Zero is refused up front.
    let mut config = net.nodes[1].config.clone();
    config.perf.max_served = 0;
    assert_eq!(
        Node::new(net.now, config).err(),
        Some(ConfigError::Zero("perf.max_served"))
    );
}
