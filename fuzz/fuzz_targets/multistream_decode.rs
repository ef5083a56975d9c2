//! Every multistream-select message parser on arbitrary bytes, and the
//! encode/parse round trip for whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::multistream::codec::{parse_ls_response, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        // The frame body after the length prefix must parse back to the same message.
        let body_start = out.len() - data.len();
        assert_eq!(&out[body_start..], data);
        assert_eq!(Message::parse(&out[body_start..]), Ok(msg));
    }
    let _ = parse_ls_response(data);
});
