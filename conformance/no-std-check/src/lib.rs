//! Links the sansp2p core with default features off into a `#![no_std]`
//! crate that has its own `#[panic_handler]`. If any dependency pulls in
//! std, std's panic handler clashes with ours (E0152) and the build fails.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::panic::PanicInfo;

use sansp2p::multistream::Negotiator;
use sansp2p::security::plaintext::Handshake;
use sansp2p::{Instant, Keypair, PeerId};

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// Exercises each machine so its code is compiled for this configuration.
pub fn exercise(input: &[u8]) -> usize {
    let key = Keypair::from_secret_bytes([1; 32]);
    let _ = PeerId::from_bytes(input);
    let _ = sansp2p::addr::classify(input);
    let mut out = Vec::new();
    if let Ok(mut n) = Negotiator::listener(["/a"]) {
        let _ = n.handle_read(input);
        let _ = n.poll_transmit(&mut out);
    }
    let mut h = Handshake::new(&key.public(), None);
    let _ = h.handle_read(input);
    let _ = h.poll_transmit(&mut out);
    let _ = Instant::ZERO;
    out.len()
}
