//! multistream-select 1.0.0 messages.
//!
//! Every message is `uvarint(len) | text | '\n'` where `len` counts the
//! newline. The header is `/multistream/1.0.0`; `na` refuses a proposal;
//! `ls` asks for the listener's protocols, and its answer is a single frame
//! holding one length-prefixed line per protocol followed by a final `\n`.

use alloc::vec::Vec;

use crate::varint;

/// The multistream-select protocol id, sent as the header.
pub const PROTOCOL_ID: &str = "/multistream/1.0.0";

/// Default cap on a message body including its `\n` (go-multistream's 1024).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1024;

/// Most entries accepted in an `ls` response (rust-libp2p's cap).
pub const MAX_LS_ENTRIES: usize = 1000;

/// One multistream-select message (borrowing from the frame body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `/multistream/1.0.0`
    Header,
    /// A protocol name, proposed by the dialer or echoed by the listener.
    Protocol(&'a str),
    /// `na`: the proposal is refused.
    Na,
    /// `ls`: list your protocols.
    Ls,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The length prefix is not a valid minimal varint.
    #[error("malformed length prefix")]
    BadLength,
    /// The announced length exceeds the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The body does not end with `\n`.
    #[error("message does not end with a newline")]
    MissingNewline,
    /// The body is not UTF-8.
    #[error("message is not UTF-8")]
    InvalidUtf8,
    /// A protocol name that does not start with `/` or contains a newline.
    #[error("invalid protocol name")]
    InvalidProtocol,
    /// An `ls` response that is malformed or lists too many protocols.
    #[error("malformed ls response")]
    BadLsResponse,
}

impl MessageError {
    pub(crate) fn from_frame(e: varint::FrameError, max: usize) -> Self {
        match e {
            varint::FrameError::BadLength => MessageError::BadLength,
            varint::FrameError::TooLong { len } => MessageError::TooLong { len, max },
        }
    }
}

/// Whether `name` is a protocol name we send or accept: a path, no
/// whitespace or control character. Names conventionally start with `/`;
/// a few deployed ones do not but still have one (go-filecoin's
/// `fil/heartbeat/1.0.0`, which go-multistream and js-libp2p take), so a
/// `/` anywhere will do. Bare words (`yamux`, `GET`) are refused.
pub fn is_valid_protocol(name: &str) -> bool {
    name.contains('/') && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl<'a> Message<'a> {
    /// Parses a frame body (everything after the length prefix, newline included).
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let text = body
            .strip_suffix(b"\n")
            .ok_or(MessageError::MissingNewline)?;
        let text = core::str::from_utf8(text).map_err(|_| MessageError::InvalidUtf8)?;
        Ok(match text {
            PROTOCOL_ID => Message::Header,
            "na" => Message::Na,
            "ls" => Message::Ls,
            name if is_valid_protocol(name) => Message::Protocol(name),
            _ => return Err(MessageError::InvalidProtocol),
        })
    }

    /// Appends the framed message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let text = match self {
            Message::Header => PROTOCOL_ID,
            Message::Protocol(name) => name,
            Message::Na => "na",
            Message::Ls => "ls",
        };
        varint::push(text.len() as u64 + 1, out);
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

/// Appends the framed answer to `ls`: one frame whose body is
/// `uvarint(len) name '\n'` per protocol, then a final `\n`.
pub fn encode_ls_response<'p>(protocols: impl IntoIterator<Item = &'p str>, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    for name in protocols {
        Message::Protocol(name).encode(&mut body);
    }
    body.push(b'\n');
    varint::push_frame(&body, out);
}

/// Parses the body of an `ls` response frame into protocol names.
pub fn parse_ls_response(body: &[u8]) -> Result<Vec<&str>, MessageError> {
    let mut rest = body
        .strip_suffix(b"\n")
        .ok_or(MessageError::BadLsResponse)?;
    let mut names = Vec::new();
    while !rest.is_empty() {
        if names.len() == MAX_LS_ENTRIES {
            return Err(MessageError::BadLsResponse);
        }
        let (len, tail) = varint::decode_u64(rest).ok_or(MessageError::BadLsResponse)?;
        if len > tail.len() as u64 {
            return Err(MessageError::BadLsResponse);
        }
        let (entry, tail) = tail.split_at(len as usize);
        match Message::parse(entry)? {
            Message::Protocol(name) => names.push(name),
            _ => return Err(MessageError::BadLsResponse),
        }
        rest = tail;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    fn encoded(m: Message<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v);
        v
    }

    // REFERENCE.md, multistream-select: exact bytes.
    #[test]
    fn spec_bytes() {
        assert_eq!(encoded(Message::Na), [0x03, b'n', b'a', b'\n']);
        assert_eq!(encoded(Message::Ls), [0x03, b'l', b's', b'\n']);
        let mut header = vec![0x13];
        header.extend_from_slice(b"/multistream/1.0.0\n");
        assert_eq!(encoded(Message::Header), header);
        let mut proto = vec![0x0d];
        proto.extend_from_slice(b"/yamux/1.0.0\n");
        assert_eq!(encoded(Message::Protocol("/yamux/1.0.0")), proto);
    }

    #[test]
    fn parse_round_trips() {
        for m in [
            Message::Header,
            Message::Na,
            Message::Ls,
            Message::Protocol("/noise"),
        ] {
            let bytes = encoded(m);
            assert_eq!(Message::parse(&bytes[1..]), Ok(m));
        }
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        assert_eq!(Message::parse(b"/a"), Err(MessageError::MissingNewline));
        assert_eq!(Message::parse(b"\xff\n"), Err(MessageError::InvalidUtf8));
        assert_eq!(
            Message::parse(b"yamux\n"),
            Err(MessageError::InvalidProtocol)
        );
        assert_eq!(
            Message::parse(b"/a b\n"),
            Err(MessageError::InvalidProtocol)
        );
        assert_eq!(
            Message::parse(b"fil/heartbeat/1.0.0\n"),
            Ok(Message::Protocol("fil/heartbeat/1.0.0"))
        );
        assert_eq!(
            Message::parse(b"/a\nb\n"),
            Err(MessageError::InvalidProtocol)
        );
        assert_eq!(Message::parse(b"\n"), Err(MessageError::InvalidProtocol));
    }

    #[test]
    fn ls_response_round_trips() {
        let mut out = Vec::new();
        encode_ls_response(["/a", "/bb/1.0.0"], &mut out);
        // one frame: total length, then the nested lines, then '\n'
        assert_eq!(out[0] as usize, out.len() - 1);
        assert_eq!(parse_ls_response(&out[1..]), Ok(vec!["/a", "/bb/1.0.0"]));
        assert_eq!(parse_ls_response(b"\n"), Ok(vec![]));
        assert_eq!(
            parse_ls_response(b"\x05/a\n"),
            Err(MessageError::BadLsResponse)
        );
        assert_eq!(
            parse_ls_response(b"\x03na\n\n"),
            Err(MessageError::BadLsResponse)
        );
    }

    // multistream-select 1.0.0 (github.com/multiformats/multistream-select,
    // README "Listing"; REFERENCE.md): the answer to `ls` is ONE
    // length-prefixed frame holding, per protocol, `uvarint(len) proto '\n'`
    // (len counts the newline), then a final `\n`; the outer varint is the
    // total size of all that. (The README's "ls example in detail" sketches
    // an older shape with a protocol count; go-multistream and rust-libp2p
    // send the one above, and so do we.) The vectors are written out by hand.
    const LS_A_YAMUX: [u8; 20] = [
        0x13, // body: 4 + 14 + 1 = 19 bytes
        0x03, b'/', b'a', b'\n', // "/a": 2 + newline
        0x0d, b'/', b'y', b'a', b'm', b'u', b'x', b'/', b'1', b'.', b'0', b'.', b'0',
        b'\n', // "/yamux/1.0.0": 12 + newline
        b'\n', // end of the list
    ];

    #[test]
    fn ls_response_spec_bytes_are_encoded_exactly() {
        let mut out = Vec::new();
        encode_ls_response(["/a", "/yamux/1.0.0"], &mut out);
        assert_eq!(out, LS_A_YAMUX);

        // Nothing to list: a frame holding only the final newline.
        let mut out = Vec::new();
        encode_ls_response([], &mut out);
        assert_eq!(out, [0x01, b'\n']);

        // Multi-byte varints, inner and outer: a 140-byte name is an entry
        // of 141 (8d 01) taking 2 + 141 bytes; the body is 144 (90 01).
        let name: String = core::iter::once('/')
            .chain(core::iter::repeat_n('x', 139))
            .collect();
        let mut expected = vec![0x90, 0x01, 0x8d, 0x01, b'/'];
        expected.extend_from_slice(&[b'x'; 139]);
        expected.extend_from_slice(b"\n\n");
        let mut out = Vec::new();
        encode_ls_response([name.as_str()], &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn ls_response_spec_bytes_are_parsed() {
        // The outer prefix is a one-byte varint here: the body follows it.
        assert_eq!(LS_A_YAMUX[0] as usize, LS_A_YAMUX.len() - 1);
        assert_eq!(
            parse_ls_response(&LS_A_YAMUX[1..]),
            Ok(vec!["/a", "/yamux/1.0.0"])
        );
        assert_eq!(parse_ls_response(b"\n"), Ok(vec![]));
        // A two-byte entry length (8d 01 = 141).
        let mut body = vec![0x8d, 0x01, b'/'];
        body.extend_from_slice(&[b'x'; 139]);
        body.extend_from_slice(b"\n\n");
        let names = parse_ls_response(&body).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].len(), 140);
        // Without the final newline the list is malformed, even though every
        // entry is whole.
        assert_eq!(
            parse_ls_response(&LS_A_YAMUX[1..LS_A_YAMUX.len() - 1]),
            Err(MessageError::BadLsResponse)
        );
    }

    #[test]
    fn ls_response_entry_count_is_capped() {
        let mut body = Vec::new();
        for _ in 0..=MAX_LS_ENTRIES {
            Message::Protocol("/a").encode(&mut body);
        }
        body.push(b'\n');
        assert_eq!(parse_ls_response(&body), Err(MessageError::BadLsResponse));
    }
}
