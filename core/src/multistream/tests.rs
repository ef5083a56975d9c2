//! Negotiator tests: exact bytes, in-memory pairs at several read sizes,
//! refusal, lazy mode and malformed input.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::codec::{encode_ls_response, parse_ls_response, Message};
use super::*;

fn msg(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

fn events(n: &mut Negotiator) -> Vec<Event> {
    core::iter::from_fn(|| n.poll_event()).collect()
}

fn negotiated(p: &str) -> Event {
    Event::Negotiated {
        protocol: Cow::Owned(p.into()),
    }
}

/// Moves bytes between the two machines, `chunk` bytes per read, until both
/// are quiet. Bytes a machine did not consume (application data after the
/// negotiation) are returned per side.
fn drive(dialer: &mut Negotiator, listener: &mut Negotiator, chunk: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut to_l, mut to_d) = (Vec::new(), Vec::new());
    let (mut rest_d, mut rest_l) = (Vec::new(), Vec::new());
    loop {
        let _ = dialer.poll_transmit(&mut to_l);
        let _ = listener.poll_transmit(&mut to_d);
        if to_l.is_empty() && to_d.is_empty() {
            return (rest_d, rest_l);
        }
        for (side, buf, rest) in [
            (&mut *listener, &mut to_l, &mut rest_l),
            (&mut *dialer, &mut to_d, &mut rest_d),
        ] {
            let mut pos = 0;
            while pos < buf.len() {
                let end = (pos + chunk).min(buf.len());
                pos += side.handle_read(&buf[pos..end]);
                if pos < end {
                    // Not consumed: what follows belongs to the application.
                    rest.extend_from_slice(&buf[pos..]);
                    break;
                }
            }
            buf.clear();
        }
    }
}

#[test]
fn dialer_pipelines_header_and_first_proposal() {
    let mut d = Negotiator::dialer(["/yamux/1.0.0"]).unwrap();
    let mut out = Vec::new();
    let _ = d.poll_transmit(&mut out);
    let mut expected = msg(Message::Header);
    expected.extend(msg(Message::Protocol("/yamux/1.0.0")));
    assert_eq!(out, expected);
}

#[test]
fn listener_answers_header_and_echo_in_one_write() {
    let mut l = Negotiator::listener(["/a", "/yamux/1.0.0"]).unwrap();
    let mut input = msg(Message::Header);
    input.extend(msg(Message::Protocol("/yamux/1.0.0")));
    assert_eq!(l.handle_read(&input), input.len());
    let mut out = Vec::new();
    let _ = l.poll_transmit(&mut out);
    let mut expected = msg(Message::Header);
    expected.extend(msg(Message::Protocol("/yamux/1.0.0")));
    assert_eq!(out, expected);
    assert_eq!(events(&mut l), vec![negotiated("/yamux/1.0.0")]);
    assert!(l.is_finished());
}

#[test]
fn pairs_agree_at_every_read_size() {
    for chunk in [1, 2, 7, 64 * 1024] {
        let mut d = Negotiator::dialer(["/noise", "/plaintext/2.0.0"]).unwrap();
        let mut l = Negotiator::listener(["/plaintext/2.0.0"]).unwrap();
        let (rd, rl) = drive(&mut d, &mut l, chunk);
        assert!(rd.is_empty() && rl.is_empty());
        assert_eq!(
            events(&mut d),
            vec![
                Event::NotAvailable {
                    protocol: "/noise".into()
                },
                negotiated("/plaintext/2.0.0")
            ],
            "chunk {chunk}"
        );
        assert_eq!(
            events(&mut l),
            vec![
                Event::NotAvailable {
                    protocol: "/noise".into()
                },
                negotiated("/plaintext/2.0.0")
            ]
        );
        assert!(d.is_finished() && l.is_finished());
    }
}

#[test]
fn dialer_against_listener_that_supports_none() {
    for chunk in [1, 64 * 1024] {
        let mut d = Negotiator::dialer(["/a", "/b"]).unwrap();
        let mut l = Negotiator::listener(Vec::<&'static str>::new()).unwrap();
        drive(&mut d, &mut l, chunk);
        assert_eq!(
            events(&mut d),
            vec![
                Event::NotAvailable {
                    protocol: "/a".into()
                },
                Event::NotAvailable {
                    protocol: "/b".into()
                },
                Event::Failed(NegotiationError::NotAgreed),
            ]
        );
        // The dialer gives up by closing; after our `na` that is "not agreed".
        l.handle_eof();
        let ev = events(&mut l);
        assert_eq!(ev.last(), Some(&Event::Failed(NegotiationError::NotAgreed)));
    }
}

#[test]
fn application_data_after_negotiation_is_handed_back() {
    for chunk in [1, 3, 64 * 1024] {
        let mut l = Negotiator::listener(["/echo/1.0.0"]).unwrap();
        let mut input = msg(Message::Header);
        input.extend(msg(Message::Protocol("/echo/1.0.0")));
        let negotiation_len = input.len();
        input.extend_from_slice(b"hello");
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + chunk).min(input.len());
            let n = l.handle_read(&input[pos..end]);
            pos += n;
            if l.is_finished() {
                break;
            }
        }
        assert_eq!(pos, negotiation_len, "chunk {chunk}");
        assert_eq!(&input[pos..], b"hello");
        assert_eq!(l.handle_read(b"more"), 0);
    }
}

#[test]
fn lazy_dialer_reports_at_once_and_hands_back_data() {
    for chunk in [1, 2, 7, 64 * 1024] {
        let mut d = Negotiator::dialer_with(["/echo/1.0.0"], Config::lazy()).unwrap();
        assert_eq!(events(&mut d), vec![negotiated("/echo/1.0.0")]);
        assert!(!d.is_finished());
        let mut l = Negotiator::listener(["/echo/1.0.0"]).unwrap();
        // The application writes right behind the proposal.
        let mut wire = Vec::new();
        let _ = d.poll_transmit(&mut wire);
        wire.extend_from_slice(b"ping");
        let mut pos = 0;
        while !l.is_finished() {
            pos += l.handle_read(&wire[pos..(pos + chunk).min(wire.len())]);
        }
        assert_eq!(&wire[pos..], b"ping");
        // And the listener's answer plus its data reaches the dialer.
        let mut back = Vec::new();
        let _ = l.poll_transmit(&mut back);
        back.extend_from_slice(b"pong");
        let mut pos = 0;
        while !d.is_finished() {
            pos += d.handle_read(&back[pos..(pos + chunk).min(back.len())]);
        }
        assert_eq!(&back[pos..], b"pong");
        assert_eq!(events(&mut d), vec![], "no second Negotiated");
    }
}

#[test]
fn lazy_dialer_refused_fails() {
    let mut d = Negotiator::dialer_with(["/x"], Config::lazy()).unwrap();
    let mut l = Negotiator::listener(["/y"]).unwrap();
    drive(&mut d, &mut l, 64);
    assert_eq!(
        events(&mut d),
        vec![negotiated("/x"), Event::Failed(NegotiationError::NotAgreed)]
    );
}

#[test]
fn asking_listener_waits_for_the_application() {
    let mut d = Negotiator::dialer(["/one", "/two"]).unwrap();
    let mut l = Negotiator::listener_with(["/two"], true, Config::default()).unwrap();
    let mut wire = Vec::new();
    let _ = d.poll_transmit(&mut wire);
    wire.extend_from_slice(b"extra"); // bytes the listener must not eat yet
    let n = l.handle_read(&wire);
    assert_eq!(&wire[n..], b"extra");
    assert_eq!(
        events(&mut l),
        vec![Event::InboundProposal {
            protocol: String::from("/one")
        }]
    );
    assert_eq!(
        l.handle_read(b"extra"),
        0,
        "no input while a decision is pending"
    );
    l.reject().unwrap();
    assert_eq!(l.reject(), Err(DecisionError::NoPendingProposal));
    drive(&mut d, &mut l, 64);
    assert_eq!(
        events(&mut l),
        vec![
            Event::NotAvailable {
                protocol: "/one".into()
            },
            Event::InboundProposal {
                protocol: String::from("/two")
            },
        ]
    );
    l.accept().unwrap();
    drive(&mut d, &mut l, 64);
    assert_eq!(events(&mut l), vec![negotiated("/two")]);
    assert_eq!(events(&mut d).last(), Some(&negotiated("/two")));
}

#[test]
fn listener_answers_ls() {
    let mut l = Negotiator::listener(["/a", "/b/1"]).unwrap();
    let mut input = msg(Message::Header);
    input.extend(msg(Message::Ls));
    let _ = l.handle_read(&input);
    let mut out = Vec::new();
    let _ = l.poll_transmit(&mut out);
    let header = msg(Message::Header);
    assert_eq!(&out[..header.len()], &header[..]);
    let mut expected = Vec::new();
    encode_ls_response(["/a", "/b/1"], &mut expected);
    assert_eq!(&out[header.len()..], &expected[..]);
    assert_eq!(
        parse_ls_response(&expected[1..]).unwrap(),
        vec!["/a", "/b/1"]
    );
    assert!(!l.is_finished());
}

// multistream-select 1.0.0 (github.com/multiformats/multistream-select,
// README "Listing"; REFERENCE.md): `ls` is `03 6c 73 0a`; the listener
// answers it with ONE frame: uvarint(total), then `uvarint(len) proto '\n'`
// per protocol, then a final `\n`. Every byte below is written out by hand.
#[test]
fn listener_answers_ls_with_the_spec_bytes() {
    let mut l = Negotiator::listener(["/a", "/yamux/1.0.0"]).unwrap();
    let mut input = vec![0x13];
    input.extend_from_slice(b"/multistream/1.0.0\n");
    input.extend_from_slice(&[0x03, 0x6c, 0x73, 0x0a]);
    assert_eq!(l.handle_read(&input), input.len());
    let mut out = Vec::new();
    let _ = l.poll_transmit(&mut out);

    let mut expected = vec![0x13];
    expected.extend_from_slice(b"/multistream/1.0.0\n");
    expected.extend_from_slice(&[0x13, 0x03, b'/', b'a', b'\n', 0x0d]);
    expected.extend_from_slice(b"/yamux/1.0.0\n\n");
    assert_eq!(out, expected);
    assert!(!l.is_finished());
    assert_eq!(events(&mut l), vec![]);
}

fn fed(mut n: Negotiator, bytes: &[u8]) -> Vec<Event> {
    let _ = n.handle_read(bytes);
    let ev = events(&mut n);
    assert!(n.is_finished(), "{ev:?}");
    ev
}

fn violation(v: ProtocolViolation) -> Event {
    Event::Failed(NegotiationError::Violation(v))
}

#[test]
fn malformed_input_gives_typed_errors() {
    let listener = || Negotiator::listener(["/a"]).unwrap();
    let dialer = || Negotiator::dialer(["/a"]).unwrap();
    let header = msg(Message::Header);
    let after_header = |tail: &[u8]| [&header[..], tail].concat();

    assert_eq!(
        fed(listener(), b"\x03/a\n"),
        vec![violation(ProtocolViolation::ExpectedHeader)]
    );
    assert_eq!(
        fed(listener(), b"\x04GET\n"),
        vec![violation(ProtocolViolation::Message(
            MessageError::InvalidProtocol
        ))]
    );
    // Oversized length prefix (2000 > 1024): refused before any buffering.
    assert_eq!(
        fed(listener(), &[0xd0, 0x0f]),
        vec![violation(ProtocolViolation::Message(
            MessageError::TooLong {
                len: 2000,
                max: 1024
            }
        ))]
    );
    // Truncated varint never completes, then the stream ends.
    let mut l = listener();
    assert_eq!(l.handle_read(&[0x80]), 1);
    assert!(!l.is_finished());
    l.handle_eof();
    assert_eq!(
        events(&mut l),
        vec![Event::Failed(NegotiationError::Closed)]
    );
    // Non-minimal / overlong varints.
    assert_eq!(
        fed(listener(), &[0x80, 0x00]),
        vec![violation(ProtocolViolation::Message(
            MessageError::BadLength
        ))]
    );
    assert_eq!(
        fed(listener(), &after_header(b"\x03/a\xff")),
        vec![violation(ProtocolViolation::Message(
            MessageError::MissingNewline
        ))]
    );
    assert_eq!(
        fed(listener(), &after_header(b"\x03\xff\xfe\n")),
        vec![violation(ProtocolViolation::Message(
            MessageError::InvalidUtf8
        ))]
    );
    assert_eq!(
        fed(listener(), &after_header(b"\x03na\n")),
        vec![violation(ProtocolViolation::UnexpectedMessage)]
    );
    assert_eq!(
        fed(dialer(), &after_header(b"\x03/b\n")),
        vec![violation(ProtocolViolation::WrongEcho)]
    );
    assert_eq!(
        fed(dialer(), &after_header(b"\x03ls\n")),
        vec![violation(ProtocolViolation::UnexpectedMessage)]
    );
    assert_eq!(
        fed(dialer(), &after_header(&header)),
        vec![violation(ProtocolViolation::UnexpectedMessage)]
    );
}

#[test]
fn garbage_after_our_na_is_not_a_violation() {
    let mut l = Negotiator::listener(["/a"]).unwrap();
    let mut input = msg(Message::Header);
    input.extend(msg(Message::Protocol("/zzz")));
    input.extend_from_slice(b"\x02\xff\xfe");
    // The listener reads no further while its `na` is unsent.
    let n = l.handle_read(&input);
    assert!(n < input.len());
    let mut out = Vec::new();
    let _ = l.poll_transmit(&mut out);
    let _ = l.handle_read(&input[n..]);
    assert_eq!(
        events(&mut l),
        vec![
            Event::NotAvailable {
                protocol: "/zzz".into()
            },
            Event::Failed(NegotiationError::NotAgreed)
        ]
    );
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    assert_eq!(
        Negotiator::dialer(Vec::<&'static str>::new()).unwrap_err(),
        NegotiatorConfigError::NoProtocols
    );
    assert_eq!(
        Negotiator::dialer(["yamux"]).unwrap_err(),
        NegotiatorConfigError::InvalidProtocol("yamux".into())
    );
    assert_eq!(
        Negotiator::dialer(["/a\n"]).unwrap_err(),
        NegotiatorConfigError::InvalidProtocol("/a\n".into())
    );
    assert_eq!(
        Negotiator::dialer_with(["/a", "/b"], Config::lazy()).unwrap_err(),
        NegotiatorConfigError::LazyNeedsOneProtocol(2)
    );
    assert_eq!(
        Negotiator::listener_with(["/a"], false, Config::lazy()).unwrap_err(),
        NegotiatorConfigError::LazyListener
    );
    let long = alloc::format!("/{}", "x".repeat(2000));
    assert!(matches!(
        Negotiator::listener([long]),
        Err(NegotiatorConfigError::InvalidProtocol(_))
    ));
}

#[test]
fn finished_machine_ignores_further_input_and_eof() {
    let mut d = Negotiator::dialer(["/a"]).unwrap();
    let mut l = Negotiator::listener(["/a"]).unwrap();
    drive(&mut d, &mut l, 64);
    events(&mut d);
    assert_eq!(d.handle_read(b"\x03/a\n"), 0);
    d.handle_eof();
    assert_eq!(events(&mut d), vec![]);
}

#[test]
fn a_listener_reads_no_further_while_an_answer_is_unsent() {
    let mut l = Negotiator::listener(["/a"]).unwrap();
    let mut out = Vec::new();
    let _ = l.poll_transmit(&mut out);
    let mut input = msg(Message::Header);
    for _ in 0..1000 {
        input.extend(msg(Message::Ls));
        input.extend(msg(Message::Protocol("/zzz")));
    }
    let mut taken = 0;
    let mut answers = 0;
    while taken < input.len() {
        let n = l.handle_read(&input[taken..]);
        assert!(n > 0, "it reads again once the answer is taken");
        // Nothing more is read until the answer is taken.
        assert_eq!(l.handle_read(&input[taken + n..]), 0);
        taken += n;
        out.clear();
        if l.poll_transmit(&mut out) > 0 {
            answers += 1;
        }
    }
    assert_eq!(answers, 2000, "one answer per message, each taken in turn");
}
