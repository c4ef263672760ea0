//! Converting checkpoint bytes into the float slices kernels read.

use half::{bf16, f16};
use safetensors::Dtype;
use std::borrow::Cow;

/// Float weights borrowed from a checkpoint (or copied once when the bytes are not
/// aligned for the element type, which safetensors does not guarantee).
pub enum FloatData<'a> {
    F32(Cow<'a, [f32]>),
    F16(Cow<'a, [f16]>),
    Bf16(Cow<'a, [bf16]>),
}

impl<'a> FloatData<'a> {
    /// Views little-endian bytes of a float dtype; `None` for other dtypes.
    pub fn from_bytes(dtype: Dtype, bytes: &'a [u8]) -> Option<Self> {
        Some(match dtype {
            Dtype::F32 => FloatData::F32(cast(bytes)),
            Dtype::F16 => FloatData::F16(cast(bytes)),
            Dtype::BF16 => FloatData::Bf16(cast(bytes)),
            _ => return None,
        })
    }

    /// Element `i` as f32 (slow path for error messages and statistics).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            FloatData::F32(v) => v[i],
            FloatData::F16(v) => v[i].to_f32(),
            FloatData::Bf16(v) => v[i].to_f32(),
        }
    }

    /// Copies `out.len()` elements starting at `start` into `out` as f32 (exact).
    pub fn copy_to_f32(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            FloatData::F32(v) => out.copy_from_slice(&v[start..end]),
            FloatData::F16(v) => out
                .iter_mut()
                .zip(&v[start..end])
                .for_each(|(o, x)| *o = x.to_f32()),
            FloatData::Bf16(v) => out
                .iter_mut()
                .zip(&v[start..end])
                .for_each(|(o, x)| *o = x.to_f32()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            FloatData::F32(v) => v.len(),
            FloatData::F16(v) => v.len(),
            FloatData::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// Whether a dtype holds floating-point weights this project can quantize.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// The `torch_dtype` string of a float dtype.
pub fn torch_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        _ => "float32",
    }
}
