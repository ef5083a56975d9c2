//! Binary multiaddr classification; where the `multiaddr` crate also parses
//! the bytes, both paths must give the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::addr::{classify, classify_multiaddr};

fuzz_target!(|data: &[u8]| {
    let ours = classify(data);
    if let Ok(ma) = multiaddr::Multiaddr::try_from(data.to_vec()) {
        if let (Ok(a), Ok(b)) = (&ours, classify_multiaddr(&ma)) {
            assert_eq!(*a, b, "{ma}");
        }
    }
});
