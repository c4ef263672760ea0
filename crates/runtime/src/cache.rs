//! The key/value cache of one sequence: preallocated per layer and filled in place, so a decode
//! step copies only its own keys and values (no re-concatenation of the history).

use crate::error::{Result, RuntimeError};
use crate::params::ModelParams;
use crate::rope::RopeTables;
use candle_core::{DType, Device, Tensor};

/// Keys and values of every layer, `[kv_heads, capacity, head_dim]` each, plus the rotary
/// tables for the same positions.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
    pub(crate) rope: RopeTables,
}

impl KvCache {
    /// A cache for up to `capacity` positions (prompt plus generated tokens).
    pub fn new(params: &ModelParams, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(RuntimeError::Input(
                "a KV cache needs at least one position".into(),
            ));
        }
        if capacity > params.max_positions {
            return Err(RuntimeError::ContextOverflow {
                needed: capacity,
                limit: params.max_positions,
                advice: format!(
                    "the model's {} is the longest sequence it runs exactly; shorten the prompt \
                     or ask for fewer new tokens",
                    params.max_positions_field
                ),
            });
        }
        let shape = (params.num_kv_heads, capacity, params.head_dim);
        let zeros = || Tensor::zeros(shape, DType::F32, &Device::Cpu);
        let mut keys = Vec::with_capacity(params.num_layers);
        let mut values = Vec::with_capacity(params.num_layers);
        for _ in 0..params.num_layers {
            keys.push(zeros()?);
            values.push(zeros()?);
        }
        Ok(KvCache {
            keys,
            values,
            len: 0,
            capacity,
            rope: RopeTables::new(
                params.head_dim,
                params.rope_theta,
                &params.rope_scaling,
                capacity,
            )?,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything (the buffers are kept for the next sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on (e.g. rejected speculative tokens).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps, of the positions from `base` on, those at `base + keep[i]` (increasing), moved
    /// to `base + i`; drops the rest. After a speculative round this leaves the accepted path
    /// of the verified tree where a one-token-at-a-time decode would have put it.
    pub fn compact(&mut self, base: usize, keep: &[usize]) -> Result<()> {
        let ordered = keep.windows(2).all(|w| w[0] < w[1]);
        if !ordered || base > self.len || keep.last().is_some_and(|&k| base + k >= self.len) {
            return Err(RuntimeError::Input(format!(
                "KV compaction: slots {keep:?} after {base} (of {} filled) must be increasing \
                 and filled",
                self.len
            )));
        }
        for (i, &k) in keep.iter().enumerate() {
            if k == i {
                continue;
            }
            // keep[i] > i, so the source is never a slot already overwritten.
            for t in self.keys.iter().chain(&self.values) {
                // A fresh contiguous copy: slice_set needs one, and must not read the storage
                // it writes.
                let row = t.narrow(1, base + k, 1)?.force_contiguous()?;
                t.slice_set(&row, 1, base + i)?;
            }
        }
        self.len = base + keep.len();
        Ok(())
    }

    /// Writes layer `layer`'s new keys and values (`[kv_heads, new, head_dim]`) after the
    /// current positions and returns all keys and values so far.
    pub(crate) fn append(&self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(1)?;
        self.keys[layer].slice_set(k, 1, self.len)?;
        self.values[layer].slice_set(v, 1, self.len)?;
        let total = self.len + new;
        Ok((
            self.keys[layer].narrow(1, 0, total)?,
            self.values[layer].narrow(1, 0, total)?,
        ))
    }

    /// Marks `n` more positions as filled (after every layer appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// Rotary angles `[sum(lens), head_dim/2]` of the next `lens[i]` positions of each sequence
/// `i` (a batched step), checking each cache has room for them.
pub(crate) fn segment_tables(caches: &[&KvCache], lens: &[usize]) -> Result<(Tensor, Tensor)> {
    if caches.len() != lens.len() || caches.is_empty() || lens.contains(&0) {
        return Err(RuntimeError::Input(format!(
            "a batched step needs one or more tokens for each sequence: {} caches, tokens {lens:?}",
            caches.len()
        )));
    }
    let mut cos = Vec::with_capacity(caches.len());
    let mut sin = Vec::with_capacity(caches.len());
    for (i, (c, &n)) in caches.iter().zip(lens).enumerate() {
        if c.len + n > c.capacity {
            return Err(RuntimeError::ContextOverflow {
                needed: c.len + n,
                limit: c.capacity,
                advice: format!(
                    "sequence {i} of the batch has no room for {n} more positions in its KV \
                     cache; end it or give it a larger cache"
                ),
            });
        }
        cos.push(c.rope.cos.narrow(0, c.len, n)?);
        sin.push(c.rope.sin.narrow(0, c.len, n)?);
    }
    Ok((Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?))
}
