//! The runtime against an independent implementation: candle-transformers' `llama` on the real
//! SmolLM2-135M-Instruct model (imported by `scripts/test.sh` into `.cache/models`), in f32.
//!
//! Both load the same bf16 weights and compute in f32 (bf16 widens to f32 exactly), so any
//! difference is summation order: logits must agree within 1e-4, step after step through the KV
//! cache, and greedy decoding must produce the same tokens.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use temper_runtime::{LoadOptions, Logits, Model};

mod common;
use common::smollm2;

fn prompt(dir: &std::path::Path) -> Vec<u32> {
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tok.encode("The capital of France is", true)
        .unwrap()
        .get_ids()
        .to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_and_greedy_tokens_match_candle_transformers_llama() {
    let dir = smollm2();
    let device = Device::Cpu;
    let config: reference::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = config.into_config(false);
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
    let candle_model = reference::Llama::load(vb, &config).unwrap();
    let mut candle_cache = reference::Cache::new(true, DType::F32, &config, &device).unwrap();

    let ours = Model::load(&dir, &LoadOptions::default()).unwrap();
    let steps = 24;
    let prompt = prompt(&dir);
    let mut cache = ours.new_cache(prompt.len() + steps).unwrap();

    let mut tokens: Vec<u32> = prompt.clone();
    let mut ours_generated = Vec::new();
    let mut candle_generated = Vec::new();
    let mut worst = 0f32;
    let mut pos = 0;
    let mut input: Vec<u32> = prompt.clone();
    for _ in 0..steps {
        let x = Tensor::new(input.as_slice(), &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want = candle_model
            .forward(&x, pos, &mut candle_cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = ours
            .forward(&input, &mut cache, Logits::Last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        worst = worst.max(max_abs_diff(&got, &want));
        let next_ours = temper_runtime::eval::argmax(&got) as u32;
        let next_candle = temper_runtime::eval::argmax(&want) as u32;
        ours_generated.push(next_ours);
        candle_generated.push(next_candle);
        pos += input.len();
        input = vec![next_candle];
        tokens.push(next_candle);
    }
    assert!(
        worst <= 1e-4,
        "largest logit difference {worst} exceeds 1e-4"
    );
    assert_eq!(ours_generated, candle_generated, "greedy tokens differ");
    eprintln!("largest logit difference over {steps} steps: {worst:e}; tokens {tokens:?}");
}

#[test]
fn all_position_logits_equal_step_by_step_logits() {
    // Prefill of the whole sequence and one-token-at-a-time decoding through the cache must
    // give the same logits at every position (causal mask, rope offsets, cache writes).
    let dir = smollm2();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let seq: Vec<u32> = vec![
        504, 3575, 282, 4649, 314, 7042, 30, 378, 2616, 282, 5027, 314,
    ];
    let mut cache = model.new_cache(seq.len()).unwrap();
    let all = model
        .forward(&seq, &mut cache, Logits::All)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut cache = model.new_cache(seq.len()).unwrap();
    // Two chunks, then single tokens: exercises a mask with past > 0.
    let mut rows = model
        .forward(&seq[..4], &mut cache, Logits::All)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    rows.extend(
        model
            .forward(&seq[4..7], &mut cache, Logits::All)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
    );
    for &t in &seq[7..] {
        rows.extend(
            model
                .forward(&[t], &mut cache, Logits::Last)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
        );
    }
    for (i, (a, b)) in all.iter().zip(&rows).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-4, "position {i}: difference {d}");
    }
}
