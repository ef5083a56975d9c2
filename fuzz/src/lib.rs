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
