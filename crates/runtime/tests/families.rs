//! Each family's forward against candle-transformers' independent implementation of it, on
//! small checkpoints with seeded random f32 weights written here: Qwen2 (q/k/v biases, tied
//! embeddings, rope theta 1e6), Mistral (untied LM head, GQA) and Llama with Llama-3 rope
//! scaling. The prompt's last logits and then three decode steps through the KV cache must
//! agree within 1e-4.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, mistral, qwen2};
use safetensors::tensor::TensorView;
use serde_json::{json, Value};
use std::path::Path;
use temper_runtime::{LoadOptions, Logits, Model};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const VOCAB: usize = 128;
const LAYERS: usize = 2;
const PROMPT: [u32; 7] = [1, 17, 42, 99, 5, 64, 120];

/// Seeded values around `center` with spread `spread` (xorshift, uniform).
fn values(n: usize, seed: u64, center: f32, spread: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            center + spread * ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect()
}

/// Writes `config.json` and `model.safetensors` (f32) for a Llama-shaped model.
fn write_model(dir: &Path, config: Value, biases: bool, tied: bool) {
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![HIDDEN]),
            ("self_attn.q_proj.weight", vec![HIDDEN, HIDDEN]),
            ("self_attn.k_proj.weight", vec![kv, HIDDEN]),
            ("self_attn.v_proj.weight", vec![kv, HIDDEN]),
            ("self_attn.o_proj.weight", vec![HIDDEN, HIDDEN]),
            ("post_attention_layernorm.weight", vec![HIDDEN]),
            ("mlp.gate_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.up_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.down_proj.weight", vec![HIDDEN, FFN]),
        ] {
            shapes.push((format!("{p}.{n}"), s));
        }
        if biases {
            for (n, rows) in [("q_proj", HIDDEN), ("k_proj", kv), ("v_proj", kv)] {
                shapes.push((format!("{p}.self_attn.{n}.bias"), vec![rows]));
            }
        }
    }
    shapes.push(("model.norm.weight".into(), vec![HIDDEN]));
    if !tied {
        shapes.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN]));
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            // Norm weights near 1, everything else small and centred, biases larger so they
            // visibly move the result.
            let v = if name.contains("norm") {
                values(n, i as u64, 1.0, 0.2)
            } else if name.ends_with(".bias") {
                values(n, i as u64, 0.0, 1.0)
            } else {
                values(n, i as u64, 0.0, 0.3)
            };
            (name, shape, bytemuck::cast_slice(&v).to_vec())
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            let view = TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn base_config(model_type: &str, architecture: &str) -> Value {
    json!({
        "architectures": [architecture], "model_type": model_type,
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "hidden_act": "silu",
        "torch_dtype": "float32",
    })
}

fn weights(dir: &Path) -> VarBuilder<'static> {
    let device = Device::Cpu;
    let w = candle_core::safetensors::load(dir.join("model.safetensors"), &device).unwrap();
    VarBuilder::from_tensors(w, DType::F32, &device)
}

fn ids(tokens: &[u32]) -> Tensor {
    Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// Runs the prompt and three greedy decode steps through this runtime and through `reference`
/// (`reference(tokens, position)` returns the last position's logits), comparing every step.
fn agree(dir: &Path, mut reference: impl FnMut(&[u32], usize) -> Vec<f32>) {
    let ours = Model::load(dir, &LoadOptions::default()).unwrap();
    let mut cache = ours.new_cache(PROMPT.len() + 3).unwrap();
    let mut input: Vec<u32> = PROMPT.to_vec();
    let mut position = 0;
    for step in 0..4 {
        let a = ours
            .forward(&input, &mut cache, Logits::Last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = reference(&input, position);
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let scale = b.iter().map(|x| x.abs()).fold(0.0, f32::max);
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{}: step {step}: largest logit difference {worst} (logits up to {scale})",
            dir.display()
        );
        position += input.len();
        let next = temper_runtime::eval::argmax(&a) as u32;
        input = vec![next];
    }
}

#[test]
fn qwen2_with_biases_matches_candle_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen2");
    let mut config = base_config("qwen2", "Qwen2ForCausalLM");
    config["rope_theta"] = 1_000_000.0.into();
    config["tie_word_embeddings"] = true.into();
    config["sliding_window"] = 256.into();
    config["max_window_layers"] = LAYERS.into();
    config["use_sliding_window"] = false.into();
    write_model(&dir, config.clone(), true, true);
    let cfg: qwen2::Config = serde_json::from_value(config).unwrap();
    let mut reference = qwen2::ModelForCausalLM::new(&cfg, weights(&dir)).unwrap();
    agree(&dir, |tokens, pos| {
        let logits = reference.forward(&ids(tokens), pos).unwrap();
        logits.flatten_all().unwrap().to_vec1().unwrap()
    });
}

#[test]
fn mistral_with_an_untied_head_matches_candle_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mistral");
    let mut config = base_config("mistral", "MistralForCausalLM");
    config["rope_theta"] = 10_000.0.into();
    config["sliding_window"] = Value::Null;
    config["tie_word_embeddings"] = false.into();
    write_model(&dir, config.clone(), false, false);
    let cfg: mistral::Config = serde_json::from_value(config).unwrap();
    let mut reference = mistral::Model::new(&cfg, weights(&dir)).unwrap();
    agree(&dir, |tokens, pos| {
        let logits = reference.forward(&ids(tokens), pos).unwrap();
        logits.flatten_all().unwrap().to_vec1().unwrap()
    });
}

#[test]
fn llama3_rope_scaling_matches_candle_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama3");
    let mut config = base_config("llama", "LlamaForCausalLM");
    config["rope_theta"] = 500_000.0.into();
    config["tie_word_embeddings"] = false.into();
    // With 16-dimensional heads and an original context of 32, some frequencies are kept,
    // some divided by the factor and some smoothed between: all three branches run.
    config["rope_scaling"] = json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
    });
    write_model(&dir, config.clone(), false, false);
    let cfg: llama::LlamaConfig = serde_json::from_value(config).unwrap();
    let cfg = cfg.into_config(false);
    let reference = llama::Llama::load(weights(&dir), &cfg).unwrap();
    let mut cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    agree(&dir, |tokens, pos| {
        let logits = reference.forward(&ids(tokens), pos, &mut cache).unwrap();
        logits.flatten_all().unwrap().to_vec1().unwrap()
    });
}
