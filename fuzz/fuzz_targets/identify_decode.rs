//! Identify message decoding, and the encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::protocols::identify::{decode, encode, MAX_SEND_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = decode(data) {
        let body = encode(&info);
        assert!(body.len() <= MAX_SEND_LEN);
        let again = decode(&body).unwrap();
        assert_eq!(again.public_key, info.public_key);
    }
});
