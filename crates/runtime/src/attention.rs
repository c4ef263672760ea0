//! Attention of one new position (the decode step) or a few (a speculative verify step) over
//! the KV cache, in plain f32 loops.
//!
//! Prefill and evaluation (many new positions) go through candle's batched matmul and softmax
//! in `layer.rs`; that path is the reference this one is tested against (logits of a prefill
//! and of the same tokens fed one at a time agree within 1e-4). For one position candle's
//! path costs more than the arithmetic: each matmul asks the OS for the CPU count
//! (`/proc/cpuinfo`) and splits a few thousand multiply-adds over threads, about 25 µs per
//! cached position per token on SmolLM2; these loops read each cached key and value once.

use crate::error::{Result, RuntimeError};
use candle_core::{CpuStorage, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

/// Below this many multiply-adds the heads run on the calling thread.
const PARALLEL_MACS: usize = 1 << 16;

/// Attention of `new` positions (one: a decode step; a few: a speculative verify step) over the
/// cache, whose last `new` positions are theirs. `q` holds `new` rows of
/// `num_heads * head_dim` roped queries; `keys`, `values` are `[kv_heads, total, head_dim]`
/// views of the cache; query head `h` uses kv head `h / (num_heads / kv_heads)` (Llama's
/// grouped-query attention); `mask` (`[new, total]` additive, 0 or `-inf`) says what each sees; without one, row `i`
/// sees positions up to `total - new + i`. Returns `[new, num_heads * head_dim]`.
pub fn attend_few(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    num_heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (kv_heads, total, d) = keys.dims3()?;
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let width = num_heads * d;
    let new = q.len() / width.max(1);
    let mask = mask
        .map(|m| m.flatten_all()?.to_vec1::<f32>())
        .transpose()?;
    if q.len() != new * width
        || new == 0
        || new > total
        || !num_heads.is_multiple_of(kv_heads)
        || values.dims3()? != (kv_heads, total, d)
        || mask.as_ref().is_some_and(|m| m.len() != new * total)
    {
        return Err(RuntimeError::Input(format!(
            "decode attention: {} query values for {num_heads} heads of {d}, keys {:?}, values {:?}",
            q.len(),
            keys.dims(),
            values.dims()
        )));
    }
    let group = num_heads / kv_heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let mut out = vec![0f32; new * width];
    with_f32(keys, |kd, kl| {
        with_f32(values, |vd, vl| {
            let (k, v) = (CacheView::new(kd, kl), CacheView::new(vd, vl));
            // Chunk `c` is query row `c / num_heads`, head `c % num_heads`.
            let head = |(c, o): (usize, &mut [f32])| {
                let (row, h) = (c / num_heads, c % num_heads);
                let seen = match &mask {
                    Some(m) => Visible::Mask(&m[row * total..(row + 1) * total]),
                    None => Visible::Upto(total - new + row + 1),
                };
                let qh = &q[row * width + h * d..row * width + (h + 1) * d];
                one_head(qh, &k, &v, h / group, total, scale, seen, o);
            };
            if new * num_heads * total * d >= PARALLEL_MACS {
                out.par_chunks_mut(d).enumerate().for_each(head);
            } else {
                out.chunks_mut(d).enumerate().for_each(head);
            }
        })
    })??;
    Ok(Tensor::from_vec(out, (new, width), &Device::Cpu)?)
}

/// Which cached positions a query attends to.
#[derive(Clone, Copy)]
enum Visible<'a> {
    /// Positions `0..n`.
    Upto(usize),
    /// Positions whose additive mask entry is finite (0).
    Mask(&'a [f32]),
}

/// A `[kv_heads, positions, head_dim]` cache tensor as strided f32 (rows are contiguous).
struct CacheView<'a> {
    data: &'a [f32],
    start: usize,
    head_stride: usize,
    pos_stride: usize,
}

impl<'a> CacheView<'a> {
    fn new(data: &'a [f32], layout: &Layout) -> Self {
        CacheView {
            data,
            start: layout.start_offset(),
            head_stride: layout.stride()[0],
            pos_stride: layout.stride()[1],
        }
    }

    fn row(&self, head: usize, pos: usize, d: usize) -> &[f32] {
        let at = self.start + head * self.head_stride + pos * self.pos_stride;
        &self.data[at..at + d]
    }
}

/// softmax(q . k_t * scale) weighted sum of v_t over the visible positions `t < total`, into
/// `out`.
#[allow(clippy::too_many_arguments)]
fn one_head(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    kv: usize,
    total: usize,
    scale: f32,
    seen: Visible,
    out: &mut [f32],
) {
    let d = q.len();
    let visible = |t: usize| match seen {
        Visible::Upto(n) => t < n,
        Visible::Mask(m) => m[t] == 0.0,
    };
    let mut scores: Vec<f32> = (0..total)
        .map(|t| {
            if visible(t) {
                dot(q, k.row(kv, t, d)) * scale
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (t, &s) in scores.iter().enumerate() {
        if s == 0.0 {
            continue;
        }
        let p = s / sum;
        for (o, &x) in out.iter_mut().zip(v.row(kv, t, d)) {
            *o += p * x;
        }
    }
}

/// Dot product with eight partial sums, so the compiler can keep them in vector lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32], &Layout) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => Ok(f(data, layout)),
        _ => Err(RuntimeError::Input(
            "decode attention needs an f32 KV cache on the CPU".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.25).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn one_position_returns_its_value() {
        // With a single cached position softmax is 1: the output is that position's value.
        let k = Tensor::new(&[[[1f32, 2.0]], [[3.0, 4.0]]], &Device::Cpu).unwrap();
        let v = Tensor::new(&[[[5f32, 6.0]], [[7.0, 8.0]]], &Device::Cpu).unwrap();
        let q = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], &Device::Cpu).unwrap();
        let out = attend_few(&q, &k, &v, 4, None)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(
            out.to_vec1::<f32>().unwrap(),
            vec![5.0, 6.0, 5.0, 6.0, 7.0, 8.0, 7.0, 8.0]
        );
    }

    #[test]
    fn a_few_rows_match_one_row_at_a_time_and_a_mask_hides_positions() {
        let (kv, total, d, heads, new) = (2, 6, 4, 4, 3);
        let val = |i: usize| ((i * 37 % 17) as f32 - 8.0) / 8.0;
        let k = Tensor::from_vec(
            (0..kv * total * d).map(val).collect::<Vec<_>>(),
            (kv, total, d),
            &Device::Cpu,
        )
        .unwrap();
        let v = Tensor::from_vec(
            (0..kv * total * d).map(|i| val(i + 5)).collect::<Vec<_>>(),
            (kv, total, d),
            &Device::Cpu,
        )
        .unwrap();
        let q = Tensor::from_vec(
            (0..new * heads * d)
                .map(|i| val(i + 11))
                .collect::<Vec<_>>(),
            (new, heads * d),
            &Device::Cpu,
        )
        .unwrap();
        let all = attend_few(&q, &k, &v, heads, None).unwrap();
        for row in 0..new {
            let seen = total - new + row + 1;
            let one = attend_few(
                &q.get(row).unwrap(),
                &k.narrow(1, 0, seen).unwrap(),
                &v.narrow(1, 0, seen).unwrap(),
                heads,
                None,
            )
            .unwrap();
            let diff = (all.get(row).unwrap() - one.get(0).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "row {row}");
        }
        // A mask equal to the causal one gives the same; hiding a position changes the result.
        let causal: Vec<f32> = (0..new)
            .flat_map(|r| {
                (0..total).map(move |t| {
                    if t < total - new + r + 1 {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mut m = Tensor::from_vec(causal.clone(), (new, total), &Device::Cpu).unwrap();
        let masked = attend_few(&q, &k, &v, heads, Some(&m)).unwrap();
        assert_eq!(
            masked.to_vec2::<f32>().unwrap(),
            all.to_vec2::<f32>().unwrap()
        );
        let mut hidden = causal;
        hidden[0] = f32::NEG_INFINITY;
        m = Tensor::from_vec(hidden, (new, total), &Device::Cpu).unwrap();
        let changed = attend_few(&q, &k, &v, heads, Some(&m)).unwrap();
        assert_ne!(
            changed.get(0).unwrap().to_vec1::<f32>().unwrap(),
            all.get(0).unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(
            changed.get(1).unwrap().to_vec1::<f32>().unwrap(),
            all.get(1).unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
