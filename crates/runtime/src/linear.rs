//! A Linear layer whose weight is any kernel [`Matrix`] (dense f32/f16/bf16, INT8, FP8, INT4),
//! run inside candle as a custom op.
//!
//! Activations are f32. How they enter the product follows the checkpoint, so that evaluation
//! measures what the serving engine runs: INT8 weight-only schemes multiply f32 activations,
//! INT4 (W4A16) ones bf16-rounded activations (the kernels round them);
//! W8A8 INT8 quantizes each token to INT8 and takes exact integer dot products; FP8 schemes with
//! FP8 activations round the input to E4M3 (per token, per tensor, or with the calibrated static
//! scale) before the product. The last is exact emulation: a product of two E4M3 values is exact
//! in f32, so only the summation order differs from an FP8 tensor core.

use crate::error::{Result, RuntimeError};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use temper_kernels::matmul::{self, Activations, Matrix, Scratch, Weights};
use temper_kernels::{Isa, FP8_E4M3_MAX};

/// How a Linear treats its input activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActQuant {
    /// f32 activations (dense and weight-only layers).
    None,
    /// INT8, one dynamic scale per token (native integer kernel).
    Int8PerToken,
    /// FP8 E4M3, one dynamic scale per token and run of `group` input columns (`group` equal
    /// to the columns is per token).
    Fp8PerGroup { group: usize },
    /// FP8 E4M3, one dynamic scale over the whole input.
    Fp8PerTensor,
    /// FP8 E4M3 with a calibrated scale.
    Fp8Static { scale: f32 },
}

/// One Linear (or several fused along the output dimension, e.g. q/k/v).
pub struct Linear {
    matrix: Matrix,
    bias: Option<Vec<f32>>,
    act: ActQuant,
    /// Largest |input| seen while observing (f32 bits; non-negative floats order like their
    /// bits), for static FP8 calibration. `None` when not observing.
    observed_absmax: Option<AtomicU32>,
    /// Sampled input rows and per-column magnitudes, for calibration searches (AWQ).
    recorded: Option<Mutex<RecordedInputs>>,
}

/// What a recording Linear kept of its inputs: every `stride`-th row (counting all rows it
/// saw, in call order), and `sum |x|` per input column over every row.
#[derive(Debug, Clone, Default)]
pub struct RecordedInputs {
    pub stride: usize,
    /// Kept rows, `cols` values each.
    pub rows: Vec<f32>,
    pub abs_sum: Vec<f64>,
    /// Largest |x| per input column over every row.
    pub abs_max: Vec<f32>,
    /// Rows seen.
    pub count: usize,
}

impl RecordedInputs {
    /// Mean |x| of each input column.
    pub fn abs_mean(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.abs_sum.iter().map(|&s| (s / n) as f32).collect()
    }

    fn add(&mut self, x: &[f32], cols: usize) {
        if self.abs_sum.len() != cols {
            self.abs_sum = vec![0.0; cols];
            self.abs_max = vec![0.0; cols];
        }
        for row in x.chunks_exact(cols) {
            for ((s, m), &v) in self.abs_sum.iter_mut().zip(&mut self.abs_max).zip(row) {
                *s += f64::from(v.abs());
                *m = m.max(v.abs());
            }
            if self.count.is_multiple_of(self.stride.max(1)) {
                self.rows.extend_from_slice(row);
            }
            self.count += 1;
        }
    }
}

thread_local! {
    /// Kernel scratch and the FP8-rounded input, reused across calls on this thread.
    static BUFFERS: RefCell<(Scratch, Vec<f32>, Vec<u8>)> = RefCell::new(Default::default());
}

impl Linear {
    pub fn new(matrix: Matrix, bias: Option<Vec<f32>>, act: ActQuant) -> Result<Self> {
        if let Some(b) = &bias {
            if b.len() != matrix.rows() {
                return Err(RuntimeError::Input(format!(
                    "bias of {} values for a Linear with {} outputs",
                    b.len(),
                    matrix.rows()
                )));
            }
        }
        if act == ActQuant::Int8PerToken
            && !matches!(matrix.weights(), Weights::Int8 { group, .. } if *group == matrix.cols())
        {
            return Err(RuntimeError::Input(
                "INT8 activations need per-channel INT8 weights".into(),
            ));
        }
        Ok(Linear {
            matrix,
            bias,
            act,
            observed_absmax: None,
            recorded: None,
        })
    }

    pub fn rows(&self) -> usize {
        self.matrix.rows()
    }

    pub fn cols(&self) -> usize {
        self.matrix.cols()
    }

    pub fn matrix(&self) -> &Matrix {
        &self.matrix
    }

    pub fn act(&self) -> ActQuant {
        self.act
    }

    /// Starts (or stops) recording the largest |input| this layer sees.
    pub fn observe_inputs(&mut self, on: bool) {
        self.observed_absmax = on.then(|| AtomicU32::new(0));
    }

    /// Starts recording inputs (every `stride`-th row, and column magnitudes); `None` stops.
    pub fn record_inputs(&mut self, stride: Option<usize>) {
        self.recorded = stride.map(|stride| {
            Mutex::new(RecordedInputs {
                stride,
                ..Default::default()
            })
        });
    }

    /// What [`Linear::record_inputs`] kept, if recording.
    pub fn recorded_inputs(&self) -> Option<RecordedInputs> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// The largest |input| seen since [`Linear::observe_inputs`], if observing.
    pub fn observed_absmax(&self) -> Option<f32> {
        self.observed_absmax
            .as_ref()
            .map(|a| f32::from_bits(a.load(Ordering::Relaxed)))
    }

    /// `x @ W^T + b` for `x` of shape `[.., cols]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.apply_op1_no_bwd(self)?)
    }

    /// The product on plain slices: `y[m, rows] = x[m, cols] W^T + b`.
    pub fn forward_slice(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        if let Some(max) = &self.observed_absmax {
            let stats = temper_kernels::row_stats(Isa::detect(), x.into());
            max.fetch_max(stats.absmax.to_bits(), Ordering::Relaxed);
        }
        if let Some(rec) = &self.recorded {
            let cols = self.cols();
            rec.lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&x[..m * cols], cols);
        }
        // The buffers leave the thread-local during the product: while it waits for its
        // chunks, a rayon worker may run another product (another thread's forward) that
        // then starts from empty buffers instead of finding them borrowed.
        let mut buffers = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let result = {
            let (scratch, rounded, codes) = &mut buffers;
            let (input, acts) = match self.act {
                ActQuant::None => (x, Activations::F32),
                ActQuant::Int8PerToken => (x, Activations::Int8PerToken),
                ActQuant::Fp8PerGroup { group } => {
                    round_to_fp8(x, group, Fp8Scale::PerRun, rounded, codes);
                    (&rounded[..], Activations::F32)
                }
                ActQuant::Fp8PerTensor => {
                    round_to_fp8(x, self.cols(), Fp8Scale::PerTensor, rounded, codes);
                    (&rounded[..], Activations::F32)
                }
                ActQuant::Fp8Static { scale } => {
                    round_to_fp8(x, self.cols(), Fp8Scale::Static(scale), rounded, codes);
                    (&rounded[..], Activations::F32)
                }
            };
            matmul::matmul(Isa::detect(), &self.matrix, input, m, y, acts, scratch)
        };
        BUFFERS.with(|b| *b.borrow_mut() = buffers);
        result?;
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        Ok(())
    }
}

enum Fp8Scale {
    /// One scale per run of `run` values (a token, or a group within it).
    PerRun,
    PerTensor,
    Static(f32),
}

/// `out = dequant(quant(x / s)) * s` with E4M3 rounding and saturation, the scale chosen as the
/// activation scheme says (`absmax / 448` for the dynamic ones), per run of `run` values.
fn round_to_fp8(x: &[f32], run: usize, scale: Fp8Scale, out: &mut Vec<f32>, codes: &mut Vec<u8>) {
    let isa = Isa::detect();
    out.resize(x.len(), 0.0);
    codes.resize(x.len(), 0);
    let scale_of = |run: &[f32]| {
        let absmax = temper_kernels::row_stats(isa, run.into()).absmax;
        absmax / FP8_E4M3_MAX
    };
    let tensor_scale = match scale {
        Fp8Scale::PerTensor => Some(scale_of(x)),
        Fp8Scale::Static(s) => Some(s),
        Fp8Scale::PerRun => None,
    };
    for ((row, q), o) in x
        .chunks_exact(run)
        .zip(codes.chunks_exact_mut(run))
        .zip(out.chunks_exact_mut(run))
    {
        let s = tensor_scale.unwrap_or_else(|| scale_of(row));
        if s == 0.0 {
            o.fill(0.0);
            continue;
        }
        temper_kernels::quantize_fp8(isa, row.into(), 1.0 / s, q);
        temper_kernels::dequantize_fp8(isa, q, s, o);
    }
}

impl CustomOp1 for Linear {
    fn name(&self) -> &'static str {
        "temper-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!(
                "temper-linear takes f32 activations, got {:?}",
                storage.dtype()
            );
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("temper-linear needs a contiguous input");
        };
        let dims = layout.shape().dims();
        let cols = *dims.last().unwrap_or(&0);
        if cols != self.cols() {
            candle_core::bail!(
                "temper-linear: input has {cols} columns, the weight {}",
                self.cols()
            );
        }
        let x = &data[start..end];
        let m = x.len() / cols.max(1);
        let mut y = vec![0f32; m * self.rows()];
        self.forward_slice(x, m, &mut y)
            .map_err(candle_core::Error::wrap)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.rows();
        }
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }
}

/// Concatenates Linears that read the same input (q/k/v, gate/up) into one along the output
/// dimension, so one product streams all their weights. Returns the parts unchanged when their
/// formats differ (e.g. one is left unquantized).
pub fn fuse(parts: Vec<Linear>) -> Vec<Linear> {
    if parts.len() < 2 || !fusable(&parts) {
        return parts;
    }
    let cols = parts[0].cols();
    let rows: usize = parts.iter().map(Linear::rows).sum();
    let act = match parts[0].act {
        // Engines fuse static FP8 inputs with the largest of the parts' scales.
        ActQuant::Fp8Static { .. } => ActQuant::Fp8Static {
            scale: parts
                .iter()
                .map(|p| match p.act {
                    ActQuant::Fp8Static { scale } => scale,
                    _ => 0.0,
                })
                .fold(0.0, f32::max),
        },
        other => other,
    };
    let bias = if parts.iter().any(|p| p.bias.is_some()) {
        let mut b = Vec::with_capacity(rows);
        for p in &parts {
            match &p.bias {
                Some(v) => b.extend_from_slice(v),
                None => b.extend(std::iter::repeat_n(0.0, p.rows())),
            }
        }
        Some(b)
    } else {
        None
    };
    let weights = concat_weights(parts.iter().map(|p| p.matrix.weights()));
    match Matrix::new(rows, cols, weights)
        .map_err(RuntimeError::from)
        .and_then(|m| Linear::new(m, bias, act))
    {
        Ok(fused) => vec![fused],
        Err(_) => parts,
    }
}

/// Whether two Linears treat their input alike; static scales may differ (fusing keeps the
/// largest, as vLLM does), every other parameter must match.
fn same_activations(a: ActQuant, b: ActQuant) -> bool {
    match (a, b) {
        (ActQuant::Fp8Static { .. }, ActQuant::Fp8Static { .. }) => true,
        (a, b) => a == b,
    }
}

fn fusable(parts: &[Linear]) -> bool {
    let first = &parts[0];
    parts.iter().all(|p| {
        p.cols() == first.cols()
            && same_activations(p.act, first.act)
            && match (p.matrix.weights(), first.matrix.weights()) {
                (Weights::F32(_), Weights::F32(_))
                | (Weights::F16(_), Weights::F16(_))
                | (Weights::Bf16(_), Weights::Bf16(_)) => true,
                (Weights::Int8 { group: a, .. }, Weights::Int8 { group: b, .. })
                | (Weights::Fp8 { group: a, .. }, Weights::Fp8 { group: b, .. })
                | (Weights::Int4 { group: a, .. }, Weights::Int4 { group: b, .. }) => a == b,
                _ => false,
            }
    })
}

fn concat_weights<'a>(mut parts: impl Iterator<Item = &'a Weights>) -> Weights {
    let first = parts.next().cloned().unwrap_or(Weights::F32(Vec::new()));
    parts.fold(first, |acc, w| match (acc, w) {
        (Weights::F32(mut a), Weights::F32(b)) => {
            a.extend_from_slice(b);
            Weights::F32(a)
        }
        (Weights::F16(mut a), Weights::F16(b)) => {
            a.extend_from_slice(b);
            Weights::F16(a)
        }
        (Weights::Bf16(mut a), Weights::Bf16(b)) => {
            a.extend_from_slice(b);
            Weights::Bf16(a)
        }
        (
            Weights::Int8 {
                mut codes,
                mut scales,
                group,
            },
            Weights::Int8 {
                codes: c,
                scales: s,
                ..
            },
        ) => {
            codes.extend_from_slice(c);
            scales.extend_from_slice(s);
            Weights::Int8 {
                codes,
                scales,
                group,
            }
        }
        (
            Weights::Fp8 {
                mut codes,
                mut scales,
                group,
            },
            Weights::Fp8 {
                codes: c,
                scales: s,
                ..
            },
        ) => {
            codes.extend_from_slice(c);
            scales.extend_from_slice(s);
            Weights::Fp8 {
                codes,
                scales,
                group,
            }
        }
        (
            Weights::Int4 {
                mut packed,
                mut scales,
                mut zeros,
                group,
            },
            Weights::Int4 {
                packed: p,
                scales: s,
                zeros: z,
                ..
            },
        ) => {
            // Rows hold an even number of codes, so each part's rows start on a byte.
            packed.extend_from_slice(p);
            scales.extend_from_slice(s);
            zeros.extend_from_slice(z);
            Weights::Int4 {
                packed,
                scales,
                zeros,
                group,
            }
        }
        // `fusable` checked the kinds agree.
        (acc, _) => acc,
    })
}

/// The same layer with its weight dequantized to f32 (for checking quantized kernels against
/// plain f32 arithmetic). Activation handling is dropped: the result is weight-only.
pub fn dequantized(lin: &Linear) -> Result<Linear> {
    let (rows, cols) = (lin.rows(), lin.cols());
    let mut w = vec![0f32; rows * cols];
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        lin.matrix.row(r, row);
    }
    Linear::new(
        Matrix::new(rows, cols, Weights::F32(w))?,
        lin.bias.clone(),
        ActQuant::None,
    )
}
