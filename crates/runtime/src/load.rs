//! Reading one Linear layer's tensors from a checkpoint into a kernel [`Matrix`].
//!
//! Quantized weights keep their codes (INT8 or FP8, one byte per weight) and their scales are
//! expanded to the kernels' single layout, "per row, per run of `group` input columns": per
//! channel is `group = cols`, per tensor repeats one scale on every row, and a `rows x cols`
//! block repeats each block's scale on its rows with `group = cols of the block`. Dense weights
//! stay in their stored float dtype (bf16 stays 2 bytes per weight); activations are f32.

use crate::error::{Result, RuntimeError};
use crate::linear::ActQuant;
use half::{bf16, f16};
use safetensors::Dtype;
use temper_core::checkpoint::{Checkpoint, TensorEntry};
use temper_format::quant_config::{InputActivations, LinearScheme, Strategy, WeightFormat};
use temper_kernels::matmul::{Matrix, Weights};

/// A Linear's weight and input handling, before it is wrapped for the forward pass.
pub struct LoadedLinear {
    pub matrix: Matrix,
    pub bias: Option<Vec<f32>>,
    pub act: ActQuant,
}

/// Reads `<prefix>.weight` (or its quantized form) for an `[rows, cols]` Linear.
pub fn load_linear(
    ckpt: &Checkpoint,
    prefix: &str,
    rows: usize,
    cols: usize,
    scheme: LinearScheme,
) -> Result<LoadedLinear> {
    let matrix = match scheme.weights {
        WeightFormat::Dense => dense_matrix(ckpt, &format!("{prefix}.weight"), rows, cols)?,
        WeightFormat::Int8 { strategy, packed } => {
            let codes = if packed {
                packed_codes(ckpt, prefix, rows, cols)?
            } else {
                let e = entry(ckpt, &format!("{prefix}.weight"))?;
                check(ckpt, e, Dtype::I8, &[rows, cols])?;
                bytemuck::cast_slice::<u8, i8>(ckpt.bytes(e)).to_vec()
            };
            let (scales, group) = scales(ckpt, prefix, rows, cols, strategy)?;
            Matrix::new(
                rows,
                cols,
                Weights::Int8 {
                    codes,
                    scales,
                    group,
                },
            )
            .map_err(|e| kernel_shape(ckpt, prefix, e))?
        }
        WeightFormat::Int4 {
            strategy,
            symmetric,
        } => {
            check_weight_shape(ckpt, prefix, rows, cols, 8)?;
            let e = entry(ckpt, &format!("{prefix}.weight_packed"))?;
            check(ckpt, e, Dtype::I32, &[rows, cols / 8])?;
            // Eight codes + 8 per little-endian word, lowest first: byte for byte the
            // kernels' two-per-byte layout.
            let packed = ckpt.bytes(e).to_vec();
            let (scales, group) = scales(ckpt, prefix, rows, cols, strategy)?;
            let groups = cols / group;
            let zeros = if symmetric {
                vec![8u8; rows * groups]
            } else {
                let name = format!("{prefix}.weight_zero_point");
                let z = entry(ckpt, &name)?;
                check(ckpt, z, Dtype::I32, &[rows.div_ceil(8), groups])?;
                temper_format::pack::unpack_int4_columns(ckpt.bytes(z), rows, groups)
            };
            Matrix::new(
                rows,
                cols,
                Weights::Int4 {
                    packed,
                    scales,
                    zeros,
                    group,
                },
            )
            .map_err(|e| kernel_shape(ckpt, prefix, e))?
        }
        WeightFormat::Fp8 { strategy } => {
            let e = entry(ckpt, &format!("{prefix}.weight"))?;
            check(ckpt, e, Dtype::F8_E4M3, &[rows, cols])?;
            let codes = ckpt.bytes(e).to_vec();
            // E4M3 "fn" has NaN codes only (0x7F/0xFF); no quantizer writes them, and the
            // kernels would read them as ±480, so a checkpoint holding one is corrupt.
            if let Some(i) = codes.iter().position(|&c| c & 0x7F == 0x7F) {
                return Err(RuntimeError::tensor(
                    ckpt.file_of(e),
                    &e.name,
                    format!(
                        "row {}, column {} holds the FP8 NaN code {:#04x}; the checkpoint is corrupt \
                         (re-run the quantization)",
                        i / cols.max(1),
                        i % cols.max(1),
                        codes[i]
                    ),
                ));
            }
            let (scales, group) = scales(ckpt, prefix, rows, cols, strategy)?;
            Matrix::new(
                rows,
                cols,
                Weights::Fp8 {
                    codes,
                    scales,
                    group,
                },
            )
            .map_err(|e| kernel_shape(ckpt, prefix, e))?
        }
    };
    let act = match scheme.inputs {
        InputActivations::Float => ActQuant::None,
        InputActivations::Int8PerToken => ActQuant::Int8PerToken,
        InputActivations::Fp8PerToken => ActQuant::Fp8PerGroup { group: cols },
        InputActivations::Fp8PerGroup(group) => {
            if group == 0 || !cols.is_multiple_of(group) {
                return Err(RuntimeError::UnsupportedQuantization {
                    path: ckpt.dir.join("config.json"),
                    detail: format!(
                        "`{prefix}`: activation group size {group} does not divide the {cols} input columns"
                    ),
                });
            }
            ActQuant::Fp8PerGroup { group }
        }
        InputActivations::Fp8PerTensor => ActQuant::Fp8PerTensor,
        InputActivations::Fp8Static => {
            let name = format!("{prefix}.input_scale");
            let scale = scalar(ckpt, &name)?;
            if !(scale.is_finite() && scale > 0.0) {
                return Err(RuntimeError::tensor(
                    path_of(ckpt, &name),
                    name,
                    format!("input_scale {scale} must be a positive finite number"),
                ));
            }
            ActQuant::Fp8Static { scale }
        }
    };
    let bias_name = format!("{prefix}.bias");
    let bias = match ckpt.get(&bias_name) {
        Some(e) => {
            check_shape(ckpt, e, &[rows])?;
            Some(float_values(ckpt, e)?)
        }
        None => None,
    };
    Ok(LoadedLinear { matrix, bias, act })
}

/// A float matrix kept in its stored dtype.
pub fn dense_matrix(ckpt: &Checkpoint, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let e = entry(ckpt, name)?;
    check_shape(ckpt, e, &[rows, cols])?;
    let bytes = ckpt.bytes(e);
    let weights = match e.dtype {
        Dtype::F32 => Weights::F32(bytemuck::pod_collect_to_vec(bytes)),
        Dtype::F16 => Weights::F16(bytemuck::pod_collect_to_vec::<u8, f16>(bytes)),
        Dtype::BF16 => Weights::Bf16(bytemuck::pod_collect_to_vec::<u8, bf16>(bytes)),
        other => {
            return Err(RuntimeError::tensor(
                ckpt.file_of(e),
                name,
                format!(
                    "dtype {other:?} is not a float dtype, but config.json's quantization_config \
                     (or its absence) says this Linear is not quantized"
                ),
            ))
        }
    };
    Matrix::new(rows, cols, weights).map_err(|err| kernel_shape(ckpt, name, err))
}

/// A float tensor of any shape widened to f32 (norm weights, biases, scales).
pub fn float_tensor(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let e = entry(ckpt, name)?;
    check_shape(ckpt, e, shape)?;
    float_values(ckpt, e)
}

fn float_values(ckpt: &Checkpoint, e: &TensorEntry) -> Result<Vec<f32>> {
    let data =
        temper_core::dtype::FloatData::from_bytes(e.dtype, ckpt.bytes(e)).ok_or_else(|| {
            RuntimeError::tensor(
                ckpt.file_of(e),
                &e.name,
                format!("dtype {:?} is not a float dtype (F32, F16, BF16)", e.dtype),
            )
        })?;
    let mut out = vec![0f32; data.len()];
    data.copy_to_f32(0, &mut out);
    Ok(out)
}

fn entry<'a>(ckpt: &'a Checkpoint, name: &str) -> Result<&'a TensorEntry> {
    ckpt.get(name).ok_or_else(|| {
        RuntimeError::tensor(
            &ckpt.dir,
            name,
            "is missing from the checkpoint; config.json and the safetensors files disagree \
             (is the directory complete, and is quantization_config right?)",
        )
    })
}

fn path_of(ckpt: &Checkpoint, name: &str) -> std::path::PathBuf {
    ckpt.get(name)
        .map(|e| ckpt.file_of(e).to_path_buf())
        .unwrap_or_else(|| ckpt.dir.clone())
}

fn check_shape(ckpt: &Checkpoint, e: &TensorEntry, shape: &[usize]) -> Result<()> {
    if e.shape != shape {
        return Err(RuntimeError::tensor(
            ckpt.file_of(e),
            &e.name,
            format!(
                "has shape {:?} but config.json implies {:?}; the config and the weights disagree \
                 (check hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, \
                 head_dim and vocab_size)",
                e.shape, shape
            ),
        ));
    }
    Ok(())
}

fn check(ckpt: &Checkpoint, e: &TensorEntry, dtype: Dtype, shape: &[usize]) -> Result<()> {
    if e.dtype != dtype {
        return Err(RuntimeError::tensor(
            ckpt.file_of(e),
            &e.name,
            format!(
                "dtype {:?} does not match quantization_config, which implies {dtype:?}",
                e.dtype
            ),
        ));
    }
    check_shape(ckpt, e, shape)
}

fn kernel_shape(ckpt: &Checkpoint, name: &str, err: temper_kernels::KernelError) -> RuntimeError {
    RuntimeError::tensor(path_of(ckpt, name), name, err.to_string())
}

/// Checks `weight_shape` against `[rows, cols]`, and that `cols` packs `per_word` per int32.
fn check_weight_shape(
    ckpt: &Checkpoint,
    prefix: &str,
    rows: usize,
    cols: usize,
    per_word: usize,
) -> Result<()> {
    let shape_name = format!("{prefix}.weight_shape");
    let se = entry(ckpt, &shape_name)?;
    let stored: Vec<i64> = match se.dtype {
        Dtype::I64 => bytemuck::pod_collect_to_vec(ckpt.bytes(se)),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(ckpt.bytes(se))
            .into_iter()
            .map(i64::from)
            .collect(),
        other => {
            return Err(RuntimeError::tensor(
                ckpt.file_of(se),
                shape_name,
                format!("dtype {other:?} must be I64"),
            ))
        }
    };
    if stored != [rows as i64, cols as i64] {
        return Err(RuntimeError::tensor(
            ckpt.file_of(se),
            shape_name,
            format!("says {stored:?} but config.json implies [{rows}, {cols}]"),
        ));
    }
    if !cols.is_multiple_of(per_word) {
        return Err(RuntimeError::tensor(
            ckpt.file_of(se),
            shape_name,
            format!("{cols} columns cannot be packed {per_word} per int32"),
        ));
    }
    Ok(())
}

/// compressed-tensors pack-quantized, 8 bits: `weight_packed` I32 `[rows, cols/4]`, each
/// little-endian word holding four codes plus 128 along the input dimension.
fn packed_codes(ckpt: &Checkpoint, prefix: &str, rows: usize, cols: usize) -> Result<Vec<i8>> {
    check_weight_shape(ckpt, prefix, rows, cols, 4)?;
    let e = entry(ckpt, &format!("{prefix}.weight_packed"))?;
    check(ckpt, e, Dtype::I32, &[rows, cols / 4])?;
    Ok(temper_format::pack::unpack_int8(ckpt.bytes(e)))
}

/// `weight_scale` expanded to one scale per row and group of `group` columns.
fn scales(
    ckpt: &Checkpoint,
    prefix: &str,
    rows: usize,
    cols: usize,
    strategy: Strategy,
) -> Result<(Vec<f32>, usize)> {
    let name = format!("{prefix}.weight_scale");
    let e = entry(ckpt, &name)?;
    let values = float_values(ckpt, e)?;
    let bad = |expected: String| {
        RuntimeError::tensor(
            ckpt.file_of(e),
            &name,
            format!(
                "has shape {:?} but the {strategy:?} strategy needs {expected}",
                e.shape
            ),
        )
    };
    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(RuntimeError::tensor(
            ckpt.file_of(e),
            &name,
            format!("holds {v}; scales must be finite and non-negative"),
        ));
    }
    match strategy {
        Strategy::Channel => {
            if values.len() != rows || e.shape.first() != Some(&rows) {
                return Err(bad(format!("[{rows}, 1]")));
            }
            Ok((values, cols))
        }
        Strategy::Group(g) => {
            if g == 0 || !cols.is_multiple_of(g) || e.shape != [rows, cols / g] {
                return Err(bad(format!(
                    "[{rows}, {cols}/{g}] with {cols} a multiple of {g}"
                )));
            }
            Ok((values, g))
        }
        Strategy::Tensor => {
            if values.len() != 1 {
                return Err(bad("[1]".into()));
            }
            Ok((vec![values[0]; rows], cols))
        }
        Strategy::Block(bh, bw) => {
            let (br, bc) = (rows.div_ceil(bh), cols.div_ceil(bw));
            if e.shape != [br, bc] {
                return Err(bad(format!("[{br}, {bc}]")));
            }
            if !cols.is_multiple_of(bw) {
                return Err(RuntimeError::UnsupportedQuantization {
                    path: ckpt.file_of(e).to_path_buf(),
                    detail: format!(
                        "`{name}`: {cols} input columns are not a multiple of the {bw}-column block; \
                         partial blocks are not supported by this runtime"
                    ),
                });
            }
            let mut out = Vec::with_capacity(rows * bc);
            for r in 0..rows {
                out.extend_from_slice(&values[(r / bh) * bc..(r / bh + 1) * bc]);
            }
            Ok((out, bw))
        }
    }
}

/// A one-element float tensor (`input_scale`, shape `[1]` or `[]`).
fn scalar(ckpt: &Checkpoint, name: &str) -> Result<f32> {
    let e = entry(ckpt, name)?;
    let values = float_values(ckpt, e)?;
    match values.as_slice() {
        [v] => Ok(*v),
        _ => Err(RuntimeError::tensor(
            ckpt.file_of(e),
            name,
            format!("has shape {:?}; a single value is expected", e.shape),
        )),
    }
}
