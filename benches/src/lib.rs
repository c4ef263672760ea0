//! Shared helpers for the benchmarks: locating the real model and writing synthetic
//! Llama-shaped checkpoints of any size.

use safetensors::Dtype;
use std::path::{Path, PathBuf};
use temper_core::writer::{ShardedWriter, TensorSpec};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The imported SmolLM2 directory (made by scripts/quickstart.sh or scripts/test.sh).
pub fn smollm2() -> PathBuf {
    let dir = workspace().join(".cache/models/smollm2-135m-instruct");
    assert!(
        dir.join("config.json").is_file(),
        "{} is missing: run scripts/quickstart.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

/// Shape of a synthetic Llama-like model.
pub struct SyntheticModel {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

impl SyntheticModel {
    /// Llama-2-7B's shapes with fewer layers.
    pub fn llama7b_like(layers: usize) -> Self {
        SyntheticModel {
            layers,
            hidden: 4096,
            intermediate: 11008,
            vocab: 32000,
        }
    }

    fn tensors(&self) -> Vec<TensorSpec> {
        let (h, f) = (self.hidden, self.intermediate);
        let mut t = vec![TensorSpec::new(
            "model.embed_tokens.weight",
            Dtype::BF16,
            vec![self.vocab, h],
        )];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("input_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.k_proj.weight", vec![h, h]),
                ("self_attn.v_proj.weight", vec![h, h]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("mlp.gate_proj.weight", vec![f, h]),
                ("mlp.up_proj.weight", vec![f, h]),
                ("mlp.down_proj.weight", vec![h, f]),
            ] {
                t.push(TensorSpec::new(format!("{p}.{n}"), Dtype::BF16, s));
            }
        }
        t.push(TensorSpec::new("model.norm.weight", Dtype::BF16, vec![h]));
        t.push(TensorSpec::new(
            "lm_head.weight",
            Dtype::BF16,
            vec![self.vocab, h],
        ));
        t
    }

    /// Writes config.json and bf16 safetensors shards of pseudo-random weights.
    pub fn write(&self, dir: &Path) -> u64 {
        std::fs::create_dir_all(dir).expect("create model dir");
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": self.hidden,
            "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": self.vocab,
            "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": false,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
        std::fs::write(
            dir.join("tokenizer.json"),
            byte_tokenizer_json().to_string(),
        )
        .expect("write tokenizer");
        let specs = self.tensors();
        let writer = ShardedWriter::create(dir, &specs, 2 << 30).expect("create shards");
        let mut seed = 0x2545F4914F6CDD1Du64;
        for spec in &specs {
            let n = (spec.byte_len() / 2) as usize;
            let mut bytes = Vec::with_capacity(n * 2);
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let v = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
                bytes.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
            writer.write(&spec.name, &bytes).expect("write tensor");
        }
        writer.finish().expect("finish shards");
        specs.iter().map(|s| s.byte_len()).sum()
    }

    /// The largest tensor in bytes.
    pub fn largest_tensor_bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|s| s.byte_len())
            .max()
            .unwrap_or(0)
    }
}

/// A byte-level BPE tokenizer with no merges: one token per byte (ids 0..256, GPT-2's byte to
/// character mapping), so that the calibrated methods can tokenize text for a synthetic model
/// of any vocabulary of at least 256.
pub fn byte_tokenizer_json() -> serde_json::Value {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    let mut vocab = serde_json::Map::new();
    for b in 0u32..256 {
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        let c = char::from_u32(c).expect("a valid char");
        vocab.insert(c.to_string(), serde_json::json!(b));
    }
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": vocab, "merges": []
        }
    })
}

/// Deterministic, roughly normal weights (a sum of three xorshift uniforms), `base` times 1-7
/// depending on the row, like real layers whose rows differ in scale. `state` seeds the
/// generator (any nonzero value).
pub fn synthetic_weights(rows: usize, cols: usize, state: u64, base: f32) -> Vec<f32> {
    let mut state = state;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..rows * cols)
        .map(|i| (uniform() + uniform() + uniform() - 1.5) * base * (1.0 + (i / cols % 7) as f32))
        .collect()
}

/// Per-channel INT8 scale of a row with largest magnitude `absmax` (1 for an all-zero row).
pub fn int8_scale(absmax: f32) -> f32 {
    if absmax > 0.0 {
        absmax / 127.0
    } else {
        1.0
    }
}

/// Per-channel FP8 E4M3 scale of a row with largest magnitude `absmax` (1 for an all-zero row).
pub fn fp8_scale(absmax: f32) -> f32 {
    if absmax > 0.0 {
        absmax / 448.0
    } else {
        1.0
    }
}

/// A local quantization job of `model` into `out` for ml.g6.12xlarge with `env` as the
/// quantization options (replacing an existing output).
pub fn quantize_job(model: &Path, out: &Path, env: &[(&str, &str)]) -> temper_core::spec::JobSpec {
    job(
        model,
        out,
        &[(temper_core::spec::Technique::Quantization, env)],
    )
}

/// A local job of `model` into `out` for ml.g6.12xlarge: each optimization with its options,
/// in order (replacing an existing output).
pub fn job(
    model: &Path,
    out: &Path,
    passes: &[(temper_core::spec::Technique, &[(&str, &str)])],
) -> temper_core::spec::JobSpec {
    use temper_core::spec::{JobSpec, Location, Optimization, Stopping};
    let optimizations = passes
        .iter()
        .map(|(technique, env)| {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Optimization::new(*technique, env)
        })
        .collect();
    JobSpec {
        name: "bench".into(),
        source: Location::Local(model.to_path_buf()),
        output: Location::Local(out.to_path_buf()),
        instance_type: "ml.g6.12xlarge".into(),
        optimizations,
        environment: Default::default(),
        stopping: Stopping::default(),
        kms_key_id: None,
        role_arn: None,
        tags: vec![],
        overwrite: true,
    }
}

/// Writes (once) the artifact of `env`'s quantization of `model` under `.cache/bench-artifacts`
/// (evaluation off) and returns its directory.
pub fn artifact(model: &Path, name: &str, env: &[(&str, &str)]) -> PathBuf {
    let out = workspace().join(".cache/bench-artifacts").join(name);
    if out.join("manifest.json").is_file() {
        return out;
    }
    let mut options = env.to_vec();
    options.push(("OPTION_EVAL", "false"));
    let spec = quantize_job(model, &out, &options);
    let mut sink = |_e: temper_pipeline::progress::Event| {};
    temper_pipeline::run_job(
        &spec,
        &temper_cuda::Device::Cpu(temper_kernels::Isa::detect()),
        &mut sink,
        &temper_pipeline::progress::Cancel::new(),
    )
    .unwrap_or_else(|e| panic!("writing the {name} artifact: {e}"));
    out
}

/// `n` prompt tokens: the tokenizer's ids of a fixed English text, repeated as needed.
pub fn tokens(model: &Path, n: usize) -> Vec<u32> {
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).expect("tokenizer");
    let text = "The capital of France is Paris. It lies on the Seine, and its museums, \
                cafes and bridges draw visitors from every part of the world each year. ";
    let ids = tok.encode(text, false).expect("encode").get_ids().to_vec();
    ids.iter().copied().cycle().take(n).collect()
}
