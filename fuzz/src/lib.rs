//! Helpers shared by the fuzz targets.

/// Feeds `data` to a handshake machine in uneven pieces (1, 3, 17, 200 bytes,
/// then the rest, repeating) so partial frames are exercised; `read`
/// returns how many bytes it consumed and must never claim more than it was
/// given. Stops once `finished` says so or a piece is not consumed at all.
pub fn feed_in_pieces(
    data: &[u8],
    mut read: impl FnMut(&[u8]) -> usize,
    mut finished: impl FnMut() -> bool,
) {
    let mut pos = 0;
    for size in [1usize, 3, 17, 200, usize::MAX].iter().cycle() {
        if pos >= data.len() || finished() {
            break;
        }
        let end = pos.saturating_add(*size).min(data.len());
        let used = read(&data[pos..end]);
        assert!(used <= end - pos, "consumed more than given");
        pos += used;
        if used == 0 {
            break;
        }
    }
}
