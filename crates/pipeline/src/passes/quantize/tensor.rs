//! Quantizing one Linear weight: codes and scales through the kernels, then the exact
//! bytes each compressed-tensors scheme stores, and error statistics measured by
//! dequantizing the result again.

use super::mse::Code8;
use crate::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use temper_core::dtype::FloatData;
use temper_format::scheme::FP8_BLOCK;
use temper_format::Scheme;
use temper_kernels::{Isa, KernelError, Src};

/// How far the artifact is from the source weights, for one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    pub name: String,
    pub shape: [usize; 2],
    /// ||w - dequant(q)|| / ||w|| over the whole tensor.
    pub relative_rms_error: f64,
    pub max_abs_error: f32,
    /// Largest error divided by the bound the format allows for that element (half a
    /// quantization step; for FP8 half a unit in the last place of the scaled value).
    /// At most 1 (up to float rounding) when the quantizer is right.
    pub max_error_over_bound: f32,
    /// Scale groups (rows, groups or blocks) that were entirely zero.
    pub zero_groups: usize,
}

/// Named byte buffers ready for the writer, plus the measured error.
pub struct QuantizedTensor {
    pub outputs: Vec<(String, Vec<u8>)>,
    pub error: TensorError,
}

/// Input of [`quantize_tensor`].
pub struct TensorInput<'a> {
    pub file: &'a Path,
    pub name: &'a str,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a FloatData<'a>,
    pub scale_dtype: Dtype,
    /// Static FP8 only: the calibrated largest |input| of this Linear.
    pub input_absmax: Option<f32>,
    /// INT4 only: the clip ratio of each row's groups (`rows x groups`), from AWQ's search.
    pub clip: Option<&'a [f32]>,
    /// INT4 only: codes and grids chosen by GPTQ (written as they are).
    pub fixed: Option<&'a super::int4::FixedCodes>,
    /// INT4 round-to-nearest only: search each group's clip ratio for the least squared error.
    pub mse_search: bool,
    /// The GPU that computes round-to-nearest 8-bit codes, when the job runs on one (the
    /// same codes and scales as the CPU kernels, bit for bit).
    pub gpu: Option<&'a temper_cuda::Gpu>,
}

fn src<'a>(data: &'a FloatData<'a>) -> Src<'a> {
    match data {
        FloatData::F32(v) => Src::F32(v),
        FloatData::F16(v) => Src::F16(v),
        FloatData::Bf16(v) => Src::Bf16(v),
    }
}

/// Rounds a scale to the storage dtype, upwards, so that the largest weight of its
/// group never exceeds the largest code after division (no saturation error).
pub fn round_scale_up(scale: f32, dtype: Dtype) -> f32 {
    temper_kernels::round_scale_up(scale, scale_dtype(dtype))
}

/// The kernels' name for a scale storage dtype (anything but f16/bf16 is stored as f32).
pub fn scale_dtype(dtype: Dtype) -> temper_kernels::ScaleDtype {
    match dtype {
        Dtype::F16 => temper_kernels::ScaleDtype::F16,
        Dtype::BF16 => temper_kernels::ScaleDtype::Bf16,
        _ => temper_kernels::ScaleDtype::F32,
    }
}

/// Quantizes one `[rows, cols]` weight with `scheme`.
pub fn quantize_tensor(isa: Isa, scheme: Scheme, input: &TensorInput) -> Result<QuantizedTensor> {
    if let Scheme::W4A16 { group, zero_point } = scheme {
        let minmax = super::int4::MinMax {
            zero_point,
            scale_dtype: input.scale_dtype,
        };
        if input.mse_search {
            let search = super::int4::MseSearch { minmax };
            return super::int4::quantize_int4(input, group, zero_point, &search, input.fixed);
        }
        return match input.clip {
            Some(clip) => {
                let clipped = super::int4::Clipped {
                    minmax,
                    clip,
                    groups: input.cols / group,
                };
                super::int4::quantize_int4(input, group, zero_point, &clipped, input.fixed)
            }
            None => super::int4::quantize_int4(input, group, zero_point, &minmax, input.fixed),
        };
    }
    let (rows, cols) = (input.rows, input.cols);
    let zero_groups = AtomicUsize::new(0);
    let qmax = scheme.qmax();
    let scale_dtype = input.scale_dtype;
    let scale_for = |absmax: f32| {
        if absmax == 0.0 {
            zero_groups.fetch_add(1, Ordering::Relaxed);
        }
        temper_kernels::scale_for(absmax, qmax, self::scale_dtype(scale_dtype))
    };
    let source = src(input.data);
    let scale_shape = scheme.scale_shape(rows, cols);
    let mut scales = vec![0f32; scale_shape.iter().product()];
    let mut codes = vec![0u8; rows * cols];
    let on_gpu = match (input.gpu, input.fixed, input.mse_search) {
        (Some(gpu), None, false) => gpu_layout(scheme, cols).map(|l| (gpu, l)),
        _ => None,
    };
    let result = if let Some((gpu, (fp8, layout))) = on_gpu {
        let q = gpu
            .quantize(
                source,
                rows,
                cols,
                fp8,
                layout,
                self::scale_dtype(scale_dtype),
            )
            .map_err(|e| gpu_error(input, e))?;
        codes = q.codes;
        scales = q.scales;
        zero_groups.fetch_add(q.zero_groups, Ordering::Relaxed);
        Ok(())
    } else {
        match (scheme, input.fixed) {
            // GPTQ's INT8 codes (i8 bits) and grids, written as chosen.
            (Scheme::W8A16 { .. } | Scheme::W8A8, Some(fixed)) => {
                let stored = fixed.codes.load().map_err(|e| {
                    tensor_error(input, format!("reading its GPTQ codes back failed: {e}"))
                })?;
                if stored.len() != codes.len() || fixed.grids.len() != scales.len() {
                    return Err(tensor_error(
                    input,
                    format!(
                        "GPTQ chose {} codes and {} scales for a tensor of {} weights and {} scales",
                        stored.len(),
                        fixed.grids.len(),
                        codes.len(),
                        scales.len()
                    ),
                ));
                }
                codes.copy_from_slice(&stored);
                for (s, g) in scales.iter_mut().zip(&fixed.grids) {
                    *s = g.scale;
                }
                Ok(())
            }
            (_, Some(_)) => {
                return Err(tensor_error(
                    input,
                    format!(
                        "GPTQ codes are for INT4, or INT8 W8A16 and W8A8, not {}",
                        scheme.label()
                    ),
                ))
            }
            (Scheme::W4A16 { .. }, None) => unreachable!("INT4 returned above"),
            // `OPTION_QUANT_SCALE_SEARCH=mse`: each row's or group's range searched, every candidate
            // rounded by the SIMD quantizers.
            (Scheme::Fp8Dynamic, None) if input.mse_search => super::mse::quantize_rows(
                isa,
                Code8::Fp8,
                input.data,
                cols,
                cols,
                &scale_for,
                &mut codes,
                &mut scales,
            ),
            (Scheme::W8A8 | Scheme::W8A16 { .. }, None) if input.mse_search => {
                let group = match scheme {
                    Scheme::W8A16 { group: Some(g) } => g,
                    _ => cols,
                };
                super::mse::quantize_rows(
                    isa,
                    Code8::Int8,
                    input.data,
                    cols,
                    group,
                    &scale_for,
                    &mut codes,
                    &mut scales,
                )
            }
            (Scheme::Fp8Dynamic, None) => temper_kernels::quantize_fp8_rows(
                isa,
                source,
                cols,
                cols,
                &scale_for,
                &mut codes,
                &mut scales,
            ),
            (Scheme::Fp8Block, None) => temper_kernels::quantize_fp8_blocks(
                isa,
                source,
                rows,
                cols,
                FP8_BLOCK,
                &scale_for,
                &mut codes,
                &mut scales,
            ),
            // One block covering the whole matrix: one scale per tensor.
            (Scheme::Fp8Static, None) => temper_kernels::quantize_fp8_blocks(
                isa,
                source,
                rows,
                cols,
                (rows, cols),
                &scale_for,
                &mut codes,
                &mut scales,
            ),
            (Scheme::W8A8 | Scheme::W8A16 { .. }, None) => {
                let group = match scheme {
                    Scheme::W8A16 { group: Some(g) } => g,
                    _ => cols,
                };
                let codes_i8: &mut [i8] = bytemuck::cast_slice_mut(&mut codes);
                temper_kernels::quantize_int8_rows(
                    isa,
                    source,
                    cols,
                    group,
                    &scale_for,
                    codes_i8,
                    &mut scales,
                )
            }
        }
    };
    result.map_err(|e| kernel_error(input, e))?;
    if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
        return Err(tensor_error(
            input,
            format!(
                "a scale came out as {bad}: the weights exceed what {scale_dtype} scales can hold"
            ),
        ));
    }
    let error = measure_error(
        isa,
        scheme,
        input,
        &codes,
        &scales,
        zero_groups.into_inner(),
    );
    let mut outputs = encode(scheme, input, codes, &scales);
    if scheme.needs_calibration() {
        outputs.push(input_scale(input)?);
    }
    Ok(QuantizedTensor { outputs, error })
}

/// `input_scale = absmax / 448` of the calibrated inputs, rounded up to the scale dtype so the
/// largest calibrated activation still fits without saturating.
fn input_scale(input: &TensorInput) -> Result<(String, Vec<u8>)> {
    let prefix = temper_core::select::module_name(input.name);
    let absmax = input.input_absmax.filter(|a| a.is_finite() && *a > 0.0).ok_or_else(|| {
        tensor_error(
            input,
            format!(
                "static FP8 needs the calibrated input range of `{prefix}`, but calibration saw {}; \
                 check that the calibration data is non-empty text",
                match input.input_absmax {
                    Some(v) => format!("a largest |input| of {v}"),
                    None => "no input".into(),
                }
            ),
        )
    })?;
    let scale = round_scale_up(absmax / temper_format::scheme::FP8_MAX, input.scale_dtype);
    Ok((
        format!("{prefix}.input_scale"),
        scales_to_bytes(&[scale], input.scale_dtype),
    ))
}

fn tensor_error(input: &TensorInput, reason: String) -> Error {
    Error::Tensor {
        path: input.file.to_path_buf(),
        tensor: input.name.to_string(),
        reason,
    }
}

/// The GPU kernel and scale layout for a round-to-nearest 8-bit scheme, as `(fp8, layout)`.
fn gpu_layout(scheme: Scheme, cols: usize) -> Option<(bool, temper_cuda::QuantLayout)> {
    use temper_cuda::QuantLayout;
    Some(match scheme {
        Scheme::Fp8Dynamic => (true, QuantLayout::Rows { group: cols }),
        Scheme::Fp8Block => (
            true,
            QuantLayout::Blocks {
                rows: FP8_BLOCK.0,
                cols: FP8_BLOCK.1,
            },
        ),
        Scheme::Fp8Static => (true, QuantLayout::Tensor),
        Scheme::W8A8 | Scheme::W8A16 { group: None } => (false, QuantLayout::Rows { group: cols }),
        Scheme::W8A16 { group: Some(g) } => (false, QuantLayout::Rows { group: g }),
        Scheme::W4A16 { .. } => return None,
    })
}

fn gpu_error(input: &TensorInput, e: temper_cuda::CudaError) -> Error {
    match e {
        temper_cuda::CudaError::NonFinite { row, col, value } => {
            kernel_error(input, KernelError::NonFinite { row, col, value })
        }
        other => tensor_error(input, format!("the GPU quantizer failed: {other}")),
    }
}

fn kernel_error(input: &TensorInput, e: KernelError) -> Error {
    let reason = match e {
        KernelError::NonFinite { row, col, value } => format!(
            "has a non-finite weight ({value}) at row {row}, column {col}; the checkpoint is corrupt or \
             was saved from a diverged run: fix or re-export these weights before quantizing"
        ),
        other => other.to_string(),
    };
    tensor_error(input, reason)
}

/// The stored tensors: codes in the scheme's layout, scales in the model's dtype.
fn encode(
    scheme: Scheme,
    input: &TensorInput,
    mut codes: Vec<u8>,
    scales: &[f32],
) -> Vec<(String, Vec<u8>)> {
    let prefix = temper_core::select::module_name(input.name);
    let scale_bytes = scales_to_bytes(scales, input.scale_dtype);
    match scheme {
        Scheme::W8A16 { .. } => {
            // pack-quantized: add 128 to make each code unsigned, then four 8-bit lanes
            // per little-endian int32 along the input dimension. Byte for byte that is
            // the code sequence with its top bit flipped.
            codes
                .par_chunks_mut(1 << 16)
                .for_each(temper_format::pack::pack_int8_in_place);
            let shape = temper_format::pack::weight_shape_bytes(input.rows, input.cols);
            vec![
                (format!("{prefix}.weight_packed"), codes),
                (format!("{prefix}.weight_shape"), shape),
                (format!("{prefix}.weight_scale"), scale_bytes),
            ]
        }
        _ => vec![
            (format!("{prefix}.weight"), codes),
            (format!("{prefix}.weight_scale"), scale_bytes),
        ],
    }
}

/// Scales in the storage dtype. They were rounded to it already, so this is exact.
pub fn scales_to_bytes(scales: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => scales
            .iter()
            .flat_map(|&s| f16::from_f32(s).to_le_bytes())
            .collect(),
        Dtype::BF16 => scales
            .iter()
            .flat_map(|&s| bf16::from_f32(s).to_le_bytes())
            .collect(),
        _ => scales.iter().flat_map(|&s| s.to_le_bytes()).collect(),
    }
}

/// Where the scale of element (row, col) lives: scale index = base(row) + col / width.
struct ScaleLayout {
    width: usize,
    per_row_stride: usize,
    rows_per_scale_row: usize,
}

impl ScaleLayout {
    fn new(scheme: Scheme, cols: usize) -> Self {
        match scheme {
            Scheme::Fp8Block => ScaleLayout {
                width: FP8_BLOCK.1,
                per_row_stride: cols.div_ceil(FP8_BLOCK.1),
                rows_per_scale_row: FP8_BLOCK.0,
            },
            Scheme::W8A16 { group: Some(g) } => ScaleLayout {
                width: g,
                per_row_stride: cols / g,
                rows_per_scale_row: 1,
            },
            // Every row uses the single scale at index 0.
            Scheme::Fp8Static => ScaleLayout {
                width: cols,
                per_row_stride: 0,
                rows_per_scale_row: 1,
            },
            _ => ScaleLayout {
                width: cols,
                per_row_stride: 1,
                rows_per_scale_row: 1,
            },
        }
    }

    fn base(&self, row: usize) -> usize {
        (row / self.rows_per_scale_row) * self.per_row_stride
    }
}

#[derive(Default, Clone, Copy)]
struct ErrorSums {
    err_sq: f64,
    w_sq: f64,
    max_abs: f32,
    max_ratio: f32,
}

impl ErrorSums {
    fn merge(self, o: ErrorSums) -> ErrorSums {
        ErrorSums {
            err_sq: self.err_sq + o.err_sq,
            w_sq: self.w_sq + o.w_sq,
            max_abs: self.max_abs.max(o.max_abs),
            max_ratio: self.max_ratio.max(o.max_ratio),
        }
    }
}

/// Lanes of the error accumulators: wide enough for one AVX-512 register of f32, so the
/// loop below vectorises (f32 `max` and f64 sums in one chain would not).
const LANES: usize = 16;

/// Error sums of one scale group: `source` against its dequantized values `deq`.
///
/// The bound per element is half a step for INT8 (`0.5 * scale`) and, for FP8 E4M3
/// with 3 mantissa bits, half a unit in the last place: `max(|w| / 16, scale / 1024)`.
fn compare(source: &[f32], deq: &[f32], scale: f32, fp8: bool) -> ErrorSums {
    let mut err_sq = [0f32; LANES];
    let mut w_sq = [0f32; LANES];
    let mut max_abs = [0f32; LANES];
    let mut max_ratio = [0f32; LANES];
    let (half_step, subnormal_bound) = (0.5 * scale, scale / 1024.0);
    let mut lanes = |w: &[f32], d: &[f32]| {
        for i in 0..w.len().min(d.len()).min(LANES) {
            let err = (w[i] - d[i]).abs();
            let bound = if fp8 {
                (w[i].abs() * 0.0625).max(subnormal_bound)
            } else {
                half_step
            };
            err_sq[i] += err * err;
            w_sq[i] += w[i] * w[i];
            max_abs[i] = if err > max_abs[i] { err } else { max_abs[i] };
            let ratio = err / bound;
            max_ratio[i] = if ratio > max_ratio[i] {
                ratio
            } else {
                max_ratio[i]
            };
        }
    };
    let (w_chunks, w_tail) = source.as_chunks::<LANES>();
    let (d_chunks, d_tail) = deq.as_chunks::<LANES>();
    for (w, d) in w_chunks.iter().zip(d_chunks) {
        lanes(w, d);
    }
    lanes(w_tail, d_tail);
    ErrorSums {
        err_sq: err_sq.iter().map(|&v| v as f64).sum(),
        w_sq: w_sq.iter().map(|&v| v as f64).sum(),
        max_abs: max_abs.iter().fold(0f32, |a, &b| a.max(b)),
        max_ratio: max_ratio.iter().fold(0f32, |a, &b| a.max(b)),
    }
}

/// Dequantizes every row again and compares it with the source.
fn measure_error(
    isa: Isa,
    scheme: Scheme,
    input: &TensorInput,
    codes: &[u8],
    scales: &[f32],
    zero_groups: usize,
) -> TensorError {
    let cols = input.cols;
    let layout = ScaleLayout::new(scheme, cols);
    let sums = (0..input.rows)
        .into_par_iter()
        .map_init(
            || (vec![0f32; cols], vec![0f32; cols]),
            |(buf, source), row| {
                input.data.copy_to_f32(row * cols, source);
                let base = layout.base(row);
                let row_codes = &codes[row * cols..(row + 1) * cols];
                let mut sums = ErrorSums::default();
                for (chunk, start) in (0..cols).step_by(layout.width).enumerate() {
                    let end = (start + layout.width).min(cols);
                    let scale = scales[base + chunk];
                    let out = &mut buf[start..end];
                    if scheme.is_fp8() {
                        temper_kernels::dequantize_fp8(isa, &row_codes[start..end], scale, out);
                    } else {
                        temper_kernels::dequantize_int8(
                            isa,
                            bytemuck::cast_slice(&row_codes[start..end]),
                            scale,
                            out,
                        );
                    }
                    sums = sums.merge(compare(&source[start..end], out, scale, scheme.is_fp8()));
                }
                sums
            },
        )
        .reduce(ErrorSums::default, ErrorSums::merge);
    TensorError {
        name: input.name.to_string(),
        shape: [input.rows, cols],
        relative_rms_error: if sums.w_sq > 0.0 {
            (sums.err_sq / sums.w_sq).sqrt()
        } else {
            0.0
        },
        max_abs_error: sums.max_abs,
        max_error_over_bound: sums.max_ratio,
        zero_groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        let mut seed = 42u64;
        (0..rows * cols)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Rows of very different magnitude, and a few outliers.
                let row_scale = 10f32.powi((i / cols % 5) as i32 - 3);
                if i % 997 == 0 {
                    u * row_scale * 2.0
                } else {
                    u * row_scale
                }
            })
            .collect()
    }

    fn run(
        scheme: Scheme,
        data: &FloatData,
        rows: usize,
        cols: usize,
        scale_dtype: Dtype,
    ) -> QuantizedTensor {
        let input = TensorInput {
            file: Path::new("t.safetensors"),
            name: "m.layers.0.x.weight",
            rows,
            cols,
            data,
            scale_dtype,
            input_absmax: Some(3.0),
            clip: None,
            fixed: None,
            mse_search: false,
            gpu: None,
        };
        quantize_tensor(Isa::detect(), scheme, &input).unwrap()
    }

    #[test]
    fn every_scheme_stays_within_its_format_bound() {
        let (rows, cols) = (300, 256);
        let w = weights(rows, cols);
        let sources = [
            (FloatData::F32(Cow::Borrowed(&w)), Dtype::F32),
            (
                FloatData::Bf16(Cow::Owned(w.iter().map(|&x| bf16::from_f32(x)).collect())),
                Dtype::BF16,
            ),
            (
                FloatData::F16(Cow::Owned(w.iter().map(|&x| f16::from_f32(x)).collect())),
                Dtype::F16,
            ),
        ];
        let schemes = [
            Scheme::Fp8Dynamic,
            Scheme::Fp8Block,
            Scheme::Fp8Static,
            Scheme::W8A8,
            Scheme::W8A16 { group: None },
            Scheme::W8A16 { group: Some(64) },
        ];
        for (data, dtype) in &sources {
            for scheme in schemes {
                let q = run(scheme, data, rows, cols, *dtype);
                let e = &q.error;
                assert!(
                    e.max_error_over_bound <= 1.0005,
                    "{scheme:?} {dtype}: {}",
                    e.max_error_over_bound
                );
                let limit = if scheme.is_fp8() { 0.04 } else { 0.01 };
                assert!(
                    e.relative_rms_error < limit && e.relative_rms_error > 0.0,
                    "{scheme:?} {dtype}: {}",
                    e.relative_rms_error
                );
                assert_eq!(e.zero_groups, 0);
            }
        }
    }

    #[test]
    fn packed_layout_and_scales() {
        let (rows, cols) = (2, 8);
        let w: Vec<f32> = vec![
            1.0,
            -1.0,
            0.5,
            0.0,
            0.25,
            -0.5,
            127.0 / 127.0,
            0.1,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        let data = FloatData::F32(Cow::Borrowed(&w));
        let q = run(Scheme::W8A16 { group: None }, &data, rows, cols, Dtype::F32);
        let names: Vec<&str> = q.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "m.layers.0.x.weight_packed",
                "m.layers.0.x.weight_shape",
                "m.layers.0.x.weight_scale"
            ]
        );
        let packed = &q.outputs[0].1;
        // scale 1/127: codes 127, -127, 64 (63.5 rounds to even), 0 ... each + 128.
        let first = i32::from_le_bytes(packed[0..4].try_into().unwrap());
        let lanes = [127 + 128, -127 + 128, 64 + 128, 128];
        let expected = lanes
            .iter()
            .enumerate()
            .fold(0u32, |acc, (k, &v)| acc | ((v as u32) << (8 * k))) as i32;
        assert_eq!(first, expected);
        assert_eq!(
            q.outputs[1].1,
            [2i64, 8]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        );
        let scales: Vec<f32> = q.outputs[2]
            .1
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            scales,
            vec![1.0 / 127.0, temper_kernels::scale::ZERO_GROUP_SCALE]
        );
        assert_eq!(q.error.zero_groups, 1);
    }

    #[test]
    fn scales_round_up_in_the_storage_dtype() {
        for x in [1e-3f32, 0.1234, 3.3e-5, 7.77] {
            let h = round_scale_up(x, Dtype::F16);
            assert!(h >= x && f16::from_f32(h).to_f32() == h, "{x} -> {h}");
            let b = round_scale_up(x, Dtype::BF16);
            assert!(b >= x && bf16::from_f32(b).to_f32() == b, "{x} -> {b}");
        }
    }
}
