#![allow(missing_docs)]
//! Throughput and footprint of two in-memory yamux sessions.
//!
//! Run with `cargo bench`. Prints, per scenario: payload GB/s delivered,
//! frames decoded per second, payload bytes copied by the machines per byte
//! delivered (the bench's own "wire" copy, standing in for the kernel, is
//! listed apart), and the memory held per idle stream and per connection.

use std::hint::black_box;
use std::time::Instant as WallClock;

use bytes::Bytes;
use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, Header, ReadError, Role, Session, StreamId, WriteError};

const NOW: Instant = Instant::ZERO;

fn pair(config: Config) -> (Session, Session) {
    let a = Session::new(NOW, Role::Client, config.clone()).unwrap();
    let b = Session::new(NOW, Role::Server, config).unwrap();
    (a, b)
}

/// Socket-buffer sized batches: what one write/read syscall pair would move.
const BATCH: usize = 256 * 1024;

/// Moves every frame from `from` into `to` through a wire buffer, at most
/// `BATCH` bytes at a time; returns the bytes that crossed.
fn pump(from: &mut Session, to: &mut Session, wire: &mut Vec<u8>) -> usize {
    let mut total = 0;
    loop {
        wire.clear();
        while wire.len() < BATCH {
            let Some(t) = from.poll_transmit(NOW) else {
                break;
            };
            wire.extend_from_slice(&t.header);
            wire.extend_from_slice(&t.payload);
        }
        if wire.is_empty() {
            return total;
        }
        let n = to.handle_read(NOW, wire);
        assert_eq!(n, wire.len());
        total += n;
    }
}

fn open(a: &mut Session, b: &mut Session, n: usize, wire: &mut Vec<u8>) -> Vec<StreamId> {
    let ids: Vec<StreamId> = (0..n).map(|_| a.open_stream().unwrap()).collect();
    pump(a, b, wire);
    while let Some(e) = b.poll_event() {
        if let Event::InboundStream { id } = e {
            b.accept(id).unwrap();
        }
    }
    pump(b, a, wire);
    while a.poll_event().is_some() {}
    ids
}

struct Figures {
    secs: f64,
    delivered: u64,
    frames: u64,
    copied: u64,
    wire: u64,
}

/// Sends `total` bytes from a to b over `streams` streams in `write_size`
/// writes, in Data frames of at most `split` bytes.
fn run(streams: usize, write_size: usize, total: u64, zero_copy_read: bool, split: u32) -> Figures {
    let (mut a, mut b) = pair(Config {
        split_send_size: split,
        ..Config::default()
    });
    let mut wire = Vec::with_capacity(4 << 20);
    let ids = open(&mut a, &mut b, streams, &mut wire);
    let payload: Vec<u8> = (0..write_size).map(|i| i as u8).collect();
    let mut offs = vec![0usize; streams];
    let mut written = 0u64;
    let mut delivered = 0u64;
    let mut wire_bytes = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let start = WallClock::now();
    while delivered < total {
        for (i, &id) in ids.iter().enumerate() {
            while written < total {
                match a.write(id, &payload[offs[i]..]) {
                    Ok(n) => {
                        written += n as u64;
                        offs[i] = (offs[i] + n) % write_size;
                    }
                    Err(WriteError::Blocked) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        wire_bytes += pump(&mut a, &mut b, &mut wire) as u64;
        for &id in &ids {
            loop {
                if zero_copy_read {
                    match b.read_chunk(id, usize::MAX) {
                        Ok(Some(chunk)) => delivered += black_box(chunk).len() as u64,
                        Ok(None) | Err(ReadError::Blocked) => break,
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match b.read(id, &mut buf) {
                        Ok(n) if n > 0 => delivered += n as u64,
                        Ok(_) | Err(ReadError::Blocked) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        wire_bytes += pump(&mut b, &mut a, &mut wire) as u64;
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
    let secs = start.elapsed().as_secs_f64();
    let (sa, sb) = (a.stats(), b.stats());
    let copied =
        sa.bytes_written + sa.bytes_transmit_copied + sb.bytes_received + sb.bytes_read_copied;
    Figures {
        secs,
        delivered,
        frames: sa.frames_received + sb.frames_received,
        copied,
        wire: wire_bytes,
    }
}

fn footprint() {
    const N: usize = 10_000;
    let config = Config {
        max_streams: N,
        ack_backlog: N,
        accept_backlog: N,
        receive_budget: 256 * 1024 * N as u64,
        ..Config::default()
    };
    let (mut a, mut b) = pair(config);
    let mut wire = Vec::new();
    pump(&mut a, &mut b, &mut wire);
    pump(&mut b, &mut a, &mut wire);
    let fresh = a.memory_footprint();
    let ids = open(&mut a, &mut b, N, &mut wire);
    // Exercise each stream once so buffers have existed, then go idle.
    for &id in &ids {
        a.write(id, b"x").unwrap();
    }
    pump(&mut a, &mut b, &mut wire);
    for &id in &ids {
        let mut one = [0u8; 1];
        b.read(id, &mut one).unwrap();
        assert_eq!(b.read(id, &mut one), Err(ReadError::Blocked));
    }
    pump(&mut b, &mut a, &mut wire);
    let idle_a = a.memory_footprint();
    let idle_b = b.memory_footprint();
    println!(
        "footprint: fresh connection {} B; per idle stream {} B (opener), {} B (acceptor)",
        fresh,
        (idle_a - fresh) / N,
        (idle_b - fresh) / N
    );
    let _ = Bytes::new();
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let total: u64 = if quick { 8 << 20 } else { 1 << 30 };
    println!("yamux in-memory pair, {} MiB per scenario", total >> 20);
    println!(
        "{:>8} {:>8} {:>6} {:>9} {:>12} {:>14} {:>10}",
        "streams", "write", "read", "GB/s", "frames/s", "copies/byte", "wire/byte"
    );
    for &(streams, write) in &[(1, 16 << 10), (1, 1 << 20), (64, 16 << 10), (64, 1 << 20)] {
        for zero_copy in [true, false] {
            let f = run(streams, write, total, zero_copy, 16 * 1024);
            println!(
                "{:>8} {:>7}K {:>6} {:>9.2} {:>12.0} {:>14.3} {:>10.3}",
                streams,
                write >> 10,
                if zero_copy { "chunk" } else { "copy" },
                f.delivered as f64 / f.secs / 1e9,
                f.frames as f64 / f.secs,
                f.copied as f64 / f.delivered as f64,
                f.wire as f64 / f.delivered as f64,
            );
        }
    }
    // Per-frame cost: 64-byte Data frames.
    let f = run(1, 16 << 10, total / 64, true, 64);
    println!(
        "64-byte frames: {:.0} frames/s decoded+delivered, {:.2} GB/s payload",
        f.frames as f64 / f.secs,
        f.delivered as f64 / f.secs / 1e9
    );
    decode_rate(if quick { 1_000_000 } else { 50_000_000 });
    footprint();
}

/// Raw header decoding, no session.
fn decode_rate(n: u64) {
    let headers: Vec<[u8; 12]> = (0..1024u32)
        .map(|i| {
            let t = (i % 4) as u8;
            let flags: u16 = match t {
                2 => 1,
                3 => 0,
                _ => (i % 3) as u16 * 4,
            };
            let id = if t >= 2 { 0 } else { i * 2 + 1 };
            let mut h = [0u8; 12];
            h[1] = t;
            h[2..4].copy_from_slice(&flags.to_be_bytes());
            h[4..8].copy_from_slice(&id.to_be_bytes());
            h[8..12].copy_from_slice(&i.to_be_bytes());
            h
        })
        .collect();
    let start = WallClock::now();
    let mut ok = 0u64;
    for i in 0..n {
        if Header::decode(black_box(&headers[(i % 1024) as usize])).is_ok() {
            ok += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ok, n);
    println!("Header::decode: {:.0} headers/s", n as f64 / secs);
}
