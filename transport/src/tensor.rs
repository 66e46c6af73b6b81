//! Tensors on the wire: a small header (dtype, shape) and the elements as raw little-endian bytes.
//!
//! A tensor is never encoded element by element: its data is one blob, written with one copy and, when
//! decoded through [`Codec::decode`](crate::Codec::decode), read with none (it shares the frame buffer).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{RawBytes, blob_len};
use crate::error::CodecError;
use crate::resident::{self, Attachment, Resident};

/// Element types a [`TensorBytes`] can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary64.
    F64,
    /// IEEE-754 binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 64-bit integer.
    I64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::U32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }
}

/// A dense, row-major tensor as bytes: dtype, shape and little-endian element data — or, for a peer in
/// this process, a handle to elements that stay where they are (see [`crate::resident`]).
#[derive(Clone, PartialEq, Eq)]
pub struct TensorBytes {
    dtype: DType,
    shape: Vec<usize>,
    /// The elements (empty when they are resident).
    data: Bytes,
    resident: Option<Resident>,
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.resident.is_some() { ", resident" } else { "" };
        write!(f, "TensorBytes({:?}, {:?}{at})", self.dtype, self.shape)
    }
}

fn byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
}

impl TensorBytes {
    /// A tensor from raw little-endian bytes; the length must match `shape` and `dtype`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Self, CodecError> {
        match byte_len(dtype, &shape) {
            Some(n) if n == data.len() => Ok(Self { dtype, shape, data, resident: None }),
            _ => Err(CodecError::Malformed {
                reason: format!("{:?} tensor of shape {shape:?} cannot hold {} bytes", dtype, data.len()),
            }),
        }
    }

    /// A tensor whose elements stay in this process, behind `handle` (a device tensor, say): it encodes
    /// as its header alone, its elements travelling beside the payload, and only to a peer in this
    /// process (see [`crate::resident`]). An empty tensor has nothing to leave behind: it is plain bytes.
    pub fn resident(dtype: DType, shape: Vec<usize>, handle: Resident) -> Result<Self, CodecError> {
        match byte_len(dtype, &shape) {
            Some(0) => Self::new(dtype, shape, Bytes::new()),
            Some(_) => Ok(Self { dtype, shape, data: Bytes::new(), resident: Some(handle) }),
            None => Err(CodecError::Malformed { reason: format!("{dtype:?} tensor of shape {shape:?} is too large") }),
        }
    }

    /// The handle to the elements, if they are resident (then [`Self::data`] is empty).
    pub fn resident_elements(&self) -> Option<&Resident> {
        self.resident.as_ref()
    }

    /// An f32 tensor copied from `values`; `shape` must have `values.len()` elements.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self, CodecError> {
        let data = if cfg!(target_endian = "little") {
            Bytes::copy_from_slice(bytemuck::cast_slice(values))
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
        };
        Self::new(DType::F32, shape, data)
    }

    /// The elements as f32, or an error if the dtype is not `F32`.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, CodecError> {
        if self.dtype != DType::F32 {
            return Err(CodecError::Malformed { reason: format!("expected an F32 tensor, got {:?}", self.dtype) });
        }
        if self.resident.is_some() {
            return Err(CodecError::Malformed { reason: "the elements are resident, not bytes".into() });
        }
        let mut out = vec![0f32; self.numel()];
        if cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<f32, u8>(&mut out).copy_from_slice(&self.data);
        } else {
            for (o, c) in out.iter_mut().zip(self.data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Ok(out)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian element bytes (empty if the elements are [resident](Self::resident_elements)).
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    dtype: DType,
    shape: &'a [usize],
    data: &'a RawBytes,
}

#[derive(Deserialize)]
struct Wire {
    dtype: DType,
    shape: Vec<usize>,
    data: RawBytes,
}

/// The bytes `len` bytes of elements add to a tensor's encoding: their blob, length prefix included,
/// beyond an empty one's. What a resident tensor's link counts.
fn elements_wire_bytes(len: usize) -> u64 {
    blob_len(len as u64) - blob_len(0)
}

impl Serialize for TensorBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(resident) = &self.resident {
            // The header with no elements; the elements go beside the payload, counted as if inside it.
            let wire_bytes = elements_wire_bytes(byte_len(self.dtype, &self.shape).unwrap_or(0));
            if !resident::attach(Attachment { resident: resident.clone(), wire_bytes }) {
                return Err(serde::ser::Error::custom("a resident tensor cannot be encoded for another process"));
            }
        }
        // `RawBytes` is a cheap clone of the `Bytes` handle, not of the data.
        let data = RawBytes(self.data.clone());
        WireRef { dtype: self.dtype, shape: &self.shape, data: &data }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TensorBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        // No elements where some are due: they came beside the payload, if it was sent with attachments.
        if let Some(n) = byte_len(wire.dtype, &wire.shape).filter(|&n| n > 0)
            && wire.data.0.is_empty()
        {
            let wire_bytes = elements_wire_bytes(n);
            if let Some(a) = resident::take().filter(|a| a.wire_bytes == wire_bytes) {
                return Ok(Self {
                    dtype: wire.dtype,
                    shape: wire.shape,
                    data: Bytes::new(),
                    resident: Some(a.resident),
                });
            }
        }
        Self::new(wire.dtype, wire.shape, wire.data.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f32_tensors_round_trip_bit_for_bit(values in proptest::collection::vec(any::<u32>(), 0..500)) {
            let values: Vec<f32> = values.into_iter().map(f32::from_bits).collect();
            let t = TensorBytes::from_f32(vec![values.len()], &values).expect("tensor");
            let codec = Codec::default();
            let back: TensorBytes = codec.decode(&codec.encode(&t).expect("encode")).expect("decode");
            let got = back.to_f32_vec().expect("f32");
            prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn header_is_small_and_data_raw() {
        let t = TensorBytes::from_f32(vec![16, 16], &[1.5; 256]).expect("tensor");
        let payload = Codec::default().encode(&t).expect("encode");
        assert!(payload.len() <= 1024 + 16, "payload {} bytes", payload.len());
    }

    #[test]
    fn inconsistent_shapes_are_rejected() {
        assert!(TensorBytes::new(DType::F32, vec![3], Bytes::from_static(&[0; 8])).is_err());
        assert!(TensorBytes::new(DType::F32, vec![usize::MAX, 4], Bytes::new()).is_err());
        // A wire tensor whose header lies about its data length fails to decode.
        let lie = WireRef { dtype: DType::F32, shape: &[100], data: &RawBytes(Bytes::from_static(&[0; 8])) };
        let codec = Codec::default();
        let payload = codec.encode(&lie).expect("encode");
        assert!(codec.decode::<TensorBytes>(&payload).is_err());
        let t = TensorBytes::new(DType::U8, vec![2], Bytes::from_static(&[1, 2])).expect("u8");
        assert!(t.to_f32_vec().is_err());
    }
}
