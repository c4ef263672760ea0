//! Attention of one new position over the KV cache (the decode step), in plain f32 loops.
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

/// `q`: the new position's roped queries, `num_heads * head_dim` values (any shape);
/// `keys`, `values`: `[kv_heads, total, head_dim]` views of the cache (the new position
/// included). Returns `[1, num_heads * head_dim]`. Query heads `h` use kv head
/// `h / (num_heads / kv_heads)`, as in Llama's grouped-query attention.
pub fn attend_one(q: &Tensor, keys: &Tensor, values: &Tensor, num_heads: usize) -> Result<Tensor> {
    let (kv_heads, total, d) = keys.dims3()?;
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    if q.len() != num_heads * d
        || !num_heads.is_multiple_of(kv_heads)
        || values.dims3()? != (kv_heads, total, d)
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
    let mut out = vec![0f32; num_heads * d];
    with_f32(keys, |kd, kl| {
        with_f32(values, |vd, vl| {
            let (k, v) = (CacheView::new(kd, kl), CacheView::new(vd, vl));
            let head = |(h, o): (usize, &mut [f32])| {
                let kv = h / group;
                one_head(&q[h * d..(h + 1) * d], &k, &v, kv, total, scale, o);
            };
            if num_heads * total * d >= PARALLEL_MACS {
                out.par_chunks_mut(d).enumerate().for_each(head);
            } else {
                out.chunks_mut(d).enumerate().for_each(head);
            }
        })
    })??;
    Ok(Tensor::from_vec(out, (1, num_heads * d), &Device::Cpu)?)
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

/// softmax(q . k_t * scale) weighted sum of v_t over positions `t < total`, into `out`.
fn one_head(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    kv: usize,
    total: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let mut scores: Vec<f32> = (0..total)
        .map(|t| dot(q, k.row(kv, t, d)) * scale)
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (t, &s) in scores.iter().enumerate() {
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
        let out = attend_one(&q, &k, &v, 4).unwrap().flatten_all().unwrap();
        assert_eq!(
            out.to_vec1::<f32>().unwrap(),
            vec![5.0, 6.0, 5.0, 6.0, 7.0, 8.0, 7.0, 8.0]
        );
    }
}
