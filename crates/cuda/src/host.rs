//! The per-element arithmetic of `kernels/quant.cuh`, compiled for the host by nvcc
//! (`build.rs`), for tests on machines with no GPU: the same functions the kernels run,
//! checked against the Rust scalar references.

use temper_kernels::{ScaleDtype, Src};

mod ffi {
    extern "C" {
        pub fn tq_host_f32_to_fp8(x: *const f32, out: *mut u8, n: u64);
        pub fn tq_host_fp8_to_f32(codes: *const u8, out: *mut f32, n: u64);
        pub fn tq_host_int8_code(y: *const f32, out: *mut i8, n: u64);
        pub fn tq_host_round_scale_up(s: *const f32, dtype: i32, out: *mut f32, n: u64);
        pub fn tq_host_scale_for(a: *const f32, qmax: f32, dtype: i32, out: *mut f32, n: u64);
        pub fn tq_host_load(src: *const u8, src_dtype: i32, out: *mut f32, n: u64);
        pub fn tq_host_quantize_rows(
            src: *const u8,
            src_dtype: i32,
            rows: u64,
            cols: u32,
            group: u32,
            to_fp8: i32,
            qmax: f32,
            scale_dtype: i32,
            codes: *mut u8,
            scales: *mut f32,
        ) -> u64;
    }
}

fn code(d: ScaleDtype) -> i32 {
    match d {
        ScaleDtype::F32 => 0,
        ScaleDtype::F16 => 1,
        ScaleDtype::Bf16 => 2,
    }
}

fn bytes(src: Src) -> (*const u8, i32) {
    match src {
        Src::F32(s) => (s.as_ptr().cast(), 0),
        Src::F16(s) => (s.as_ptr().cast(), 1),
        Src::Bf16(s) => (s.as_ptr().cast(), 2),
    }
}

/// `tq_f32_to_fp8` on each value.
pub fn f32_to_fp8(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    // SAFETY: both pointers cover x.len() elements of their type.
    unsafe { ffi::tq_host_f32_to_fp8(x.as_ptr(), out.as_mut_ptr(), x.len() as u64) };
    out
}

/// `tq_fp8_to_f32` on each code.
pub fn fp8_to_f32(codes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; codes.len()];
    // SAFETY: both pointers cover codes.len() elements of their type.
    unsafe { ffi::tq_host_fp8_to_f32(codes.as_ptr(), out.as_mut_ptr(), codes.len() as u64) };
    out
}

/// `tq_int8_code` on each already-scaled value.
pub fn int8_code(y: &[f32]) -> Vec<i8> {
    let mut out = vec![0i8; y.len()];
    // SAFETY: both pointers cover y.len() elements of their type.
    unsafe { ffi::tq_host_int8_code(y.as_ptr(), out.as_mut_ptr(), y.len() as u64) };
    out
}

/// `tq_round_scale_up` on each scale.
pub fn round_scale_up(s: &[f32], dtype: ScaleDtype) -> Vec<f32> {
    let mut out = vec![0f32; s.len()];
    // SAFETY: both pointers cover s.len() f32s.
    unsafe {
        ffi::tq_host_round_scale_up(s.as_ptr(), code(dtype), out.as_mut_ptr(), s.len() as u64)
    };
    out
}

/// `tq_scale_for` on each group maximum.
pub fn scale_for(absmax: &[f32], qmax: f32, dtype: ScaleDtype) -> Vec<f32> {
    let mut out = vec![0f32; absmax.len()];
    let n = absmax.len() as u64;
    // SAFETY: both pointers cover absmax.len() f32s.
    unsafe { ffi::tq_host_scale_for(absmax.as_ptr(), qmax, code(dtype), out.as_mut_ptr(), n) };
    out
}

/// `tq_load`: each source element widened to f32.
pub fn load(src: Src) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    let (p, d) = bytes(src);
    // SAFETY: p covers src.len() elements of the dtype d names; out covers as many f32s.
    unsafe { ffi::tq_host_load(p, d, out.as_mut_ptr(), src.len() as u64) };
    out
}

/// The row quantizer as `tq_quantize_rows` computes it, run serially on the host: codes and
/// scales, or the linear index of the first non-finite element.
pub fn quantize_rows(
    src: Src,
    cols: usize,
    group: usize,
    fp8: bool,
    scale_dtype: ScaleDtype,
) -> Result<(Vec<u8>, Vec<f32>), usize> {
    assert!(group > 0 && cols.is_multiple_of(group) && src.len().is_multiple_of(cols));
    let rows = src.len() / cols;
    let mut codes = vec![0u8; src.len()];
    let mut scales = vec![0f32; rows * (cols / group)];
    let (p, d) = bytes(src);
    let qmax = if fp8 { 448.0 } else { 127.0 };
    // SAFETY: p covers rows x cols source elements; codes and scales are sized for that
    // shape and group, as the function reads and writes them.
    let bad = unsafe {
        ffi::tq_host_quantize_rows(
            p,
            d,
            rows as u64,
            cols as u32,
            group as u32,
            i32::from(fp8),
            qmax,
            code(scale_dtype),
            codes.as_mut_ptr(),
            scales.as_mut_ptr(),
        )
    };
    if bad == u64::MAX {
        Ok((codes, scales))
    } else {
        Err(bad as usize)
    }
}
