//! Length-prefixed postcard frames.
//!
//! Every message on a taskhost control stream is one frame: a little-endian `u32` payload length
//! followed by that many bytes of [postcard](https://docs.rs/postcard). The encoder appends frames
//! to a caller-owned buffer so that many messages can be written with one call; the
//! [`FrameDecoder`] accepts bytes in arbitrary slices and yields complete frames.
//!
//! The decoder enforces a maximum frame size and rejects a larger length prefix *before*
//! allocating anything for it, so a hostile peer cannot make it allocate unbounded memory.
//! Malformed payloads produce a [`CodecError`], never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Size of the length prefix in front of every frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default maximum payload size of one control frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What can go wrong while encoding or decoding frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame's announced (or encoded) payload size is above the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The payload size announced by the length prefix or produced by the encoder.
        size: u64,
        /// The configured maximum payload size.
        limit: usize,
    },
    /// A message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    /// A frame's payload is not a valid encoding of the expected message type.
    #[error("malformed frame payload ({len} bytes): {source}")]
    Decode {
        /// Length of the offending payload.
        len: usize,
        /// What postcard reported.
        source: postcard::Error,
    },
    /// A frame's payload decoded but left unused bytes behind.
    #[error("malformed frame payload: {trailing} trailing bytes after the message")]
    TrailingBytes {
        /// Number of bytes left after the message.
        trailing: usize,
    },
    /// The byte stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Number of bytes of the incomplete frame that were received.
        buffered: usize,
    },
}

/// Appends one frame (`[u32 LE length][postcard bytes]`) holding `msg` to `buf`.
///
/// On error `buf` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_into_limited(msg, buf, u32::MAX as usize)
}

/// Like [`encode_into`], but fails with [`CodecError::FrameTooLarge`] (and leaves `buf` as it was)
/// when the payload is longer than `max_frame` bytes.
pub fn encode_into_limited<T: Serialize + ?Sized>(
    msg: &T,
    buf: &mut Vec<u8>,
    max_frame: usize,
) -> Result<(), CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = postcard::serialize_with_flavor(msg, AppendVec(buf)) {
        buf.truncate(start);
        return Err(CodecError::Encode(e));
    }
    let len = buf.len() - start - FRAME_HEADER_LEN;
    let limit = max_frame.min(u32::MAX as usize);
    if len > limit {
        buf.truncate(start);
        return Err(CodecError::FrameTooLarge {
            size: len as u64,
            limit,
        });
    }
    buf[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// A postcard output flavor appending to a borrowed `Vec`.
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Encodes `msg` as one frame in a new buffer.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(msg, &mut buf)?;
    Ok(buf)
}

/// Decodes a whole frame payload (without its length prefix) as a `T`, rejecting trailing bytes.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|source| CodecError::Decode {
            len: payload.len(),
            source,
        })?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes {
            trailing: rest.len(),
        });
    }
    Ok(msg)
}

/// Incremental decoder: feed it bytes in any slicing with [`push`](Self::push), take complete
/// frames with [`next_frame`](Self::next_frame) or [`decode`](Self::decode).
///
/// Memory use is bounded by the maximum frame size plus the bytes pushed but not yet consumed.
/// After an error the decoder is poisoned: every later call returns the same error.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
    error: Option<CodecError>,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame,
            error: None,
        }
    }

    /// The maximum payload size this decoder accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the maximum payload size for frames not yet returned.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Number of received bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The received bytes not yet returned as frames (for transports that interleave records
    /// of their own between frames).
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Discards the first `n` bytes of [`unread`](Self::unread).
    pub fn skip(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the payload of the next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// A length prefix above the limit yields [`CodecError::FrameTooLarge`] as soon as the
    /// four prefix bytes have arrived, before any payload is buffered.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CodecError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; FRAME_HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > self.max_frame {
            let e = CodecError::FrameTooLarge {
                size: len as u64,
                limit: self.max_frame,
            };
            self.error = Some(e.clone());
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        if avail.len() < FRAME_HEADER_LEN + len {
            // Reserve for the rest of this frame now that its (bounded) size is known.
            let missing = FRAME_HEADER_LEN + len - avail.len();
            self.buf.reserve(missing);
            return Ok(None);
        }
        let from = self.start + FRAME_HEADER_LEN;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Decodes the next complete frame as a `T`; `Ok(None)` if more bytes are needed.
    ///
    /// A payload that is not a valid `T` poisons the decoder.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let result = match self.next_frame()? {
            None => return Ok(None),
            Some(payload) => decode_payload::<T>(payload),
        };
        match result {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Call when the byte stream has ended: an error if a partial frame is still buffered.
    pub fn finish(&self) -> Result<(), CodecError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(CodecError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Data { key: String, bytes: Vec<u8> },
        Nested(Vec<Option<(u32, String)>>),
        Unit,
    }

    fn msg_strategy() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u64>().prop_map(Msg::Ping),
            (".{0,20}", proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(key, bytes)| Msg::Data { key, bytes }),
            proptest::collection::vec(proptest::option::of((any::<u32>(), ".{0,5}")), 0..10)
                .prop_map(Msg::Nested),
            Just(Msg::Unit),
        ]
    }

    fn feed_split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut prev = 0;
        for c in cuts {
            parts.push(bytes[prev..c].to_vec());
            prev = c;
        }
        parts.push(bytes[prev..].to_vec());
        parts
    }

    #[test]
    fn round_trip_and_layout() {
        let mut buf = Vec::new();
        encode_into(&Msg::Ping(7), &mut buf).unwrap();
        encode_into(&Msg::Unit, &mut buf).unwrap();
        assert_eq!(&buf[..4], &2u32.to_le_bytes());
        let mut dec = FrameDecoder::new(1024);
        dec.push(&buf);
        assert_eq!(dec.decode::<Msg>().unwrap(), Some(Msg::Ping(7)));
        assert_eq!(dec.decode::<Msg>().unwrap(), Some(Msg::Unit));
        assert_eq!(dec.decode::<Msg>().unwrap(), None);
        dec.finish().unwrap();
    }

    #[test]
    fn too_large_rejected_before_payload() {
        let mut dec = FrameDecoder::new(100);
        dec.push(&u32::MAX.to_le_bytes());
        let err = dec.next_frame().unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 100 bytes"
        );
        assert!(dec.buf.capacity() < 1024);
        // Poisoned.
        dec.push(&[0, 0, 0, 0]);
        assert!(dec.next_frame().is_err());
    }

    #[test]
    fn encoder_limit() {
        let mut buf = vec![1, 2, 3];
        let err = encode_into_limited(&vec![0u8; 200], &mut buf, 100).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { limit: 100, .. }));
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn trailing_and_truncated() {
        let mut buf = Vec::new();
        encode_into(&(1u8, 2u8), &mut buf).unwrap();
        let mut dec = FrameDecoder::new(100);
        dec.push(&buf);
        assert!(matches!(
            dec.decode::<u8>(),
            Err(CodecError::TrailingBytes { trailing: 1 })
        ));
        let mut dec = FrameDecoder::new(100);
        dec.push(&buf[..5]);
        assert_eq!(dec.decode::<(u8, u8)>().unwrap(), None);
        assert!(matches!(
            dec.finish(),
            Err(CodecError::Truncated { buffered: 5 })
        ));
    }

    proptest! {
        #[test]
        fn random_messages_random_splits(
            msgs in proptest::collection::vec(msg_strategy(), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut buf = Vec::new();
            for m in &msgs {
                encode_into(m, &mut buf).unwrap();
            }
            let mut dec = FrameDecoder::new(4096);
            let mut out = Vec::new();
            for part in feed_split(&buf, &cuts) {
                dec.push(&part);
                while let Some(m) = dec.decode::<Msg>().unwrap() {
                    out.push(m);
                }
            }
            dec.finish().unwrap();
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn random_garbage_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut dec = FrameDecoder::new(512);
            for part in feed_split(&bytes, &cuts) {
                dec.push(&part);
                while let Ok(Some(_)) = dec.decode::<Msg>() {}
                // Bounded: at most one maximal frame plus what was pushed.
                prop_assert!(dec.buf.capacity() <= 2 * (512 + 4 + bytes.len()) + 64);
            }
            let _ = dec.finish();
        }

        #[test]
        fn random_payloads_decode_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_payload::<Msg>(&bytes);
            let _ = decode_payload::<Vec<String>>(&bytes);
        }
    }
}
