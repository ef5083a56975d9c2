//! Two sessions over an in-memory link on a virtual clock.

mod common;

use std::time::Duration;

use common::{frames, read_all, write_all, End, Pair};
use sansp2p::time::Instant;
use sansp2p::yamux::{
    CloseError, Config, ConnectionError, Event, GoAwayCode, Header, OpenError, ReadError, StreamId,
    WriteError,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn take(events: &mut std::collections::VecDeque<Event>, wanted: &Event) -> bool {
    match events.iter().position(|e| e == wanted) {
        Some(i) => {
            events.remove(i);
            true
        }
        None => false,
    }
}

#[test]
fn open_write_read_close_client_to_server() {
    let mut p = Pair::new();
    let id = p.client.open_stream().unwrap();
    assert_eq!(id.get(), 1);
    p.client.write(id, b"request").unwrap();
    p.client.close(id).unwrap();
    p.drive();
    assert!(take(&mut p.server_events, &Event::InboundStream { id }));
    p.server.accept(id).unwrap();
    assert!(p.server.poll_event() == Some(Event::StreamReadable { id }));
    assert_eq!(
        read_all(&mut p.server, id, 64),
        (b"request".to_vec(), End::Eof)
    );
    p.server.write(id, b"response").unwrap();
    p.server.close(id).unwrap();
    p.drive();
    assert!(take(&mut p.client_events, &Event::StreamReadable { id }));
    assert_eq!(
        read_all(&mut p.client, id, 64),
        (b"response".to_vec(), End::Eof)
    );
    p.drive();
    // Both ends freed the stream once they had read the end.
    assert!(!p.client.contains_stream(id));
    assert!(!p.server.contains_stream(id));
    assert!(take(&mut p.client_events, &Event::StreamClosed { id }));
    assert!(take(&mut p.server_events, &Event::StreamClosed { id }));
    assert_eq!(p.client.stream_count(), 0);
    assert_eq!(p.server.stream_count(), 0);
    assert_eq!(p.client.receive_budget_used(), 0);
}

#[test]
fn open_write_read_close_server_to_client() {
    let mut p = Pair::new();
    let id = p.open_server_stream();
    assert_eq!(id.get(), 2);
    p.server.write(id, b"push").unwrap();
    p.drive();
    assert!(take(&mut p.client_events, &Event::StreamReadable { id }));
    assert_eq!(
        read_all(&mut p.client, id, 3),
        (b"push".to_vec(), End::Blocked)
    );
    p.client.write(id, b"ack").unwrap();
    p.client.close(id).unwrap();
    p.server.close(id).unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.server, id, 3), (b"ack".to_vec(), End::Eof));
    assert_eq!(read_all(&mut p.client, id, 3), (vec![], End::Eof));
    p.drive();
    assert_eq!(p.client.stream_count(), 0);
    assert_eq!(p.server.stream_count(), 0);
}

#[test]
fn ids_have_role_parity() {
    let mut p = Pair::new();
    let c: Vec<u32> = (0..3)
        .map(|_| p.client.open_stream().unwrap().get())
        .collect();
    let s: Vec<u32> = (0..3)
        .map(|_| p.server.open_stream().unwrap().get())
        .collect();
    assert_eq!(c, [1, 3, 5]);
    assert_eq!(s, [2, 4, 6]);
    p.drive();
    assert_eq!(p.client.stream_count(), 6);
    assert_eq!(p.server.stream_count(), 6);
}

#[test]
fn data_before_ack_is_buffered_until_accept() {
    let mut p = Pair::new().recording();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"early").unwrap();
    p.drive();
    // SYN went first as a WindowUpdate, then Data without waiting for ACK.
    let f = frames(&p.to_server.log);
    let syn = f
        .iter()
        .position(|h| matches!(h, Header::WindowUpdate { flags, .. } if flags.syn()));
    let data = f.iter().position(|h| matches!(h, Header::Data { .. }));
    assert!(syn.unwrap() < data.unwrap());
    assert_eq!(p.server.readable_bytes(id), Some(5));
    assert_eq!(p.server.read(id, &mut [0; 8]), Err(ReadError::NotAccepted));
    assert!(!p.server_events.contains(&Event::StreamReadable { id }));
    p.server.accept(id).unwrap();
    p.step();
    assert!(take(&mut p.server_events, &Event::StreamReadable { id }));
    assert_eq!(
        read_all(&mut p.server, id, 8),
        (b"early".to_vec(), End::Blocked)
    );
    p.drive();
    // The ACK reached the client.
    let f = frames(&p.to_client.log);
    assert!(f
        .iter()
        .any(|h| matches!(h, Header::WindowUpdate { flags, .. } if flags.ack())));
}

#[test]
fn read_sizes_swept_down_to_one_byte() {
    for read_size in [
        1usize,
        2,
        3,
        5,
        11,
        12,
        13,
        24,
        100,
        4096,
        70_000,
        usize::MAX,
    ] {
        for batch in [None, Some(13), Some(1000)] {
            let mut p = Pair::new();
            p.read_size = read_size;
            p.transmit_batch = batch;
            let a = p.open_client_stream();
            let b = p.open_server_stream();
            let up = pattern(40_000, 1);
            let down = pattern(30_000, 2);
            p.client.write(a, &up).unwrap();
            p.client.close(a).unwrap();
            p.server.write(b, &down).unwrap();
            p.server.close(b).unwrap();
            p.drive();
            let (got_up, end) = read_all(&mut p.server, a, read_size.min(777));
            assert_eq!(
                (got_up == up, end),
                (true, End::Eof),
                "read {read_size} batch {batch:?}"
            );
            let (got_down, end) = read_all(&mut p.client, b, read_size.min(777));
            assert_eq!((got_down == down, end), (true, End::Eof));
        }
    }
}

#[test]
fn large_transfer_needs_window_updates() {
    let mut p = Pair::new().recording();
    let id = p.open_client_stream();
    let data = pattern(3 * 1024 * 1024 + 17, 9);
    let mut got = Vec::new();
    write_all(&mut p, true, id, &data, |p| {
        got.extend(read_all(&mut p.server, id, 65536).0)
    });
    p.client.close(id).unwrap();
    p.drive();
    let (rest, end) = read_all(&mut p.server, id, 65536);
    got.extend(rest);
    assert_eq!(end, End::Eof);
    assert!(got == data);
    let updates = frames(&p.to_client.log)
        .into_iter()
        .filter(|h| matches!(h, Header::WindowUpdate { delta, .. } if *delta > 0))
        .count();
    assert!(updates >= 3, "{updates} window updates");
    // No Data frame exceeded the split size.
    for h in frames(&p.to_server.log) {
        if let Header::Data { len, .. } = h {
            assert!(len <= 16 * 1024);
        }
    }
}

#[test]
fn many_streams_interleave_round_robin() {
    let mut p = Pair::new().recording();
    let ids: Vec<StreamId> = (0..64).map(|_| p.open_client_stream()).collect();
    let start = frames(&p.to_server.log).len();
    for (i, &id) in ids.iter().enumerate() {
        p.client.write(id, &pattern(100_000, i as u8)).unwrap();
        p.client.close(id).unwrap();
    }
    p.drive();
    // The first 64 data frames are one per stream: nobody waits for another's
    // whole write.
    let data_ids: Vec<u32> = frames(&p.to_server.log)[start..]
        .iter()
        .filter_map(|h| match h {
            Header::Data { stream, .. } => Some(stream.get()),
            _ => None,
        })
        .collect();
    let mut first: Vec<u32> = data_ids[..64].to_vec();
    first.sort_unstable();
    first.dedup();
    assert_eq!(first.len(), 64);
    for (i, &id) in ids.iter().enumerate() {
        let (got, end) = read_all(&mut p.server, id, 4096);
        assert_eq!(end, End::Eof);
        assert!(got == pattern(100_000, i as u8), "stream {id}");
    }
}

#[test]
fn half_close_keeps_the_other_direction() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.client.close(id).unwrap();
    assert_eq!(p.client.write(id, b"x"), Err(WriteError::Closed));
    p.drive();
    assert_eq!(read_all(&mut p.server, id, 16), (vec![], End::Eof));
    for i in 0..5 {
        p.server.write(id, &pattern(1000, i)).unwrap();
        p.drive();
        assert_eq!(read_all(&mut p.client, id, 16).0, pattern(1000, i));
    }
    assert!(p.client.contains_stream(id));
    p.server.close(id).unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.client, id, 16), (vec![], End::Eof));
    assert!(!p.client.contains_stream(id));
    assert!(!p.server.contains_stream(id));
}

#[test]
fn buffered_data_is_readable_after_fin() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    let data = pattern(200_000, 3);
    p.server.write(id, &data).unwrap();
    p.server.close(id).unwrap();
    p.drive();
    // Nothing read yet; FIN already arrived behind the data.
    assert_eq!(p.client.readable_bytes(id), Some(200_000));
    let (got, end) = read_all(&mut p.client, id, 999);
    assert!(got == data);
    assert_eq!(end, End::Eof);
}

#[test]
fn reset_discards_and_reports() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.server.write(id, &pattern(50_000, 4)).unwrap();
    p.drive();
    assert_eq!(p.client.readable_bytes(id), Some(50_000));
    p.server.reset(id).unwrap();
    assert!(!p.server.contains_stream(id));
    p.drive();
    assert!(take(
        &mut p.client_events,
        &Event::StreamReset { id, code: 0 }
    ));
    // The event was polled: the stream is gone; unread data was discarded.
    assert!(!p.client.contains_stream(id));
    assert_eq!(
        p.client.read(id, &mut [0; 8]),
        Err(ReadError::UnknownStream)
    );
}

#[test]
fn reset_observed_through_read_and_write() {
    let mut p = Pair::new();
    let a = p.open_client_stream();
    let b = p.open_client_stream();
    p.client.write(a, b"in flight").unwrap();
    // Reset arrives before the client polls its events.
    p.server.reset_with_code(a, 7).unwrap();
    p.server.reset(b).unwrap();
    let bytes = common::drain(&mut p.server, p.now);
    assert_eq!(p.client.handle_read(p.now, &bytes), bytes.len());
    assert_eq!(
        p.client.read(a, &mut [0; 4]),
        Err(ReadError::Reset { code: 7 })
    );
    assert!(!p.client.contains_stream(a));
    assert_eq!(p.client.write(b, b"x"), Err(WriteError::Reset { code: 0 }));
    assert!(!p.client.contains_stream(b));
    assert_eq!(p.client.close(b), Err(CloseError::UnknownStream));
    // The events still arrive and are harmless.
    let ev = common::events(&mut p.client);
    assert!(ev.contains(&Event::StreamReset { id: a, code: 7 }));
    // Data that was in flight towards the reset stream is dropped by the server.
    p.drive();
    assert_eq!(p.server.stream_count(), 0);
    assert_eq!(p.client.stream_count(), 0);
}

#[test]
fn reject_sends_rst() {
    let mut p = Pair::new();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"hello?").unwrap();
    p.drive();
    assert!(take(&mut p.server_events, &Event::InboundStream { id }));
    p.server.reject(id).unwrap();
    assert_eq!(p.server.stream_count(), 0);
    p.drive();
    assert!(take(
        &mut p.client_events,
        &Event::StreamReset { id, code: 0 }
    ));
    assert_eq!(p.client.stream_count(), 0);
}

#[test]
fn write_backpressure_and_writable_event() {
    let cfg = Config {
        max_stream_send_buffer: 1000,
        ..Config::default()
    };
    let mut p = Pair::with_config(cfg, Config::default());
    let id = p.open_client_stream();
    assert_eq!(p.client.write(id, &[1; 1500]), Ok(1000));
    assert_eq!(p.client.write(id, &[1; 10]), Err(WriteError::Blocked));
    p.drive();
    assert!(take(&mut p.client_events, &Event::StreamWritable { id }));
    assert_eq!(p.client.write(id, &[1; 10]), Ok(10));
}

#[test]
fn peer_that_never_reads_cannot_grow_our_buffers() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    let chunk = vec![7u8; 64 * 1024];
    let mut accepted = 0usize;
    for _ in 0..100 {
        match p.client.write(id, &chunk) {
            Ok(n) => accepted += n,
            Err(WriteError::Blocked) => {}
            Err(e) => panic!("{e}"),
        }
        p.drive();
    }
    // Server never reads: 256 KiB window at the server, 256 KiB send buffer here.
    assert_eq!(p.server.readable_bytes(id), Some(256 * 1024));
    assert_eq!(p.client.queued_bytes(id), Some(256 * 1024));
    assert_eq!(accepted, 512 * 1024);
    assert_eq!(p.client.send_window(id), Some(0));
}

#[test]
fn go_away_lets_streams_finish() {
    let mut p = Pair::new();
    let a = p.open_client_stream();
    let b = p.open_server_stream();
    p.client.go_away(GoAwayCode::NORMAL).unwrap();
    assert_eq!(p.client.open_stream(), Err(OpenError::GoingAway));
    p.drive();
    assert!(take(
        &mut p.server_events,
        &Event::GoAwayReceived {
            code: GoAwayCode::NORMAL
        }
    ));
    assert_eq!(
        p.server.open_stream(),
        Err(OpenError::RemoteGoAway(GoAwayCode::NORMAL))
    );
    // Existing streams carry on in both directions.
    p.client.write(a, b"still").unwrap();
    p.server.write(b, b"here").unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.server, a, 64).0, b"still");
    assert_eq!(read_all(&mut p.client, b, 64).0, b"here");
    assert!(!p.client.is_closed());
    for id in [a, b] {
        p.client.close(id).unwrap();
        p.server.close(id).unwrap();
    }
    p.drive();
    for id in [a, b] {
        assert_eq!(read_all(&mut p.client, id, 64).1, End::Eof);
        assert_eq!(read_all(&mut p.server, id, 64).1, End::Eof);
    }
    p.drive();
    assert!(p.client.is_closed());
    assert!(p.client_events.contains(&Event::Closed { error: None }));
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn inbound_syn_after_our_go_away_is_refused() {
    let mut p = Pair::new();
    let keep = p.open_client_stream();
    p.server.go_away(GoAwayCode::NORMAL).unwrap();
    // The client opens before it learns of the GoAway.
    let id = p.client.open_stream().unwrap();
    p.drive();
    assert!(!p.server_events.contains(&Event::InboundStream { id }));
    assert!(take(
        &mut p.client_events,
        &Event::StreamReset { id, code: 0 }
    ));
    assert!(p.server.contains_stream(keep));
}

#[test]
fn ping_reports_rtt() {
    let mut p = Pair::new();
    p.latency = Duration::from_millis(40);
    p.drive();
    assert_eq!(p.client.rtt(), Some(Duration::from_millis(80)));
    p.client.ping().unwrap();
    p.drive();
    assert!(take(
        &mut p.client_events,
        &Event::Pong {
            rtt: Duration::from_millis(80)
        }
    ));
}

#[test]
fn keepalive_pings_while_peer_alive() {
    let mut p = Pair::new().recording();
    p.latency = Duration::from_millis(10);
    let end = p.now + Duration::from_secs(300);
    p.run_until(end);
    assert!(!p.client.is_closed() && !p.server.is_closed());
    let pings = frames(&p.to_server.log)
        .into_iter()
        .filter(|h| {
            matches!(
                h,
                Header::Ping {
                    kind: sansp2p::yamux::PingKind::Request,
                    ..
                }
            )
        })
        .count();
    // One initial ping plus one every 30 s.
    assert!((9..=11).contains(&pings), "{pings} pings");
}

#[test]
fn keepalive_timeout_when_peer_goes_silent() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.drive();
    let silent_from = p.now;
    // The server vanishes: nothing it sends arrives any more, nothing reaches it.
    let mut now = p.now;
    let mut closed_at = None;
    for _ in 0..100 {
        let Some(t) = p.client.poll_timeout() else {
            break;
        };
        now = now.max(t);
        p.client.handle_timeout(now);
        let _ = common::drain(&mut p.client, now);
        if p.client.is_closed() {
            closed_at = Some(now);
            break;
        }
    }
    let closed_at = closed_at.expect("client closed");
    assert_eq!(closed_at - silent_from, Duration::from_secs(40));
    let ev = common::events(&mut p.client);
    assert!(ev.contains(&Event::Closed {
        error: Some(ConnectionError::KeepAliveTimeout(Duration::from_secs(10)))
    }));
    assert_eq!(
        p.client.read(id, &mut [0; 4]),
        Err(ReadError::SessionClosed)
    );
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn auto_tuning_reaches_max_window_on_high_latency_link() {
    let mut p = Pair::new();
    p.latency = Duration::from_millis(50); // 100 ms RTT
    let id = p.open_client_stream();
    assert_eq!(p.server.rtt(), Some(Duration::from_millis(100)));
    let chunk = vec![0x5a; 1 << 20];
    let mut sent = 0u64;
    let mut received = 0u64;
    let start = p.now;
    let mut buf = vec![0u8; 1 << 20];
    while p.server.receive_window(id) < Some(16 << 20) {
        assert!(
            sent < 1 << 30,
            "window stuck at {:?}",
            p.server.receive_window(id)
        );
        if let Ok(n) = p.client.write(id, &chunk) {
            sent += n as u64;
        }
        p.step();
        while let Ok(n) = p.server.read(id, &mut buf) {
            received += n as u64;
        }
        // Let the link move on to the next arrival.
        let next = p.now + Duration::from_millis(1);
        p.run_until(next);
    }
    let elapsed = p.now - start;
    assert_eq!(p.server.receive_window(id), Some(16 << 20));
    // Doubling once per round trip: 256 KiB -> 16 MiB is 6 doublings.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(received > 0);
    // Throughput then is bounded by the window: 16 MiB per 100 ms RTT.
    let t0 = p.now;
    let r0 = received;
    while p.now - t0 < Duration::from_secs(2) {
        if let Ok(n) = p.client.write(id, &chunk) {
            sent += n as u64;
        }
        p.step();
        while let Ok(n) = p.server.read(id, &mut buf) {
            received += n as u64;
        }
        let next = p.now + Duration::from_millis(1);
        p.run_until(next);
    }
    let rate = (received - r0) as f64 / 2.0;
    eprintln!("ramp {elapsed:?}, steady {rate} B/s");
    // Send buffer of 256 KiB per 1 ms tick caps us at 256 MB/s; the window
    // alone would allow 160 MB/s. Anything near that means no stall.
    assert!(rate > 80e6, "steady rate {rate} B/s");
    let _ = sent;
}

#[test]
fn ack_backlog_refuses_then_recovers() {
    let cfg = Config {
        ack_backlog: 2,
        ..Config::default()
    };
    let mut p = Pair::with_config(cfg, Config::default());
    let a = p.client.open_stream().unwrap();
    let _b = p.client.open_stream().unwrap();
    assert_eq!(p.client.open_stream(), Err(OpenError::AckBacklogFull));
    p.drive();
    p.server.accept(a).unwrap();
    p.drive();
    assert!(take(&mut p.client_events, &Event::StreamsAvailable));
    assert!(p.client.open_stream().is_ok());
}

#[test]
fn accept_backlog_overflow_is_reset() {
    let cfg = Config {
        accept_backlog: 2,
        ..Config::default()
    };
    let mut p = Pair::with_config(Config::default(), cfg);
    let ids: Vec<StreamId> = (0..3).map(|_| p.client.open_stream().unwrap()).collect();
    p.drive();
    assert!(take(
        &mut p.server_events,
        &Event::InboundStream { id: ids[0] }
    ));
    assert!(take(
        &mut p.server_events,
        &Event::InboundStream { id: ids[1] }
    ));
    assert!(!p
        .server_events
        .iter()
        .any(|e| matches!(e, Event::InboundStream { .. })));
    assert!(take(
        &mut p.client_events,
        &Event::StreamReset {
            id: ids[2],
            code: 0
        }
    ));
    assert_eq!(p.server.stream_count(), 2);
}

#[test]
fn max_streams_limits_both_directions() {
    let cfg = Config {
        max_streams: 3,
        ack_backlog: 3,
        accept_backlog: 3,
        ..Config::default()
    };
    let mut p = Pair::with_config(cfg.clone(), cfg);
    for _ in 0..3 {
        p.open_client_stream();
    }
    assert_eq!(p.client.open_stream(), Err(OpenError::TooManyStreams));
    let id = p.server.open_stream();
    assert_eq!(id, Err(OpenError::TooManyStreams));
}

#[test]
fn inbound_over_max_streams_is_reset() {
    let small = Config {
        max_streams: 2,
        ack_backlog: 2,
        accept_backlog: 2,
        ..Config::default()
    };
    let mut p = Pair::with_config(Config::default(), small);
    let a = p.open_client_stream();
    let b = p.open_client_stream();
    let c = p.client.open_stream().unwrap();
    p.drive();
    assert!(take(
        &mut p.client_events,
        &Event::StreamReset { id: c, code: 0 }
    ));
    assert!(p.server.contains_stream(a) && p.server.contains_stream(b));
}

#[test]
fn stream_ids_exhaust() {
    let mut p = Pair::new();
    p.client.set_next_stream_id(u32::MAX - 4);
    let last = p.client.open_stream().unwrap();
    assert_eq!(last.get(), u32::MAX - 4);
    assert_eq!(p.client.open_stream().unwrap().get(), u32::MAX - 2);
    assert_eq!(p.client.open_stream(), Err(OpenError::IdsExhausted));
    p.server.set_next_stream_id(u32::MAX - 3);
    assert_eq!(p.server.open_stream().unwrap().get(), u32::MAX - 3);
    assert_eq!(p.server.open_stream(), Err(OpenError::IdsExhausted));
    p.drive();
    assert_eq!(p.client.stream_count(), 3);
}

#[test]
fn eof_closes_session() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.server.write(id, b"tail").unwrap();
    p.server.close(id).unwrap();
    p.drive();
    p.client.handle_eof(p.now);
    // The stream's data was complete: EOF is orderly.
    assert!(common::events(&mut p.client).contains(&Event::Closed { error: None }));
    assert_eq!(
        read_all(&mut p.client, id, 16),
        (b"tail".to_vec(), End::Eof)
    );

    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.client.handle_eof(p.now);
    assert!(common::events(&mut p.client).contains(&Event::Closed {
        error: Some(ConnectionError::TransportClosed)
    }));
    assert_eq!(
        p.client.read(id, &mut [0; 4]),
        Err(ReadError::SessionClosed)
    );
    assert_eq!(p.client.write(id, b"x"), Err(WriteError::SessionClosed));
    assert_eq!(p.client.open_stream(), Err(OpenError::SessionClosed));
}

#[test]
fn spurious_timeouts_are_harmless() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    for ms in 0..100 {
        p.client.handle_timeout(Instant::from_millis(1_000 + ms));
        p.server.handle_timeout(Instant::from_millis(1_000 + ms));
    }
    p.client.write(id, b"ok").unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.server, id, 8).0, b"ok");
    assert!(!p.client.is_closed());
}

#[test]
fn control_frames_and_pings_go_before_queued_data() {
    let mut p = Pair::new();
    let a = p.open_client_stream();
    let b = p.open_client_stream();
    p.client.write(a, &pattern(200_000, 1)).unwrap();
    p.client.write(b, &pattern(200_000, 2)).unwrap();
    let first = p.client.poll_transmit(p.now).unwrap();
    assert!(!first.payload.is_empty());
    // Data is queued; now a ping, a reset and a new stream's SYN.
    p.client.ping().unwrap();
    let c = p.client.open_stream().unwrap();
    p.client.reset(b).unwrap();
    let next: Vec<Header> = (0..3)
        .map(|_| Header::decode(&p.client.poll_transmit(p.now).unwrap().header).unwrap())
        .collect();
    assert!(matches!(next[0], Header::Ping { .. }));
    assert!(
        matches!(next[1], Header::WindowUpdate { stream, flags, .. } if stream == b && flags.rst)
    );
    assert!(
        matches!(next[2], Header::WindowUpdate { stream, flags, .. } if stream == c && flags.syn())
    );
    // Then data resumes, only for `a` (b was reset).
    let t = p.client.poll_transmit(p.now).unwrap();
    assert!(
        matches!(Header::decode(&t.header).unwrap(), Header::Data { stream, .. } if stream == a)
    );
}

#[test]
fn rtt_sample_excludes_our_own_queue() {
    let mut p = Pair::new();
    p.latency = Duration::from_millis(25);
    let id = p.open_client_stream();
    p.client.write(id, &pattern(256 * 1024, 3)).unwrap();
    p.client.ping().unwrap();
    // The ping is handed out before any of the 16 queued data frames.
    let first = p.client.poll_transmit(p.now).unwrap();
    assert!(matches!(
        Header::decode(&first.header).unwrap(),
        Header::Ping { .. }
    ));
    let mut wire = Vec::new();
    first.write_to(&mut wire);
    p.to_server.push(p.now + p.latency, wire);
    p.drive();
    assert!(p.client_events.contains(&Event::Pong {
        rtt: Duration::from_millis(50)
    }));
}

#[test]
fn larger_initial_window_is_announced_in_syn_and_ack() {
    let cfg = Config {
        initial_window: 1 << 20,
        max_streams: 64,
        ..Config::default()
    };
    let mut p = Pair::with_config(cfg.clone(), cfg).recording();
    let id = p.open_client_stream();
    let f = frames(&p.to_server.log);
    assert!(f.contains(&Header::WindowUpdate {
        stream: id,
        flags: sansp2p::yamux::StreamFlags::SYN,
        delta: (1 << 20) - 256 * 1024
    }));
    let f = frames(&p.to_client.log);
    assert!(f.contains(&Header::WindowUpdate {
        stream: id,
        flags: sansp2p::yamux::StreamFlags::ACK,
        delta: (1 << 20) - 256 * 1024
    }));
    assert_eq!(p.client.send_window(id), Some(1 << 20));
    assert_eq!(p.server.send_window(id), Some(1 << 20));
    // The client may now send 1 MiB without any further update.
    p.client.write(id, &pattern(200_000, 0)).unwrap();
    p.drive();
    assert_eq!(p.client.send_window(id), Some((1 << 20) - 200_000));
}

#[test]
fn transmit_into_respects_the_limit() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    p.client.write(id, &pattern(100_000, 5)).unwrap();
    let mut out = Vec::new();
    for max in [13usize, 14, 20, 100, 5000] {
        out.clear();
        let n = p.client.poll_transmit_into(p.now, &mut out, max);
        assert!(n <= max && n == out.len() && n > 0, "max {max} n {n}");
        // Whole frames only.
        assert_eq!(
            frames(&out)
                .iter()
                .map(|h| 12
                    + match h {
                        Header::Data { len, .. } => *len as usize,
                        _ => 0,
                    })
                .sum::<usize>(),
            n
        );
    }
    assert_eq!(p.client.poll_transmit_into(p.now, &mut out, 11), 0);
}

#[test]
fn readable_and_writable_events_are_edge_triggered() {
    let mut p = Pair::new();
    let id = p.open_client_stream();
    for _ in 0..3 {
        p.server.write(id, b"abc").unwrap();
        p.drive();
    }
    // One event for three arrivals, until a read finds the buffer empty.
    let n = p
        .client_events
        .iter()
        .filter(|e| **e == Event::StreamReadable { id })
        .count();
    assert_eq!(n, 1);
    p.client_events.clear();
    assert_eq!(
        read_all(&mut p.client, id, 100),
        (b"abcabcabc".to_vec(), End::Blocked)
    );
    p.server.write(id, b"d").unwrap();
    p.drive();
    assert_eq!(
        p.client_events
            .iter()
            .filter(|e| **e == Event::StreamReadable { id })
            .count(),
        1
    );
}

/// go-yamux#136: on a bandwidth-limited path the window must keep growing
/// until it stops being the bottleneck, not self-block near 2x the initial
/// window. 40 MB/s with a 100 ms RTT needs a window of about 4 MB.
#[test]
fn auto_tuning_fills_a_bandwidth_limited_long_path() {
    let mut p = Pair::new();
    p.latency = Duration::from_millis(50);
    p.bandwidth = Some(40_000_000);
    let id = p.open_client_stream();
    let chunk = vec![0x11; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    let mut tick = |p: &mut Pair, received: &mut u64| {
        let _ = p.client.write(id, &chunk);
        p.step();
        while let Ok(n) = p.server.read(id, &mut buf) {
            *received += n as u64;
        }
        let next = p.now + Duration::from_millis(1);
        p.run_until(next);
    };
    // Ramp up for 3 s, then measure 2 s.
    let t0 = p.now;
    while p.now - t0 < Duration::from_secs(3) {
        tick(&mut p, &mut received);
    }
    let window = p.server.receive_window(id).unwrap();
    let r0 = received;
    let t1 = p.now;
    while p.now - t1 < Duration::from_secs(2) {
        tick(&mut p, &mut received);
    }
    let rate = (received - r0) as f64 / 2.0;
    eprintln!("window {window}, steady {rate:.0} B/s");
    assert!(window >= 4 << 20, "window stuck at {window}");
    assert!(rate > 0.9 * 40e6, "steady rate {rate} B/s of 40e6");
}
