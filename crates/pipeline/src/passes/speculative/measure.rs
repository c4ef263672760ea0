//! What a trained head buys, measured before anyone deploys it: the target's cost T(N) on
//! this machine, the chain length that cost model picks, and plain against speculative greedy
//! decoding of the same artifact on held-out conversations, side by side.

use crate::Result;
use serde::Serialize;
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::speculative::{
    choose_shape, generate_speculative, CostProfile, DraftHead, EagleDrafter, TreeShape,
};
use temper_runtime::Model;
use temper_text::sampling::SamplingParams;
use tokenizers::Tokenizer;

/// Plain against speculative decoding with one tree shape.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeResult {
    pub tree: TreeShape,
    /// Tokens committed per target pass (the target's own token included).
    pub acceptance_length: f64,
    /// Acceptance at each depth given every earlier draft was accepted.
    pub per_depth: Vec<f64>,
    /// Plain decode seconds over speculative decode seconds, same prompts and tokens.
    pub speedup: f64,
    pub plain_tokens_per_second: f64,
    pub speculative_tokens_per_second: f64,
    pub draft_seconds: f64,
    pub verify_seconds: f64,
    /// Prompts whose speculative output was token-identical to plain greedy decoding.
    pub identical_outputs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub prompts: usize,
    pub max_new_tokens: usize,
    pub cost: CostProfile,
    /// The chain the cost model chose, with its predicted speed-up.
    pub chosen: TreeShape,
    pub predicted_speedup: f64,
    /// Every shape measured, the chosen one first.
    pub results: Vec<ShapeResult>,
}

/// Measures `head` with `model` on `prompts` (token ids), greedy, `max_new` tokens each.
pub fn measure(
    model: &Model,
    head: &DraftHead,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    eos: &[u32],
    rates: &[f64],
    max_new: usize,
) -> Result<Measurement> {
    let cost = CostProfile::measure(model, head, 256, 8, 7)?;
    let (chosen, predicted_speedup) = choose_shape(&cost, rates, 6);
    let opts = GenerateOptions {
        max_new_tokens: max_new,
        sampling: SamplingParams::greedy(),
        stop_strings: Vec::new(),
        eos_token_ids: eos.to_vec(),
    };
    let plain: Vec<_> = prompts
        .iter()
        .map(|p| generate(model, tokenizer, p, &opts, &mut |_| {}))
        .collect::<std::result::Result<_, _>>()?;
    let mut shapes = vec![chosen];
    for k in [1, 2, 3, 4] {
        if k != chosen.depth {
            shapes.push(TreeShape::chain(k));
        }
    }
    shapes.push(TreeShape {
        depth: 3,
        top_k: 2,
        nodes: 6,
    });
    let mut results = Vec::new();
    for shape in shapes {
        let (mut plain_s, mut spec_s, mut plain_tokens, mut spec_tokens) = (0.0, 0.0, 0, 0);
        let (mut rounds, mut accepted, mut identical) = (0, 0, 0);
        let (mut draft_s, mut verify_s) = (0.0, 0.0);
        let mut reached = vec![0usize; shape.depth];
        let mut hits = vec![0usize; shape.depth];
        for (p, a) in prompts.iter().zip(&plain) {
            let capacity = p.len() + max_new + shape.nodes;
            let mut drafter = EagleDrafter::new(model, head, shape, capacity)?;
            let b = generate_speculative(model, &mut drafter, tokenizer, p, &opts, &mut |_| {})?;
            plain_s += a.decode_seconds;
            plain_tokens += a.decode_steps;
            spec_s += b.generation.decode_seconds;
            spec_tokens += b.generation.generated_tokens.saturating_sub(1);
            rounds += b.speculative.rounds;
            accepted += b.speculative.accepted_drafts;
            draft_s += b.speculative.draft_seconds;
            verify_s += b.speculative.verify_seconds;
            identical += usize::from(a.token_ids == b.generation.token_ids);
            for (d, s) in b.speculative.per_depth.iter().enumerate() {
                reached[d] += s.reached;
                hits[d] += s.accepted;
            }
        }
        let plain_rate = plain_tokens as f64 / plain_s.max(1e-9);
        let spec_rate = spec_tokens as f64 / spec_s.max(1e-9);
        results.push(ShapeResult {
            tree: shape,
            acceptance_length: (accepted + rounds) as f64 / rounds.max(1) as f64,
            per_depth: reached
                .iter()
                .zip(&hits)
                .map(|(&r, &h)| if r > 0 { h as f64 / r as f64 } else { 0.0 })
                .collect(),
            speedup: spec_rate / plain_rate.max(1e-9),
            plain_tokens_per_second: plain_rate,
            speculative_tokens_per_second: spec_rate,
            draft_seconds: draft_s,
            verify_seconds: verify_s,
            identical_outputs: identical,
        });
    }
    Ok(Measurement {
        prompts: prompts.len(),
        max_new_tokens: max_new,
        cost,
        chosen,
        predicted_speedup,
        results,
    })
}
