//! Helpers shared by the fuzz targets.

/// Feeds `data` to a handshake machine in uneven pieces (1, 3, 17, 200 bytes,
/// then the rest, repeating) so partial frames are exercised. `read` returns
/// how many bytes it consumed (never more than given), or `None` once the
/// machine is finished. Stops then, or when a piece is not consumed at all.
pub fn feed_in_pieces(data: &[u8], mut read: impl FnMut(&[u8]) -> Option<usize>) {
    let mut pos = 0;
    for size in [1usize, 3, 17, 200, usize::MAX].iter().cycle() {
        if pos >= data.len() {
            break;
        }
        let end = pos.saturating_add(*size).min(data.len());
        let Some(used) = read(&data[pos..end]) else {
            break;
        };
        assert!(used <= end - pos, "consumed more than given");
        pos += used;
        if used == 0 {
            break;
        }
    }
}

/// What a well-behaved plaintext dialer sends on a new connection up to and
/// including its muxer proposal: multistream header, `/plaintext/2.0.0`, its
/// key exchange (key from `[2; 32]`), header again, `/yamux/1.0.0`. A
/// listener offering plaintext is in its yamux session right after it.
pub fn plaintext_upgrade_prefix() -> Vec<u8> {
    use sansp2p::security::plaintext;
    use sansp2p::Keypair;

    let mut p = Vec::new();
    let push = |p: &mut Vec<u8>, s: &str| {
        p.push(s.len() as u8 + 1);
        p.extend_from_slice(s.as_bytes());
        p.push(b'\n');
    };
    push(&mut p, "/multistream/1.0.0");
    push(&mut p, plaintext::PROTOCOL);
    let body = plaintext::encode_exchange(&Keypair::from_secret_bytes([2; 32]).public());
    p.push(body.len() as u8);
    p.extend_from_slice(&body);
    push(&mut p, "/multistream/1.0.0");
    push(&mut p, "/yamux/1.0.0");
    p
}
