//! The ranker on arbitrary address lists: every output address was an
//! input, none twice, delays bounded by the config, and the no-delay ranker
//! keeps the same addresses.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::dial::{rank, rank_no_delay, Addr, RankerConfig};

#[derive(Debug, Arbitrary)]
struct Input {
    /// (ip byte, port, kind) triples turned into real multiaddrs, plus raw bytes.
    shaped: Vec<(u8, u16, u8, bool)>,
    raw: Vec<Vec<u8>>,
}

fn shaped(ip: u8, port: u16, kind: u8, v6: bool) -> Vec<u8> {
    let mut a = Vec::new();
    if v6 {
        a.push(0x29);
        let mut o = [0u8; 16];
        o[0] = if ip % 3 == 0 { 0xfd } else { 0x26 };
        o[15] = ip;
        a.extend_from_slice(&o);
    } else {
        a.push(0x04);
        a.extend_from_slice(&[if ip % 3 == 0 { 10 } else { 147 }, 75, 0, ip]);
    }
    let port = port.to_be_bytes();
    match kind % 6 {
        0 => a.extend_from_slice(&[0x06, port[0], port[1]]),
        1 => a.extend_from_slice(&[0x06, port[0], port[1], 0xdd, 0x03]),
        2 => a.extend_from_slice(&[0x91, 0x02, port[0], port[1], 0xcd, 0x03]),
        3 => a.extend_from_slice(&[0x91, 0x02, port[0], port[1], 0xcc, 0x03]),
        4 => a.extend_from_slice(&[0x91, 0x02, port[0], port[1], 0xcd, 0x03, 0xd1, 0x03]),
        _ => a.extend_from_slice(&[0x06, port[0], port[1], 0xa2, 0x02]),
    }
    a
}

fuzz_target!(|input: Input| {
    let mut addrs: Vec<Addr> = input
        .shaped
        .iter()
        .take(64)
        .filter_map(|&(ip, port, kind, v6)| Addr::from_bytes(shaped(ip, port, kind, v6)).ok())
        .collect();
    addrs.extend(
        input
            .raw
            .into_iter()
            .take(16)
            .filter_map(|b| Addr::from_bytes(b).ok()),
    );
    let config = RankerConfig::default();
    let ranked = rank(addrs.clone(), &config);
    let mut seen = std::collections::HashSet::new();
    for (a, delay) in &ranked {
        assert!(addrs.contains(a), "ranked an address that was not given");
        assert!(seen.insert(a.clone()), "an address ranked twice");
        assert!(*delay <= std::time::Duration::from_secs(3600));
    }
    let flat = rank_no_delay(addrs);
    assert!(flat.iter().all(|(_, d)| d.is_zero()));
    assert_eq!(flat.len(), ranked.len());
});
