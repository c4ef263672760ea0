//! What the target gives a training sample: its residual streams at the head's three layers
//! (the head's input), its token embeddings (frozen, the head's other input), and its logits
//! over the draft vocabulary (the soft labels), computed online with no gradient.

use crate::error::Result;
use crate::vocab::DraftVocab;
use candle_core::{Device, Tensor};
use temper_runtime::{Logits, Model, NewTokens};

/// One sample's target outputs, one row per position.
pub struct SampleFeatures {
    /// `[T, 3H]`: the three residual streams side by side, low to high.
    pub streams: Tensor,
    /// `[T, H]`: the target's embedding of each token.
    pub embeddings: Tensor,
    /// `[T, Vd]`: the target's logits at the draft vocabulary's ids.
    pub draft_logits: Tensor,
    /// Draft id of the target's most likely next token at each position, `None` when that
    /// token is outside the draft vocabulary (the position then teaches nothing: the head
    /// could not draft it).
    pub target_choice: Vec<Option<u32>>,
}

pub fn sample_features(
    model: &Model,
    aux_layers: &[usize],
    vocab: &DraftVocab,
    tokens: &[u32],
) -> Result<SampleFeatures> {
    let mut cache = model.new_cache(tokens.len())?;
    let fw = model.forward_with(
        tokens,
        &mut cache,
        NewTokens::Causal,
        aux_layers,
        Logits::All,
    )?;
    let streams = Tensor::cat(&fw.captured, 1)?;
    let used = Tensor::new(vocab.used.as_slice(), &Device::Cpu)?;
    let draft_logits = fw.logits.index_select(&used, 1)?;
    let choice = fw.logits.argmax(1)?.to_vec1::<u32>()?;
    Ok(SampleFeatures {
        streams,
        embeddings: model.head().embed(tokens)?,
        draft_logits,
        target_choice: choice
            .into_iter()
            .map(|t| vocab.draft_id(t).map(|d| d as u32))
            .collect(),
    })
}
