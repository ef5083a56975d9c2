//! Yamux header decode: any 12 bytes either fail with a typed error or
//! re-encode to exactly themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::yamux::Header;

fuzz_target!(|data: [u8; 12]| {
    if let Ok(h) = Header::decode(&data) {
        assert_eq!(h.encode(), data);
    }
});
