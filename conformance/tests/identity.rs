//! Identity conformance: keys, signatures and peer ids from the same secret
//! must be interchangeable between sansp2p and `libp2p-identity`.

use std::str::FromStr;

use sansp2p::{Keypair, PeerId, PublicKey};

/// Seeds covering all-zero, all-ones and a few ordinary secrets.
const SEEDS: [u8; 6] = [0, 1, 7, 42, 128, 255];

fn theirs(seed: [u8; 32]) -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes(seed).expect("any 32 bytes are an Ed25519 secret")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn same_secret_gives_the_same_public_key_and_peer_id() {
    for n in SEEDS {
        let ours = Keypair::from_secret_bytes([n; 32]);
        let their = theirs([n; 32]);

        assert_eq!(
            ours.public().encode_protobuf(),
            their.public().encode_protobuf(),
            "public key protobuf, seed {n}"
        );

        let their_id = their.public().to_peer_id();
        assert_eq!(
            ours.peer_id().to_base58(),
            their_id.to_base58(),
            "base58, seed {n}"
        );
        assert_eq!(
            ours.peer_id().to_string(),
            their_id.to_string(),
            "Display, seed {n}"
        );
        assert_eq!(
            ours.peer_id().as_bytes(),
            their_id.to_bytes().as_slice(),
            "bytes, seed {n}"
        );
    }
}

#[test]
fn peer_ids_parse_across_libraries() {
    for n in SEEDS {
        let ours = Keypair::from_secret_bytes([n; 32]).peer_id();
        let their = theirs([n; 32]).public().to_peer_id();

        // Text, both ways.
        let our_parse_of_theirs = PeerId::from_str(&their.to_base58()).expect("we parse theirs");
        assert_eq!(our_parse_of_theirs, ours, "seed {n}");
        let their_parse_of_ours =
            libp2p_identity::PeerId::from_str(&ours.to_string()).expect("they parse ours");
        assert_eq!(their_parse_of_ours, their, "seed {n}");

        // Binary multihash, both ways.
        assert_eq!(
            PeerId::from_bytes(&their.to_bytes()).expect("our from_bytes"),
            ours
        );
        assert_eq!(
            libp2p_identity::PeerId::from_bytes(ours.as_bytes()).expect("their from_bytes"),
            their
        );
    }
}

#[test]
fn public_keys_decode_across_libraries() {
    for n in SEEDS {
        let ours = Keypair::from_secret_bytes([n; 32]).public();
        let their = theirs([n; 32]).public();

        let ours_from_theirs = PublicKey::try_decode_protobuf(&their.encode_protobuf())
            .expect("we decode their encoding");
        assert_eq!(ours_from_theirs, ours, "seed {n}");
        let theirs_from_ours =
            libp2p_identity::PublicKey::try_decode_protobuf(&ours.encode_protobuf())
                .expect("they decode our encoding");
        assert_eq!(theirs_from_ours, their, "seed {n}");

        // The peer id each library derives from the other's decoded key.
        assert_eq!(
            ours_from_theirs.to_peer_id().as_bytes(),
            their.to_peer_id().to_bytes()
        );
        assert_eq!(
            theirs_from_ours.to_peer_id().to_bytes(),
            ours.to_peer_id().as_bytes()
        );
    }
}

#[test]
fn signatures_verify_across_libraries() {
    let messages: [&[u8]; 3] = [b"", b"sansp2p conformance", &[0xff; 1000]];
    for n in SEEDS {
        let ours = Keypair::from_secret_bytes([n; 32]);
        let their = theirs([n; 32]);
        for msg in messages {
            let our_sig = ours.sign(msg);
            assert!(
                their.public().verify(msg, &our_sig),
                "they verify ours, seed {n}"
            );

            let their_sig = their.sign(msg).expect("ed25519 signing cannot fail");
            assert!(
                ours.public().verify(msg, &their_sig),
                "we verify theirs, seed {n}"
            );

            // Ed25519 is deterministic (RFC 8032 §5.1.6), so both sign alike.
            assert_eq!(our_sig.as_slice(), their_sig.as_slice(), "seed {n}");

            // And both reject a corrupted signature or a different message.
            let mut bad = our_sig;
            bad[10] ^= 0x01;
            assert!(
                !their.public().verify(msg, &bad),
                "they reject a flipped bit, seed {n}"
            );
            assert!(
                !ours.public().verify(msg, &bad),
                "we reject a flipped bit, seed {n}"
            );
            assert!(!their.public().verify(b"another message", &our_sig));
            assert!(!ours.public().verify(b"another message", &their_sig));
        }
    }
}

#[test]
fn keys_of_different_seeds_do_not_verify_each_other() {
    let a = Keypair::from_secret_bytes([1; 32]);
    let b = theirs([2; 32]);
    assert!(!b.public().verify(b"m", &a.sign(b"m")));
    assert!(!a.public().verify(b"m", &b.sign(b"m").unwrap()));
}

// libp2p/specs, peer-ids/peer-ids.md, "Test vectors": the Ed25519 public key
// `080112201ed1…fce27e` and the private key `080112407e08…fce27e`, whose Data
// is `[private key bytes][public key bytes]` (section "Ed25519").
const SPEC_ED25519_PUBLIC: &str =
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
const SPEC_ED25519_PRIVATE: &str = "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2\
                                    e148ec9da60fee7d1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3c\
                                    acf6010f0e42d474fce27e";

#[test]
fn spec_public_key_vector_gives_the_same_peer_id() {
    let bytes = hex(SPEC_ED25519_PUBLIC);
    let ours = PublicKey::try_decode_protobuf(&bytes).expect("we decode the spec vector");
    let their = libp2p_identity::PublicKey::try_decode_protobuf(&bytes)
        .expect("they decode the spec vector");

    // Both re-encode it byte for byte (the spec's deterministic encoding).
    assert_eq!(ours.encode_protobuf(), bytes);
    assert_eq!(their.encode_protobuf(), bytes);

    let our_id = ours.to_peer_id();
    let their_id = their.to_peer_id();
    assert_eq!(our_id.as_bytes(), their_id.to_bytes().as_slice());
    assert_eq!(our_id.to_base58(), their_id.to_base58());
    // peer-ids.md, "Peer Ids": a key that serializes to at most 42 bytes is
    // inlined with the identity multihash (code 0x00, then the length).
    assert_eq!(&our_id.as_bytes()[..2], &[0x00, bytes.len() as u8]);
    assert_eq!(&our_id.as_bytes()[2..], bytes.as_slice());
}

#[test]
fn spec_private_key_vector_derives_the_spec_public_key() {
    let private = hex(SPEC_ED25519_PRIVATE);
    let their = libp2p_identity::Keypair::from_protobuf_encoding(&private)
        .expect("they decode the spec private key");
    // Protobuf header (Type = 1, Data of 64 bytes), then the 32 secret bytes.
    assert_eq!(&private[..4], &[0x08, 0x01, 0x12, 0x40]);
    let secret: [u8; 32] = private[4..36].try_into().unwrap();
    let ours = Keypair::from_secret_bytes(secret);

    assert_eq!(ours.public().encode_protobuf(), hex(SPEC_ED25519_PUBLIC));
    assert_eq!(
        ours.public().encode_protobuf(),
        their.public().encode_protobuf()
    );
    assert_eq!(
        ours.peer_id().to_base58(),
        their.public().to_peer_id().to_base58()
    );
    let sig = ours.sign(b"spec vector");
    assert!(their.public().verify(b"spec vector", &sig));
}

// peer-ids.md, "String representation": `12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA`
// (Ed25519, identity multihash) and `QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N`
// (sha256) are peer ids in the raw base58btc form.
const SPEC_BASE58_IDS: [&str; 2] = [
    "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
    "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
];

#[test]
fn spec_base58_examples_parse_alike() {
    for text in SPEC_BASE58_IDS {
        let ours = PeerId::from_str(text).expect("we parse the spec example");
        let their = libp2p_identity::PeerId::from_str(text).expect("they parse the spec example");
        assert_eq!(ours.as_bytes(), their.to_bytes().as_slice(), "{text}");
        assert_eq!(ours.to_string(), their.to_string(), "{text}");
    }
}

/// Splits a CID peer id per peer-ids.md ("<multibase-prefix><cid-version>
/// <multicodec><multihash>", CIDv1, `libp2p-key` = 0x72, base32 by default),
/// decoding the multibase with the independent `multibase` crate. Returns the
/// multihash.
fn cid_multihash(text: &str) -> Vec<u8> {
    let (base, bytes) = multibase::decode(text).expect("a multibase string");
    assert_eq!(
        base,
        multibase::Base::Base32Lower,
        "{text}: base32 is the spec's default"
    );
    assert_eq!(
        &bytes[..2],
        &[0x01, 0x72],
        "{text}: CIDv1 with the libp2p-key multicodec"
    );
    bytes[2..].to_vec()
}

#[test]
fn our_cid_strings_carry_their_peer_id() {
    for n in SEEDS {
        let ours = Keypair::from_secret_bytes([n; 32]).peer_id();
        let their = theirs([n; 32]).public().to_peer_id();
        let cid = ours.to_cid_string();
        let multihash = cid_multihash(&cid);
        assert_eq!(
            libp2p_identity::PeerId::from_bytes(&multihash).expect("they read the multihash"),
            their,
            "seed {n}"
        );
        assert_eq!(
            PeerId::from_str(&cid).expect("we parse our CID"),
            ours,
            "seed {n}"
        );
    }
}

// peer-ids.md, "String representation": `bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe`
// is a peer id (sha256) encoded as a CID.
#[test]
fn spec_cid_example_parses_to_the_multihash_inside_it() {
    let text = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe";
    let multihash = cid_multihash(text);
    let their = libp2p_identity::PeerId::from_bytes(&multihash).expect("they read the multihash");
    let ours = PeerId::from_str(text).expect("we parse the spec CID");
    assert_eq!(ours.as_bytes(), their.to_bytes().as_slice());
    assert_eq!(ours.to_base58(), their.to_base58());
    assert_eq!(
        ours.to_cid_string(),
        text,
        "our CID encoding round-trips the spec example"
    );
}
