//! The wire codec: serde messages encoded with bincode 2 inside length-prefixed frames.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload. The payload is the
//! message encoded with bincode's standard configuration (little-endian, varint integers). Every length is
//! checked against the configured frame limit *before* anything is allocated for it, so a peer that claims
//! a 4 GiB frame costs us four bytes of reading and an error.
//!
//! Decoding is strict: the payload must decode completely as the expected type (no bytes left over), and
//! any failure is a [`CodecError`], never a panic. Lengths claimed inside a payload are bounded by the
//! payload's own size before anything is allocated for them, so decoding a frame of `n` bytes allocates
//! at most about `4n` (plus serde's cautious pre-allocation of at most 1 MiB per container), whatever the
//! frame claims. Byte blobs inside messages ([`RawBytes`], and the
//! data of a [`TensorBytes`](crate::TensorBytes)) are not copied on decode: they become slices of the
//! received frame.

use std::cell::RefCell;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CodecError;

/// Bytes in a frame header (the little-endian `u32` payload length).
pub const FRAME_HEADER_LEN: usize = 4;
/// The default frame limit: 64 MiB, room for a 16M-parameter f32 tensor.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// The largest frame limit a codec accepts (what a `u32` header can express).
pub const MAX_FRAME_CEILING: usize = u32::MAX as usize;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The bytes the encoding of a blob of `len` bytes takes: its length prefix and the blob.
pub(crate) fn blob_len(len: u64) -> u64 {
    let mut size = bincode::enc::write::SizeWriter::default();
    // Writing a `u64` to a size counter cannot fail; 9 bytes is the longest prefix there is.
    let prefix = match bincode::serde::encode_into_writer(len, &mut size, bincode_config()) {
        Ok(()) => size.bytes_written as u64,
        Err(_) => 9,
    };
    prefix + len
}

/// Encodes and decodes messages and frames under one frame-size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_frame: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self { max_frame: DEFAULT_MAX_FRAME }
    }
}

impl Codec {
    /// A codec whose frames carry at most `max_frame` payload bytes (64 ..= `u32::MAX`).
    pub fn new(max_frame: usize) -> Result<Self, CodecError> {
        if !(64..=MAX_FRAME_CEILING).contains(&max_frame) {
            return Err(CodecError::BadLimit { limit: max_frame, max: MAX_FRAME_CEILING });
        }
        Ok(Self { max_frame })
    }

    /// The payload limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Checks a payload length against the limit.
    pub fn check_len(&self, len: u64) -> Result<usize, CodecError> {
        match usize::try_from(len) {
            Ok(n) if n <= self.max_frame => Ok(n),
            _ => Err(CodecError::FrameTooLarge { claimed: len, limit: self.max_frame }),
        }
    }

    /// Encodes `message` as a payload (no frame header).
    pub fn encode<M: Serialize + ?Sized>(&self, message: &M) -> Result<Bytes, CodecError> {
        self.encode_with_header(message, 0)
    }

    /// Encodes `message` as a complete frame: header, then payload.
    pub fn encode_frame<M: Serialize + ?Sized>(&self, message: &M) -> Result<Bytes, CodecError> {
        self.encode_with_header(message, FRAME_HEADER_LEN)
    }

    fn encode_with_header<M: Serialize + ?Sized>(&self, message: &M, header: usize) -> Result<Bytes, CodecError> {
        let encode_err = |e: bincode::error::EncodeError| CodecError::Encode { reason: e.to_string() };
        // Two passes: measure, then write into a buffer of exactly the right size (one copy of any blob).
        let mut size = bincode::enc::write::SizeWriter::default();
        crate::resident::begin_pass();
        bincode::serde::encode_into_writer(message, &mut size, bincode_config()).map_err(encode_err)?;
        let len = size.bytes_written;
        self.check_len(len as u64)?;
        let mut out = BytesMut::with_capacity(header + len);
        if header > 0 {
            // `check_len` bounds `len` by the limit, which is at most `u32::MAX`.
            out.put_u32_le(len as u32);
        }
        let mut writer = BytesMutWriter(&mut out);
        crate::resident::begin_pass();
        bincode::serde::encode_into_writer(message, &mut writer, bincode_config()).map_err(encode_err)?;
        debug_assert_eq!(out.len(), header + len);
        Ok(out.freeze())
    }

    /// Decodes a payload (no frame header) as an `M`. Blobs inside `M` become slices of `payload`.
    pub fn decode<M: DeserializeOwned>(&self, payload: &Bytes) -> Result<M, CodecError> {
        self.check_len(payload.len() as u64)?;
        let _frame = CurrentFrame::enter(payload.clone());
        let (message, read): (M, usize) =
            decode_bounded(payload).map_err(|e| CodecError::Malformed { reason: e.to_string() })?;
        if read != payload.len() {
            return Err(CodecError::TrailingBytes { extra: payload.len() - read });
        }
        Ok(message)
    }

    /// Decodes one complete frame (header and payload, nothing after it).
    pub fn decode_frame<M: DeserializeOwned>(&self, frame: &Bytes) -> Result<M, CodecError> {
        let mut decoder = FrameDecoder::new(*self);
        decoder.extend(frame);
        match decoder.next_frame()? {
            Some(payload) if decoder.buffered() == 0 => self.decode(&payload),
            Some(_) => Err(CodecError::TrailingBytes { extra: decoder.buffered() }),
            None => Err(CodecError::Truncated {
                expected: decoder.expected().unwrap_or(FRAME_HEADER_LEN as u64),
                got: frame.len() as u64,
            }),
        }
    }

    /// Parses a frame header, returning the payload length it announces if the limit allows it.
    pub fn parse_header(&self, header: [u8; FRAME_HEADER_LEN]) -> Result<usize, CodecError> {
        self.check_len(u64::from(u32::from_le_bytes(header)))
    }

    /// The header announcing a payload of `len` bytes.
    pub fn header(&self, len: usize) -> Result<[u8; FRAME_HEADER_LEN], CodecError> {
        let len = self.check_len(len as u64)?;
        Ok((len as u32).to_le_bytes())
    }
}

/// Decodes with bincode's claim limit set to what the payload can legitimately expand to.
///
/// bincode counts, while decoding, the memory each container claims: `len × size_of::<T>()` for a
/// sequence of `len` elements of `T`, and a string's or byte buffer's length. An element can be much
/// smaller on the wire than in memory — an empty `Vec` is one byte encoded and 24 bytes in memory, a
/// tensor's shape one byte per dimension and eight in memory — so the limit is a multiple of the
/// payload's length: 64x for payloads up to 16 MiB (at least 256 KiB), 16x above (large payloads are
/// dominated by tensor data, whose claims match its bytes). It still stops a claim of, say, 2^63 bytes
/// from being allocated before the decoder notices the bytes are not there. bincode takes the limit as a
/// const generic, so it is picked from payload buckets growing by 4x.
fn decode_bounded<'de, M: Deserialize<'de>>(payload: &'de [u8]) -> Result<(M, usize), bincode::error::DecodeError> {
    fn with<'de, M: Deserialize<'de>, const LIMIT: usize>(
        payload: &'de [u8],
    ) -> Result<(M, usize), bincode::error::DecodeError> {
        bincode::serde::borrow_decode_from_slice(payload, bincode_config().with_limit::<LIMIT>())
    }
    const SMALL: usize = 64;
    const LARGE: usize = 16;
    match payload.len() {
        n if n <= 0x1000 => with::<M, { 0x1000 * SMALL }>(payload),
        n if n <= 0x4000 => with::<M, { 0x4000 * SMALL }>(payload),
        n if n <= 0x1_0000 => with::<M, { 0x1_0000 * SMALL }>(payload),
        n if n <= 0x4_0000 => with::<M, { 0x4_0000 * SMALL }>(payload),
        n if n <= 0x10_0000 => with::<M, { 0x10_0000 * SMALL }>(payload),
        n if n <= 0x40_0000 => with::<M, { 0x40_0000 * SMALL }>(payload),
        n if n <= 0x100_0000 => with::<M, { 0x100_0000 * SMALL }>(payload),
        n if n <= 0x400_0000 => with::<M, { 0x400_0000 * LARGE }>(payload),
        n if n <= 0x1000_0000 => with::<M, { 0x1000_0000 * LARGE }>(payload),
        _ => with::<M, { MAX_FRAME_CEILING.saturating_mul(LARGE) }>(payload),
    }
}

struct BytesMutWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BytesMutWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Splits a byte stream into frames, refusing any frame over the limit as soon as its header arrives.
#[derive(Debug)]
pub struct FrameDecoder {
    codec: Codec,
    buf: BytesMut,
    pending: Option<usize>,
}

impl FrameDecoder {
    /// A decoder for a stream framed by `codec`.
    pub fn new(codec: Codec) -> Self {
        Self { codec, buf: BytesMut::new(), pending: None }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The total size of the frame being assembled, once its header is known.
    pub fn expected(&self) -> Option<u64> {
        self.pending.map(|n| (n + FRAME_HEADER_LEN) as u64)
    }

    /// The next complete payload, `None` if more bytes are needed, or an error for an oversized header
    /// (after which the stream cannot be resynchronised and should be closed).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, CodecError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                if self.buf.len() < FRAME_HEADER_LEN {
                    return Ok(None);
                }
                let mut header = [0u8; FRAME_HEADER_LEN];
                header.copy_from_slice(&self.buf[..FRAME_HEADER_LEN]);
                let len = self.codec.parse_header(header)?;
                self.buf.advance(FRAME_HEADER_LEN);
                self.pending = Some(len);
                len
            }
        };
        if self.buf.len() < len {
            // Reserve no more than the frame needs: the limit bounds what a peer can make us allocate.
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

thread_local! {
    static CURRENT_FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// While alive, marks `Bytes` as the buffer being decoded on this thread, so blobs can borrow from it.
struct CurrentFrame(Option<Bytes>);

impl CurrentFrame {
    fn enter(frame: Bytes) -> Self {
        Self(CURRENT_FRAME.with(|c| c.replace(Some(frame))))
    }
}

impl Drop for CurrentFrame {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT_FRAME.with(|c| *c.borrow_mut() = previous);
    }
}

/// A slice of the frame being decoded, without copying, if `slice` lies inside it.
fn share_from_current_frame(slice: &[u8]) -> Option<Bytes> {
    CURRENT_FRAME.with(|c| {
        let frame = c.borrow();
        let frame = frame.as_ref()?;
        let start = frame.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        (at >= start && at + slice.len() <= start + frame.len()).then(|| frame.slice_ref(slice))
    })
}

/// An opaque byte blob inside a message, encoded as a length and the raw bytes.
///
/// Decoding through [`Codec::decode`] does not copy it: the blob shares the received frame's buffer.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RawBytes(pub Bytes);

impl std::fmt::Debug for RawBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBytes({} bytes)", self.0.len())
    }
}

impl From<Bytes> for RawBytes {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}

impl From<Vec<u8>> for RawBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte blob")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<RawBytes, E> {
                Ok(RawBytes(share_from_current_frame(v).unwrap_or_else(|| Bytes::copy_from_slice(v))))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RawBytes, E> {
                Ok(RawBytes(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<RawBytes, E> {
                Ok(RawBytes(Bytes::from(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawBytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(RawBytes(Bytes::from(v)))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Message {
        Hello { name: String, round: u64 },
        Blob(RawBytes),
        Numbers(Vec<f32>),
        Nested(Vec<(u8, Option<String>)>),
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (".{0,40}", any::<u64>()).prop_map(|(name, round)| Message::Hello { name, round }),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(|v| Message::Blob(v.into())),
            proptest::collection::vec(any::<f32>().prop_filter("nan", |x| !x.is_nan()), 0..300)
                .prop_map(Message::Numbers),
            proptest::collection::vec((any::<u8>(), proptest::option::of(".{0,8}")), 0..20).prop_map(Message::Nested),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in message()) {
            let codec = Codec::default();
            let payload = codec.encode(&msg).expect("encode");
            prop_assert_eq!(codec.decode::<Message>(&payload).expect("decode"), msg.clone());
            let frame = codec.encode_frame(&msg).expect("frame");
            prop_assert_eq!(frame.len(), payload.len() + FRAME_HEADER_LEN);
            prop_assert_eq!(codec.decode_frame::<Message>(&frame).expect("decode frame"), msg);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = Codec::new(256).expect("limit");
            let bytes = Bytes::from(bytes);
            let _ = codec.decode::<Message>(&bytes);
            let _ = codec.decode_frame::<Message>(&bytes);
            let mut decoder = FrameDecoder::new(codec);
            decoder.extend(&bytes);
            while let Ok(Some(payload)) = decoder.next_frame() {
                let _ = codec.decode::<Message>(&payload);
            }
        }

        #[test]
        fn frames_split_anywhere_reassemble(msgs in proptest::collection::vec(message(), 1..6),
                                            cuts in proptest::collection::vec(1usize..64, 1..50)) {
            let codec = Codec::default();
            let mut stream = Vec::new();
            for m in &msgs {
                stream.extend_from_slice(&codec.encode_frame(m).expect("frame"));
            }
            let mut decoder = FrameDecoder::new(codec);
            let mut out = Vec::new();
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().expect("cycle")).min(rest.len());
                decoder.extend(&rest[..n]);
                rest = &rest[n..];
                while let Some(p) = decoder.next_frame().expect("valid stream") {
                    out.push(codec.decode::<Message>(&p).expect("decode"));
                }
            }
            prop_assert_eq!(out, msgs);
        }
    }

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        let codec = Codec::new(1024).expect("limit");
        let mut decoder = FrameDecoder::new(codec);
        decoder.extend(&u32::MAX.to_le_bytes());
        assert_eq!(decoder.next_frame(), Err(CodecError::FrameTooLarge { claimed: u64::from(u32::MAX), limit: 1024 }));
        assert!(decoder.buf.capacity() < 4096, "no allocation for the claimed size");
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let codec = Codec::new(100).expect("limit");
        let err = codec.encode(&Message::Blob(vec![0u8; 200].into())).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { limit: 100, .. }));
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let codec = Codec::default();
        let frame = codec.encode_frame(&Message::Hello { name: "x".into(), round: 7 }).expect("frame");
        let cut = frame.slice(..frame.len() - 1);
        assert!(matches!(codec.decode_frame::<Message>(&cut), Err(CodecError::Truncated { .. })));
        let mut long = frame.to_vec();
        long.push(0);
        assert!(matches!(
            codec.decode_frame::<Message>(&Bytes::from(long)),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn unknown_variant_is_malformed() {
        let codec = Codec::default();
        // Variant index 9 does not exist in `Message`.
        let err = codec.decode::<Message>(&Bytes::from_static(&[9, 0, 0])).unwrap_err();
        assert!(matches!(err, CodecError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn blobs_share_the_frame_buffer() {
        let codec = Codec::default();
        let payload = codec.encode(&Message::Blob(vec![5u8; 1000].into())).expect("encode");
        let Message::Blob(blob) = codec.decode::<Message>(&payload).expect("decode") else { panic!("wrong variant") };
        let start = payload.as_ptr() as usize;
        let at = blob.0.as_ptr() as usize;
        assert!(at >= start && at < start + payload.len(), "blob was copied");
    }

    #[test]
    fn small_elements_that_are_large_in_memory_decode() {
        // One byte per empty vector on the wire, 24 in memory; eight per dimension of a shape.
        let codec = Codec::default();
        let empties: Vec<Vec<usize>> = vec![Vec::new(); 1000];
        let shapes: Vec<Vec<usize>> = vec![vec![4, 16, 32]; 1000];
        for v in [empties, shapes] {
            let decoded: Vec<Vec<usize>> = codec.decode(&codec.encode(&v).expect("encode")).expect("decode");
            assert_eq!(decoded, v);
        }
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(Codec::new(0).is_err());
        assert!(Codec::new(63).is_err());
        assert!(Codec::new(64).is_ok());
    }
}
