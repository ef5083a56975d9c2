//! Unsigned-varint helpers and an incremental reader of length-prefixed frames
//! (`uvarint(len) | body`), the framing of multistream-select, plaintext,
//! identify and relay messages.

use alloc::vec::Vec;

/// Appends `n` as an unsigned varint.
pub(crate) fn push(n: u64, out: &mut Vec<u8>) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(n, &mut buf));
}

/// Decodes a minimal unsigned varint; `None` if truncated, overlong or not minimal.
pub(crate) fn decode_u64(buf: &[u8]) -> Option<(u64, &[u8])> {
    unsigned_varint::decode::u64(buf).ok()
}

/// Why a length prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The varint overflows, is longer than 10 bytes, or is not minimal.
    BadLength,
    /// The announced body is longer than the configured maximum.
    TooLong { len: u64 },
}

/// Reads one length-prefixed frame from a byte stream fed in arbitrary pieces,
/// consuming exactly up to the end of the frame so whatever follows stays
/// with the caller. Memory is bounded by the `max` passed to [`Self::feed`].
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameReader {
    header: [u8; 10],
    header_len: u8,
    body_len: Option<usize>,
    body: Vec<u8>,
}

impl FrameReader {
    /// Consumes bytes of the current frame from `data`. Returns how many bytes
    /// were consumed and whether the frame is now complete (then read it with
    /// [`Self::body`] and call [`Self::clear`] before the next one).
    pub(crate) fn feed(&mut self, data: &[u8], max: usize) -> Result<(usize, bool), FrameError> {
        let mut used = 0;
        while self.body_len.is_none() {
            let Some(&b) = data.get(used) else {
                return Ok((used, false));
            };
            used += 1;
            if self.header_len as usize == self.header.len() {
                return Err(FrameError::BadLength);
            }
            self.header[self.header_len as usize] = b;
            self.header_len += 1;
            match unsigned_varint::decode::u64(&self.header[..self.header_len as usize]) {
                Ok((len, _)) => {
                    if len > max as u64 {
                        return Err(FrameError::TooLong { len });
                    }
                    self.body_len = Some(len as usize);
                    self.body.reserve_exact(len as usize);
                }
                Err(unsigned_varint::decode::Error::Insufficient) => {}
                Err(_) => return Err(FrameError::BadLength),
            }
        }
        let want = self.body_len.unwrap_or(0) - self.body.len();
        let take = want.min(data.len() - used);
        self.body.extend_from_slice(&data[used..used + take]);
        used += take;
        Ok((used, take == want))
    }

    /// The body of the completed frame.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the completed body out (give it back with [`Self::clear_reusing`]).
    pub(crate) fn take_body(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.body)
    }

    /// Forgets the current frame, reusing `buf` as the next body's storage.
    pub(crate) fn clear_reusing(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.body = buf;
        self.clear();
    }

    /// Forgets the current frame, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.header_len = 0;
        self.body_len = None;
        self.body.clear();
    }
}

/// Appends `uvarint(body.len()) | body`.
pub(crate) fn push_frame(body: &[u8], out: &mut Vec<u8>) {
    push(body.len() as u64, out);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_read_whole() {
        let mut stream = Vec::new();
        push_frame(b"hello", &mut stream);
        push_frame(&[7; 300], &mut stream);
        stream.extend_from_slice(b"tail");
        for step in [1, 2, 3, 7, 1000] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            let mut pos = 0;
            while got.len() < 2 {
                let end = (pos + step).min(stream.len());
                let (n, done) = r.feed(&stream[pos..end], 1024).unwrap();
                pos += n;
                if done {
                    got.push(r.body().to_vec());
                    r.clear();
                }
            }
            assert_eq!(got[0], b"hello");
            assert_eq!(got[1], [7; 300]);
            assert_eq!(&stream[pos..], b"tail", "step {step}");
        }
    }

    #[test]
    fn oversized_and_malformed_lengths_are_refused() {
        let mut r = FrameReader::default();
        assert_eq!(
            r.feed(&[0x80, 0x08], 1024),
            Ok((2, false)),
            "exactly max is fine"
        );
        let mut r = FrameReader::default();
        assert_eq!(
            r.feed(&[0x81, 0x08], 1024),
            Err(FrameError::TooLong { len: 1025 })
        );
        let mut r = FrameReader::default();
        assert_eq!(r.feed(&[0x80, 0x00], 1024), Err(FrameError::BadLength));
        let mut r = FrameReader::default();
        assert_eq!(r.feed(&[0xff; 11], usize::MAX), Err(FrameError::BadLength));
        let mut r = FrameReader::default();
        assert_eq!(r.feed(&[0x80], 1024), Ok((1, false)));
    }
}
