//! Whole sequences through a model one layer at a time: load layer `i`, run every sequence
//! through it, drop it. Memory is one layer plus the hidden states of the sequences, not the
//! whole model, so evaluation and calibration work on models larger than RAM.

use crate::error::{Result, RuntimeError};
use crate::layer::{Layer, Step};
use crate::model::{causal_mask, Head, LayerSource};
use crate::rope::RopeTables;
use candle_core::Tensor;

/// Final hidden states (before the last norm) of each sequence, and the model's head.
pub struct Hidden {
    pub head: Head,
    pub states: Vec<Tensor>,
    pub eps: f64,
}

/// Runs `sequences` (all the same length) through every layer of `source`. `on_layer` sees each
/// layer after all sequences went through it (calibration reads its observations there), and
/// `progress(done, total)` counts layers; it returns `false` to stop the pass
/// ([`RuntimeError::Stopped`]) between layers.
pub fn run_layers(
    source: &LayerSource,
    sequences: &[Vec<u32>],
    mut on_layer: impl FnMut(usize, &Layer),
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Hidden> {
    let len = match sequences.first() {
        Some(s) if !s.is_empty() => s.len(),
        _ => return Err(RuntimeError::Input("no sequences to run".into())),
    };
    if sequences.iter().any(|s| s.len() != len) {
        return Err(RuntimeError::Input(
            "sequences run layer by layer must all have the same length".into(),
        ));
    }
    let p = source.params();
    if len > p.max_positions {
        return Err(RuntimeError::ContextOverflow {
            needed: len,
            limit: p.max_positions,
            advice: "use shorter windows".into(),
        });
    }
    let head = source.head()?;
    let mut states = sequences
        .iter()
        .map(|s| head.embed(s))
        .collect::<Result<Vec<_>>>()?;
    let rope = RopeTables::new(p.head_dim, p.rope_theta, &p.rope_scaling, len)?;
    let mask = (len > 1).then(|| causal_mask(0, len)).transpose()?;
    for index in 0..p.num_layers {
        let layer = source.layer(index)?;
        let step = Step {
            params: p,
            index,
            cos: &rope.cos,
            sin: &rope.sin,
            mask: mask.as_ref(),
        };
        crate::pool::in_pool(|| -> Result<()> {
            for x in states.iter_mut() {
                *x = layer.forward(x, None, &step)?;
            }
            Ok(())
        })?;
        on_layer(index, &layer);
        if !progress(index + 1, p.num_layers) {
            return Err(RuntimeError::Stopped);
        }
    }
    Ok(Hidden {
        head,
        states,
        eps: p.rms_norm_eps,
    })
}

impl Hidden {
    /// Logits `[len, vocab]` of sequence `i`.
    pub fn logits(&self, i: usize) -> Result<Tensor> {
        self.head.logits(&self.states[i], self.eps)
    }
}
