//! The built-in machines on their own, fed by hand.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::*;
use crate::identity::Keypair;
use crate::protocols::{identify as wire, ping as ping_wire};
use crate::varint;

/// A node that always draws `0xAB` and describes itself with key `[1; 32]`.
struct Fake;

impl Local for Fake {
    fn identify_info(&self) -> wire::Info {
        wire::Info {
            public_key: Keypair::from_secret_bytes([1; 32]).public(),
            protocol_version: String::from("ipfs/0.1.0"),
            agent_version: String::from("test"),
            listen_addrs: Vec::new(),
            observed_addr: None,
            protocols: vec![String::from(ping_wire::PROTOCOL)],
        }
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        buf.fill(0xAB);
    }
}

fn framed_info() -> Vec<u8> {
    let mut out = Vec::new();
    varint::push_frame(&wire::encode(&Fake.identify_info()), &mut out);
    out
}

/// The result of ping 7 in `step`: answered (the stream goes on) or
/// failed (the stream ends with it).
fn ping_result(step: Step) -> Result<Duration, PingFailure> {
    match step {
        Step::Report(Report::PingDone {
            ping: PingId(7),
            result,
        }) => result,
        Step::Done {
            report: Some(Report::PingsFailed(failed)),
            close: true,
        } if failed[0].0 == PingId(7) => Err(failed[0].1.clone()),
        other => panic!("not a finished ping: {other:?}"),
    }
}

#[test]
fn the_registry_serves_identify_push_and_ping() {
    let names: Vec<&str> = protocols(false).collect();
    assert_eq!(
        names,
        [wire::PROTOCOL, wire::PUSH_PROTOCOL, ping_wire::PROTOCOL]
    );
    for name in names {
        assert!(inbound(name, false, &mut Fake).is_some(), "{name}");
    }
    assert!(inbound("/app/1.0.0", false, &mut Fake).is_none());
}

#[test]
fn an_identify_answer_is_written_then_our_side_closes() {
    let mut answer = inbound(wire::PROTOCOL, false, &mut Fake).unwrap();
    let mut out = Vec::new();
    let step = answer.on_negotiated(Instant::from_millis(0), &mut out);
    assert!(matches!(
        step,
        Step::Done {
            report: None,
            close: true
        }
    ));
    assert_eq!(out, framed_info());
    let (name, mut push) = Builtin::IdentifyPush.start(&mut Fake);
    assert_eq!(name, wire::PUSH_PROTOCOL);
    let mut pushed = Vec::new();
    push.on_negotiated(Instant::from_millis(0), &mut pushed);
    assert_eq!(pushed, out);
}

#[test]
fn one_identify_message_is_read_across_pieces_and_what_follows_is_left() {
    let now = Instant::from_millis(0);
    let mut wire_bytes = framed_info();
    let len = wire_bytes.len();
    wire_bytes.extend_from_slice(b"after");
    for (name, mut machine, first) in [
        (
            wire::PUSH_PROTOCOL,
            inbound(wire::PUSH_PROTOCOL, false, &mut Fake).unwrap(),
            false,
        ),
        {
            let (name, machine) = Builtin::IdentifyRequest.start(&mut Fake);
            (name, machine, true)
        },
    ] {
        let mut out = Vec::new();
        let step = machine.on_negotiated(now, &mut out);
        // A request closes our side at once; a push is only read.
        assert_eq!(matches!(step, Step::Close), first, "{name}");
        let (n, step) = machine.on_bytes(now, &wire_bytes[..3], &mut out);
        assert_eq!((n, matches!(step, Step::Continue)), (3, true));
        let (n, step) = machine.on_bytes(now, &wire_bytes[3..], &mut out);
        assert_eq!(n, len - 3, "{name}: the bytes after the message stay");
        let Step::Done {
            report: Some(Report::Identified(info)),
            close: false,
        } = step
        else {
            panic!("{name}: {step:?}");
        };
        assert_eq!(*info, Fake.identify_info());
        assert!(out.is_empty());
    }
}

#[test]
fn a_broken_identify_message_fails_the_stream() {
    let now = Instant::from_millis(0);
    let mut out = Vec::new();
    // Longer than MAX_READ_LEN.
    let mut long = Vec::new();
    varint::push(wire::MAX_READ_LEN as u64 + 1, &mut long);
    let mut machine = inbound(wire::PUSH_PROTOCOL, false, &mut Fake).unwrap();
    assert!(matches!(
        machine.on_bytes(now, &long, &mut out).1,
        Step::Failed
    ));
    // Not a protobuf.
    let mut machine = inbound(wire::PUSH_PROTOCOL, false, &mut Fake).unwrap();
    let garbage = [2, 0xFF, 0xFF];
    assert!(matches!(
        machine.on_bytes(now, &garbage, &mut out).1,
        Step::Failed
    ));
    // The peer ends before the message does.
    let mut machine = inbound(wire::PUSH_PROTOCOL, false, &mut Fake).unwrap();
    machine.on_bytes(now, &framed_info()[..4], &mut out);
    assert!(matches!(machine.on_eof(Instant::ZERO), Step::Failed));
    assert!(machine.on_gone().is_none());
}

#[test]
fn our_ping_times_its_echo_and_leaves_what_follows() {
    let (name, mut ping) = Builtin::Ping(PingId(7)).start(&mut Fake);
    assert_eq!(name, ping_wire::PROTOCOL);
    let mut out = Vec::new();
    let step = ping.on_negotiated(Instant::from_millis(10), &mut out);
    assert!(matches!(step, Step::Continue));
    assert_eq!(out, [0xAB; ping_wire::PAYLOAD_LEN]);
    let mut echo = out.clone();
    echo.extend_from_slice(b"extra");
    let later = Instant::from_millis(15);
    let (n, step) = ping.on_bytes(later, &echo[..20], &mut out);
    assert_eq!((n, matches!(step, Step::Continue)), (20, true));
    let (n, step) = ping.on_bytes(later, &echo[20..], &mut out);
    assert_eq!(n, ping_wire::PAYLOAD_LEN - 20);
    assert_eq!(ping_result(step), Ok(Duration::from_millis(5)));
}

#[test]
fn our_ping_fails_on_a_wrong_echo_an_early_end_or_a_lost_stream() {
    let now = Instant::from_millis(0);
    let start = || {
        let (_, mut ping) = Builtin::Ping(PingId(7)).start(&mut Fake);
        ping.on_negotiated(now, &mut Vec::new());
        ping
    };
    let mut ping = start();
    let wrong = [0xAC; ping_wire::PAYLOAD_LEN];
    let step = ping.on_bytes(now, &wrong, &mut Vec::new()).1;
    assert_eq!(ping_result(step), Err(PingFailure::WrongEcho));
    let mut ping = start();
    assert_eq!(
        ping_result(ping.on_eof(Instant::ZERO)),
        Err(PingFailure::Stream)
    );
    let Some(Report::PingsFailed(failed)) = start().on_gone() else {
        panic!("a lost ping is reported");
    };
    assert_eq!(failed, [(PingId(7), PingFailure::Stream)]);
}

#[test]
fn later_pings_queue_on_the_open_stream_one_payload_at_a_time() {
    let (_, mut ping) = Builtin::Ping(PingId(7)).start(&mut Fake);
    let mut out = Vec::new();
    // Queued before the agreement: nothing goes out until it.
    assert!(ping.queue_ping(Instant::ZERO, PingId(8), [0x08; 32], &mut out));
    assert!(out.is_empty());
    ping.on_negotiated(Instant::from_millis(10), &mut out);
    assert_eq!(out, [0xAB; 32], "the first ping's payload only");
    assert!(ping.queue_ping(Instant::from_millis(11), PingId(9), [0x09; 32], &mut out));
    assert_eq!(out.len(), 32, "still one payload in flight");
    let echo = core::mem::take(&mut out);
    let (_, step) = ping.on_bytes(Instant::from_millis(14), &echo, &mut out);
    assert_eq!(ping_result(step), Ok(Duration::from_millis(4)));
    assert_eq!(out, [0x08; 32], "the next one goes out behind the echo");
    let echo = core::mem::take(&mut out);
    let (_, step) = ping.on_bytes(Instant::from_millis(20), &echo, &mut out);
    assert!(matches!(
        step,
        Step::Report(Report::PingDone { ping: PingId(8), result: Ok(d) }) if d == Duration::from_millis(6)
    ));
    // The third is in flight when the stream is lost.
    assert_eq!(out, [0x09; 32]);
    let Some(Report::PingsFailed(failed)) = ping.on_gone() else {
        panic!("the ping in flight is reported");
    };
    assert_eq!(failed, [(PingId(9), PingFailure::Stream)]);
}

#[test]
fn a_wrong_echo_fails_every_ping_of_the_stream_and_unasked_bytes_reset_it() {
    let (_, mut ping) = Builtin::Ping(PingId(7)).start(&mut Fake);
    let mut out = Vec::new();
    ping.on_negotiated(Instant::ZERO, &mut out);
    ping.queue_ping(Instant::ZERO, PingId(8), [0x08; 32], &mut out);
    let (_, step) = ping.on_bytes(Instant::ZERO, &[0xAC; 32], &mut out);
    let Step::Done {
        report: Some(Report::PingsFailed(failed)),
        close: true,
    } = step
    else {
        panic!("{step:?}");
    };
    assert_eq!(
        failed,
        [
            (PingId(7), PingFailure::WrongEcho),
            (PingId(8), PingFailure::Stream)
        ]
    );
    // An echo with no ping out is not one.
    let (_, mut ping) = Builtin::Ping(PingId(7)).start(&mut Fake);
    let mut out = Vec::new();
    ping.on_negotiated(Instant::ZERO, &mut out);
    let (_, step) = ping.on_bytes(Instant::ZERO, &out.clone(), &mut out);
    ping_result(step).unwrap();
    assert!(matches!(
        ping.on_bytes(Instant::ZERO, b"x", &mut out).1,
        Step::Failed
    ));
}

#[test]
fn the_ping_server_echoes_whole_payloads_and_holds_back_while_they_are_unsent() {
    let now = Instant::from_millis(0);
    let mut serve = inbound(ping_wire::PROTOCOL, false, &mut Fake).unwrap();
    assert!(!serve.reads_while_output_pending());
    let bytes: Vec<u8> = (0..80).collect();
    let mut out = Vec::new();
    assert!(matches!(serve.on_negotiated(now, &mut out), Step::Continue));
    let (n, _) = serve.on_bytes(now, &bytes[..40], &mut out);
    assert_eq!((n, &out[..]), (40, &bytes[..32]));
    let (n, _) = serve.on_bytes(now, &bytes[40..], &mut out);
    assert_eq!((n, &out[..]), (40, &bytes[..64]));
    assert!(matches!(
        serve.on_eof(Instant::ZERO),
        Step::Done {
            report: None,
            close: true
        }
    ));
    assert!(serve.on_gone().is_none());
}

// ------------------------------------------------------------------ perf

use crate::protocols::perf::{encode_header, PROTOCOL as PERF};

/// Our run 7: agreed at 0 ms, the request taken out of `out`.
fn perf_client(upload: u64, download: u64) -> Box<dyn Machine> {
    let params = PerfParams { upload, download };
    let (name, mut client) = Builtin::Perf(PerfId(7), params).start(&mut Fake);
    assert_eq!(name, PERF);
    let mut out = Vec::new();
    assert!(matches!(
        client.on_negotiated(Instant::ZERO, &mut out),
        Step::Continue
    ));
    assert_eq!(out, encode_header(download), "the request goes first");
    client
}

/// Fills as the stream code does (out emptied by the stream each time)
/// until the machine says more than Continue; returns the bytes made and
/// that step.
fn drain_fills(machine: &mut dyn Machine, now: Instant) -> (u64, Step) {
    let mut made = 0;
    let mut out = Vec::new();
    loop {
        let step = machine.on_writable(now, &mut out);
        assert!(out.len() <= perf::CHUNK, "never more than a chunk ahead");
        made += out.len() as u64;
        let empty = out.is_empty();
        out.clear();
        match step {
            Step::Continue if !empty => {}
            step => return (made, step),
        }
    }
}

/// The failure of run 7 that `step` (a reset) left for `on_gone`.
fn perf_failure(step: Step, client: Box<dyn Machine>) -> PerfFailure {
    assert!(matches!(step, Step::Failed), "{step:?}");
    match client.on_gone() {
        Some(Report::Perf {
            perf: PerfId(7),
            result: Err(failure),
        }) => failure,
        other => panic!("{other:?}"),
    }
}

#[test]
fn perf_is_served_only_when_the_node_says_so() {
    assert!(!protocols(false).any(|p| p == PERF));
    assert!(inbound(PERF, false, &mut Fake).is_none());
    let names: Vec<&str> = protocols(true).collect();
    assert_eq!(
        names,
        [
            wire::PROTOCOL,
            wire::PUSH_PROTOCOL,
            ping_wire::PROTOCOL,
            PERF
        ]
    );
    assert!(inbound(PERF, true, &mut Fake).is_some());
}

#[test]
fn our_perf_run_uploads_a_chunk_per_fill_closes_then_counts_the_download() {
    let upload = 2 * perf::CHUNK as u64 + 5;
    let mut client = perf_client(upload, 10);
    // Nothing is made until the stream takes it: one chunk per fill.
    let mut out = Vec::new();
    let t10 = Instant::from_millis(10);
    for expect in [perf::CHUNK, perf::CHUNK, 5] {
        assert!(matches!(client.on_writable(t10, &mut out), Step::Continue));
        assert_eq!(out.len(), expect);
        assert!(out.iter().all(|b| *b == 0));
        out.clear();
    }
    // All handed over at 30 ms: our side closes.
    let t30 = Instant::from_millis(30);
    assert!(matches!(client.on_writable(t30, &mut out), Step::Close));
    assert!(matches!(client.on_writable(t30, &mut out), Step::Continue));
    assert!(out.is_empty());
    let (n, step) = client.on_bytes(t30, &[0; 4], &mut out);
    assert_eq!((n, matches!(step, Step::Continue)), (4, true));
    let (n, step) = client.on_bytes(t30, &[0; 6], &mut out);
    assert_eq!((n, matches!(step, Step::Continue)), (6, true));
    let step = client.on_eof(Instant::from_millis(55));
    let Step::Done {
        report:
            Some(Report::Perf {
                perf: PerfId(7),
                result: Ok((up, down)),
            }),
        close: true,
    } = step
    else {
        panic!("{step:?}");
    };
    // Upload from the first fill to the last; download from then to the end.
    assert_eq!(
        (up, down),
        (Duration::from_millis(20), Duration::from_millis(25))
    );
}

#[test]
fn an_empty_perf_run_closes_at_the_first_fill_and_wants_the_servers_close() {
    let mut client = perf_client(0, 0);
    let (made, step) = drain_fills(&mut *client, Instant::ZERO);
    assert_eq!((made, matches!(step, Step::Close)), (0, true));
    assert!(matches!(
        client.on_eof(Instant::ZERO),
        Step::Done {
            report: Some(Report::Perf { result: Ok(_), .. }),
            close: true
        }
    ));
}

#[test]
fn a_server_sending_more_or_less_than_asked_fails_our_run() {
    let now = Instant::ZERO;
    let uploaded = |mut client: Box<dyn Machine>| {
        let (_, step) = drain_fills(&mut *client, now);
        assert!(matches!(step, Step::Close));
        client
    };
    // One byte beyond what was asked, in a later piece: a reset.
    let mut client = uploaded(perf_client(3, 10));
    assert!(matches!(
        client.on_bytes(now, &[0; 10], &mut Vec::new()).1,
        Step::Continue
    ));
    let (n, step) = client.on_bytes(now, &[0], &mut Vec::new());
    assert_eq!(n, 1);
    assert_eq!(
        perf_failure(step, client),
        PerfFailure::TooMuchData { requested: 10 }
    );
    // Too much in one piece.
    let mut client = uploaded(perf_client(0, 0));
    let step = client.on_bytes(now, &[0; 64], &mut Vec::new()).1;
    assert_eq!(
        perf_failure(step, client),
        PerfFailure::TooMuchData { requested: 0 }
    );
    // Closed after four of ten: the stream ends cleanly with the failure.
    let mut client = uploaded(perf_client(0, 10));
    client.on_bytes(now, &[0; 4], &mut Vec::new());
    let step = client.on_eof(now);
    assert!(matches!(
        step,
        Step::Done {
            report: Some(Report::Perf {
                perf: PerfId(7),
                result: Err(PerfFailure::TooLittleData {
                    requested: 10,
                    received: 4
                })
            }),
            close: true
        }
    ));
}

#[test]
fn a_server_answering_before_our_upload_ended_fails_our_run() {
    let now = Instant::ZERO;
    // Data while we still upload.
    let mut client = perf_client(1 << 20, 10);
    client.on_writable(now, &mut Vec::new());
    let step = client.on_bytes(now, &[0], &mut Vec::new()).1;
    assert_eq!(perf_failure(step, client), PerfFailure::AnsweredEarly);
    // Its close while we still upload.
    let mut client = perf_client(1 << 20, 0);
    client.on_writable(now, &mut Vec::new());
    let step = client.on_eof(now);
    assert_eq!(perf_failure(step, client), PerfFailure::AnsweredEarly);
}

#[test]
fn a_lost_perf_stream_says_whether_the_peer_had_agreed() {
    let params = PerfParams {
        upload: 1,
        download: 1,
    };
    let (_, client) = Builtin::Perf(PerfId(7), params).start(&mut Fake);
    assert!(matches!(
        client.on_gone(),
        Some(Report::Perf {
            result: Err(PerfFailure::Unsupported),
            ..
        })
    ));
    // Agreed lazily (the request is written) but not confirmed: the
    // upload waits for the confirmation.
    let client = perf_client(1, 1);
    assert!(matches!(
        client.on_gone(),
        Some(Report::Perf {
            result: Err(PerfFailure::Unsupported),
            ..
        })
    ));
    let mut client = perf_client(1, 1);
    client.on_writable(Instant::ZERO, &mut Vec::new());
    assert!(matches!(
        client.on_gone(),
        Some(Report::Perf {
            result: Err(PerfFailure::Stream),
            ..
        })
    ));
}

#[test]
fn the_perf_server_discards_the_upload_and_answers_only_after_the_close() {
    let now = Instant::ZERO;
    let mut serve = inbound(PERF, true, &mut Fake).unwrap();
    let mut out = Vec::new();
    assert!(matches!(serve.on_negotiated(now, &mut out), Step::Continue));
    let asked = 3 * perf::CHUNK as u64 + 1;
    let mut bytes = encode_header(asked).to_vec();
    bytes.extend_from_slice(&[0xEE; 1000]);
    // The request split across pieces; the upload behind it is taken too.
    for piece in [&bytes[..3], &bytes[3..5], &bytes[5..]] {
        let (n, step) = serve.on_bytes(now, piece, &mut out);
        assert_eq!((n, matches!(step, Step::Continue)), (piece.len(), true));
        assert!(out.is_empty());
        // Nothing goes back while the client uploads.
        assert!(matches!(serve.on_writable(now, &mut out), Step::Continue));
        assert!(out.is_empty());
    }
    assert!(matches!(serve.on_eof(now), Step::Continue));
    // The stream code reads the end again on later pumps: no change.
    assert!(matches!(serve.on_eof(now), Step::Continue));
    let (made, step) = drain_fills(&mut *serve, now);
    assert_eq!(made, asked);
    assert!(matches!(
        step,
        Step::Done {
            report: Some(Report::PerfServed),
            close: true
        }
    ));
    // Gone early, a served run gives its place back too (after `Done` the
    // node drops the machine without asking).
    assert!(matches!(serve.on_gone(), Some(Report::PerfServed)));
}

#[test]
fn the_perf_server_makes_a_huge_answer_one_chunk_at_a_time() {
    let now = Instant::ZERO;
    let mut serve = inbound(PERF, true, &mut Fake).unwrap();
    let mut out = Vec::new();
    serve.on_bytes(now, &encode_header(u64::MAX), &mut out);
    assert!(matches!(serve.on_eof(now), Step::Continue));
    for _ in 0..1000 {
        assert!(matches!(serve.on_writable(now, &mut out), Step::Continue));
        assert_eq!(out.len(), perf::CHUNK);
        out.clear();
    }
    assert!(out.capacity() <= 2 * perf::CHUNK);
    // Zero asked: done at the first fill, nothing sent.
    let mut serve = inbound(PERF, true, &mut Fake).unwrap();
    serve.on_bytes(now, &encode_header(0), &mut out);
    serve.on_eof(now);
    let (made, step) = drain_fills(&mut *serve, now);
    assert_eq!(made, 0);
    assert!(matches!(step, Step::Done { close: true, .. }));
}

#[test]
fn a_perf_client_closing_before_its_request_is_whole_is_reset() {
    let now = Instant::ZERO;
    let mut serve = inbound(PERF, true, &mut Fake).unwrap();
    serve.on_bytes(now, &[0; 7], &mut Vec::new());
    assert!(matches!(serve.on_eof(now), Step::Failed));
    let mut serve = inbound(PERF, true, &mut Fake).unwrap();
    assert!(matches!(serve.on_eof(now), Step::Failed));
}
