//! Small random GGUF models (f32 tensors, so llama.cpp-style inference on the GGUF is
//! exact): the imported directory must compute the same logits through candle's
//! Hugging Face implementation as the GGUF through candle's llama.cpp-style one.
//! Covers what SmolLM2 does not: Qwen2 (biases, no q/k permutation), an untied LM
//! head, other head sizes, and Llama 3's rope factor tensor.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama, quantized_qwen2, qwen2};
use std::path::Path;
use temper_gguf::{import_gguf, ImportOptions, ImportReport, OutputDtype};

struct Shape {
    arch: &'static str,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    layers: usize,
    vocab: usize,
    tied: bool,
    biases: bool,
}

/// xorshift: deterministic weights without a random-number crate.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn tensors(s: &Shape) -> Vec<(String, QTensor)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| offset + scale * rng.uniform()).collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        out.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    };
    let hd = s.hidden / s.heads;
    add("token_embd.weight".into(), &[s.vocab, s.hidden], 1.0, 0.0);
    add("output_norm.weight".into(), &[s.hidden], 0.2, 1.0);
    if !s.tied {
        add("output.weight".into(), &[s.vocab, s.hidden], 0.3, 0.0);
    }
    for l in 0..s.layers {
        let b = |part: &str| format!("blk.{l}.{part}");
        add(b("attn_norm.weight"), &[s.hidden], 0.2, 1.0);
        add(b("ffn_norm.weight"), &[s.hidden], 0.2, 1.0);
        add(b("attn_q.weight"), &[s.heads * hd, s.hidden], 0.3, 0.0);
        add(b("attn_k.weight"), &[s.kv_heads * hd, s.hidden], 0.3, 0.0);
        add(b("attn_v.weight"), &[s.kv_heads * hd, s.hidden], 0.3, 0.0);
        add(b("attn_output.weight"), &[s.hidden, s.heads * hd], 0.3, 0.0);
        add(b("ffn_gate.weight"), &[s.ffn, s.hidden], 0.3, 0.0);
        add(b("ffn_up.weight"), &[s.ffn, s.hidden], 0.3, 0.0);
        add(b("ffn_down.weight"), &[s.hidden, s.ffn], 0.3, 0.0);
        if s.biases {
            add(b("attn_q.bias"), &[s.heads * hd], 0.5, 0.0);
            add(b("attn_k.bias"), &[s.kv_heads * hd], 0.5, 0.0);
            add(b("attn_v.bias"), &[s.kv_heads * hd], 0.5, 0.0);
        }
    }
    out
}

fn metadata(s: &Shape) -> Vec<(String, Value)> {
    let a = s.arch;
    let u = |v: usize| Value::U32(v as u32);
    let mut tokens: Vec<Value> = ["a", "b", "ab"]
        .iter()
        .map(|t| Value::String(t.to_string()))
        .collect();
    tokens.extend((tokens.len()..s.vocab).map(|i| Value::String(format!("t{i}"))));
    vec![
        ("general.architecture".into(), Value::String(a.into())),
        (format!("{a}.embedding_length"), u(s.hidden)),
        (format!("{a}.block_count"), u(s.layers)),
        (format!("{a}.attention.head_count"), u(s.heads)),
        (format!("{a}.attention.head_count_kv"), u(s.kv_heads)),
        (format!("{a}.feed_forward_length"), u(s.ffn)),
        (format!("{a}.context_length"), u(256)),
        (format!("{a}.rope.dimension_count"), u(s.hidden / s.heads)),
        (format!("{a}.rope.freq_base"), Value::F32(10_000.0)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String(if a == "qwen2" { "qwen2" } else { "llama-bpe" }.into()),
        ),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![Value::String("a b".into())]),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
    ]
}

fn write_gguf(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &ts).unwrap();
}

fn import_f32(gguf: &Path, out: &Path) -> ImportReport {
    let opts = ImportOptions {
        dtype: OutputDtype::F32,
        ..Default::default()
    };
    import_gguf(gguf, out, &opts, &mut |_, _, _| {}).unwrap()
}

const PROMPT: [u32; 7] = [3, 17, 5, 29, 0, 11, 8];

fn hf_weights(dir: &Path) -> VarBuilder<'static> {
    // SAFETY: the file was just written by this test and is not modified while mapped.
    unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap()
}

fn last_logits(t: Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(imported: &[f32], reference: &[f32]) {
    assert_eq!(imported.len(), reference.len());
    let max_diff = imported
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        max_diff <= 1e-4 * scale.max(1.0),
        "logits differ by up to {max_diff} (scale {scale})"
    );
}

#[test]
fn llama_with_untied_head_matches_the_gguf() {
    let shape = Shape {
        arch: "llama",
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 2,
        vocab: 32,
        tied: false,
        biases: false,
    };
    let root = tempfile::tempdir().unwrap();
    let (gguf, out) = (root.path().join("m.gguf"), root.path().join("hf"));
    write_gguf(&gguf, &metadata(&shape), &tensors(&shape));
    let report = import_f32(&gguf, &out);
    assert!(report.unpermuted_qk && !report.tie_word_embeddings);

    let config: llama::LlamaConfig =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let config = config.into_config(false);
    let model = llama::Llama::load(hf_weights(&out), &config).unwrap();
    let mut cache = llama::Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
    let input = Tensor::new(&PROMPT, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let imported = last_logits(model.forward(&input, 0, &mut cache).unwrap());

    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    assert_close(
        &imported,
        &last_logits(reference.forward(&input, 0).unwrap()),
    );
}

#[test]
fn qwen2_with_biases_matches_the_gguf() {
    let shape = Shape {
        arch: "qwen2",
        hidden: 48,
        heads: 4,
        kv_heads: 2,
        ffn: 80,
        layers: 2,
        vocab: 32,
        tied: true,
        biases: true,
    };
    let root = tempfile::tempdir().unwrap();
    let (gguf, out) = (root.path().join("m.gguf"), root.path().join("hf"));
    write_gguf(&gguf, &metadata(&shape), &tensors(&shape));
    let report = import_f32(&gguf, &out);
    assert!(!report.unpermuted_qk && report.tie_word_embeddings);
    assert_eq!(report.hf_architecture, "Qwen2ForCausalLM");
    assert_eq!(report.tensors, 2 + 12 * 2);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (raw["model_type"].as_str(), raw["attention_bias"].as_bool()),
        (Some("qwen2"), Some(true))
    );

    let config: qwen2::Config = serde_json::from_value(raw).unwrap();
    let mut model = qwen2::ModelForCausalLM::new(&config, hf_weights(&out)).unwrap();
    let input = Tensor::new(&PROMPT, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let imported = last_logits(model.forward(&input, 0).unwrap());

    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut reference =
        quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    assert_close(
        &imported,
        &last_logits(reference.forward(&input, 0).unwrap()),
    );
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["tokenizer_class"], "Qwen2Tokenizer");
}

/// llama.cpp's Llama 3.1 rope factors (factor 8, low 1, high 4, original 8192).
fn llama3_rope_freqs(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / head_dim as f64);
            let (low, high) = (8192.0, 8192.0 / 4.0);
            let f = if wavelen < high {
                1.0
            } else if wavelen > low {
                8.0
            } else {
                let smooth = (8192.0 / wavelen - 1.0) / 3.0;
                1.0 / ((1.0 - smooth) / 8.0 + smooth)
            };
            f as f32
        })
        .collect()
}

#[test]
fn llama3_rope_factors_become_rope_scaling() {
    let shape = Shape {
        arch: "llama",
        hidden: 256,
        heads: 2,
        kv_heads: 1,
        ffn: 32,
        layers: 1,
        vocab: 8,
        tied: true,
        biases: false,
    };
    let root = tempfile::tempdir().unwrap();
    let (gguf, out) = (root.path().join("m.gguf"), root.path().join("hf"));
    let mut ts = tensors(&shape);
    let freqs = Tensor::new(llama3_rope_freqs(10_000.0, 128), &Device::Cpu).unwrap();
    ts.push((
        "rope_freqs.weight".into(),
        QTensor::quantize(&freqs, GgmlDType::F32).unwrap(),
    ));
    write_gguf(&gguf, &metadata(&shape), &ts);
    let report = import_f32(&gguf, &out);
    assert_eq!(
        report.skipped_tensors.len(),
        1,
        "{:?}",
        report.skipped_tensors
    );
    assert!(report.skipped_tensors[0].starts_with("rope_freqs.weight"));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let rope = &config["rope_scaling"];
    assert_eq!(rope["rope_type"], "llama3");
    assert_eq!(rope["factor"], 8.0);
    assert_eq!(rope["original_max_position_embeddings"], 8192);
    // candle's Hugging Face Llama accepts it.
    let parsed: llama::LlamaConfig = serde_json::from_value(config).unwrap();
    assert!(parsed.rope_scaling.is_some());
}
