//! Circuit relay v2 message framing (`relay::proto`) on arbitrary bytes.
//!
//! The input is read as a stream of hop messages and, separately, of stop
//! messages, twice: by one `MessageReader` fed in uneven pieces (it is
//! ready for the next message after each one) and by `decode()` on what is
//! left after each message. The input is also wrapped in a genuine length
//! prefix and read the same way, so that well-formed frames up to the bound
//! are common. Checked:
//!
//! - never a panic; the reader never consumes more than it is given;
//! - the reader and `decode()` agree, message for message and error for
//!   error, with an independent parse of the length prefix here (minimal
//!   uvarint of at most 10 bytes): a message consumed exactly its frame,
//!   prefix plus announced body, and not one byte of what follows;
//! - the 4096-byte bound: a frame taken has a body of at most
//!   `MAX_MESSAGE_LEN` bytes, and a longer announced length is refused as
//!   `TooLong` from the prefix alone, before any of its body is buffered;
//! - round trip: a decoded message re-encoded with `to_frame` decodes to an
//!   equal message taking the whole frame. (prost writes a negative enum in
//!   10 bytes where the input may have used 5, so a re-encoding may outgrow
//!   the bound; it must then be refused as `TooLong`.)
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use sansp2p::relay::proto::{
    decode, Frame, HopMessage, MessageError, MessageReader, StopMessage, MAX_MESSAGE_LEN,
};
use sansp2p_fuzz::feed_in_pieces;

/// The length prefix at the start of `bytes`, by the spec: `Ok(None)` when
/// it is cut short, else the announced length and the prefix's size.
fn prefix(bytes: &[u8]) -> Result<Option<(u64, usize)>, MessageError> {
    let mut len = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(MessageError::BadLength); // not minimal
            }
            return Ok(Some((len, i + 1)));
        }
    }
    if bytes.len() >= 10 {
        return Err(MessageError::BadLength); // longer than 10 bytes
    }
    Ok(None)
}

fn push_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads `data` as a stream of `M` both ways and checks they agree.
fn check_stream<M: Frame + Clone + PartialEq + Debug>(data: &[u8]) {
    // The reader, in pieces: where each message ended, and how it stopped.
    let mut reader = MessageReader::<M>::new();
    let mut taken: Vec<(usize, M)> = Vec::new();
    let (mut at, mut error) = (0usize, None);
    feed_in_pieces(data, |piece| match reader.feed(piece) {
        Ok((used, message)) => {
            assert!(used <= piece.len(), "consumed more than given");
            at += used;
            if let Some(m) = message {
                taken.push((at, m));
            }
            Some(used)
        }
        Err(e) => {
            error = Some(e);
            None
        }
    });

    // `decode()` from each message's start, and the prefix parsed here.
    let mut start = 0;
    for (end, m) in taken {
        let (len, n) = prefix(&data[start..]).unwrap().expect("a whole prefix");
        assert!(len <= MAX_MESSAGE_LEN as u64, "a frame above the bound");
        assert_eq!(end - start, n + len as usize, "not exactly its frame");
        assert_eq!(
            decode::<M>(&data[start..]),
            Ok(Some((m.clone(), end - start)))
        );
        roundtrip(&m);
        start = end;
    }
    let rest = &data[start..];
    match (prefix(rest), decode::<M>(rest)) {
        (Err(e), got) => assert_eq!(got, Err(e)),
        (Ok(Some((len, n))), got) if len > MAX_MESSAGE_LEN as u64 => {
            assert_eq!(got, Err(MessageError::TooLong { len }));
            // The prefix alone is enough to refuse it.
            assert_eq!(decode::<M>(&rest[..n]), Err(MessageError::TooLong { len }));
        }
        (Ok(Some((len, n))), got) if rest.len() >= n + len as usize => {
            assert!(error.is_some(), "a whole frame left unread");
            assert!(got.is_err(), "decode() took a frame the reader refused");
        }
        (_, got) => assert_eq!(got, Ok(None), "an incomplete frame"),
    }
    // Whatever the reader stopped on, `decode()` reports too.
    if let Some(e) = error {
        assert_eq!(decode::<M>(rest), Err(e));
    }
}

fn roundtrip<M: Frame + Clone + PartialEq + Debug>(m: &M) {
    let frame = m.to_frame();
    let (len, n) = prefix(&frame).unwrap().unwrap();
    assert_eq!(n + len as usize, frame.len(), "to_frame's prefix is wrong");
    if len > MAX_MESSAGE_LEN as u64 {
        assert_eq!(decode::<M>(&frame), Err(MessageError::TooLong { len }));
    } else {
        assert_eq!(decode::<M>(&frame), Ok(Some((m.clone(), frame.len()))));
    }
}

fuzz_target!(|data: &[u8]| {
    check_stream::<HopMessage>(data);
    check_stream::<StopMessage>(data);

    // The input as a body under a genuine prefix, what does not fit after it.
    let mut framed = Vec::with_capacity(data.len() + 2);
    push_varint(data.len().min(MAX_MESSAGE_LEN) as u64, &mut framed);
    framed.extend_from_slice(data);
    check_stream::<HopMessage>(&framed);
    check_stream::<StopMessage>(&framed);
});
