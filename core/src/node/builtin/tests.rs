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
    let names: Vec<&str> = protocols().collect();
    assert_eq!(
        names,
        [wire::PROTOCOL, wire::PUSH_PROTOCOL, ping_wire::PROTOCOL]
    );
    for name in names {
        assert!(inbound(name, &mut Fake).is_some(), "{name}");
    }
    assert!(inbound("/app/1.0.0", &mut Fake).is_none());
}

#[test]
fn an_identify_answer_is_written_then_our_side_closes() {
    let mut answer = inbound(wire::PROTOCOL, &mut Fake).unwrap();
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
            inbound(wire::PUSH_PROTOCOL, &mut Fake).unwrap(),
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
    let mut machine = inbound(wire::PUSH_PROTOCOL, &mut Fake).unwrap();
    assert!(matches!(
        machine.on_bytes(now, &long, &mut out).1,
        Step::Failed
    ));
    // Not a protobuf.
    let mut machine = inbound(wire::PUSH_PROTOCOL, &mut Fake).unwrap();
    let garbage = [2, 0xFF, 0xFF];
    assert!(matches!(
        machine.on_bytes(now, &garbage, &mut out).1,
        Step::Failed
    ));
    // The peer ends before the message does.
    let mut machine = inbound(wire::PUSH_PROTOCOL, &mut Fake).unwrap();
    machine.on_bytes(now, &framed_info()[..4], &mut out);
    assert!(matches!(machine.on_eof(), Step::Failed));
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
    assert_eq!(ping_result(ping.on_eof()), Err(PingFailure::Stream));
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
    let mut serve = inbound(ping_wire::PROTOCOL, &mut Fake).unwrap();
    assert!(!serve.reads_while_output_pending());
    let bytes: Vec<u8> = (0..80).collect();
    let mut out = Vec::new();
    assert!(matches!(serve.on_negotiated(now, &mut out), Step::Continue));
    let (n, _) = serve.on_bytes(now, &bytes[..40], &mut out);
    assert_eq!((n, &out[..]), (40, &bytes[..32]));
    let (n, _) = serve.on_bytes(now, &bytes[40..], &mut out);
    assert_eq!((n, &out[..]), (40, &bytes[..64]));
    assert!(matches!(
        serve.on_eof(),
        Step::Done {
            report: None,
            close: true
        }
    ));
    assert!(serve.on_gone().is_none());
}
