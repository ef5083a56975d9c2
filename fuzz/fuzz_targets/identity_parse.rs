//! PeerId (binary and text) and PublicKey protobuf parsing, with round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sansp2p::{PeerId, PublicKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = PeerId::from_bytes(data) {
        assert_eq!(id.as_bytes(), data);
        assert_eq!(id.to_base58().parse::<PeerId>(), Ok(id));
        assert_eq!(id.to_cid_string().parse::<PeerId>(), Ok(id));
        let _ = id.public_key();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<PeerId>() {
            assert_eq!(PeerId::from_bytes(id.as_bytes()), Ok(id));
        }
    }
    if let Ok(key) = PublicKey::try_decode_protobuf(data) {
        let again = PublicKey::try_decode_protobuf(&key.encode_protobuf()).unwrap();
        assert_eq!(again, key);
        assert!(key.to_peer_id().matches(&key));
    }
});
