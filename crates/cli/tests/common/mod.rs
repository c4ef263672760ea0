//! Shared helpers for the end-to-end tests: the real model, tiny synthetic models, and
//! running the `optimize` binary.

#![allow(dead_code)]

use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use temper_core::writer::{ShardedWriter, TensorSpec};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn optimize() -> Command {
    Command::new(env!("CARGO_BIN_EXE_optimize"))
}

/// Runs `optimize` with `args`; returns the output.
pub fn run(args: &[&str]) -> Output {
    optimize().args(args).output().expect("optimize runs")
}

/// Runs `optimize --model MODEL --instance-type INSTANCE --output OUT` plus `extra`.
pub fn quantize(model: &Path, instance: &str, out: &Path, extra: &[&str]) -> Output {
    optimize()
        .args([
            "--model",
            model.to_str().unwrap(),
            "--instance-type",
            instance,
        ])
        .args(["--output", out.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("optimize runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout_json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {text}\nstderr: {}",
            stderr(o)
        )
    })
}

/// The real SmolLM2-135M-Instruct as a bf16 Hugging Face directory, imported from the
/// GGUF fetched by scripts/fetch-assets.sh (once; cached under .cache/models).
pub fn smollm2() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace();
        let dir = match std::env::var_os("TEMPER_TEST_MODEL") {
            Some(d) => PathBuf::from(d),
            None => root.join(".cache/models/smollm2-135m-instruct"),
        };
        if dir.join("config.json").is_file() {
            return dir;
        }
        let assets = std::env::var_os("TEMPER_ASSETS")
            .map(PathBuf::from)
            .unwrap_or(root.join(".cache/assets"));
        let gguf = assets.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            gguf.is_file(),
            "{} is missing: run scripts/fetch-assets.sh first",
            gguf.display()
        );
        let out = run(&[
            "import-gguf",
            gguf.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--json",
        ]);
        // Another test binary may have imported it at the same time: that is fine.
        assert!(
            dir.join("config.json").is_file(),
            "import failed: {}",
            stderr(&out)
        );
        dir
    })
}

/// A tiny Llama-shaped model with seeded weights (f32 or bf16), optionally poisoned.
pub struct TinyModel {
    pub layers: usize,
    pub dtype: Dtype,
    pub model_type: &'static str,
    /// (tensor, flat index, value) to overwrite after generation.
    pub poison: Vec<(String, usize, f32)>,
    /// Rows of this tensor set to zero.
    pub zero_row: Option<(String, usize)>,
    /// Store this tensor as I32 instead.
    pub int_tensor: Option<String>,
    pub hidden: usize,
    pub ffn: usize,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            layers: 2,
            dtype: Dtype::BF16,
            model_type: "llama",
            poison: vec![],
            zero_row: None,
            int_tensor: None,
            hidden: HIDDEN,
            ffn: FFN,
        }
    }
}

pub const HIDDEN: usize = 64;
pub const FFN: usize = 128;
pub const VOCAB: usize = 100;

impl TinyModel {
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut t = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![VOCAB, self.hidden],
        )];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("input_layernorm.weight", vec![self.hidden]),
                ("self_attn.q_proj.weight", vec![self.hidden, self.hidden]),
                (
                    "self_attn.k_proj.weight",
                    vec![self.hidden / 2, self.hidden],
                ),
                (
                    "self_attn.v_proj.weight",
                    vec![self.hidden / 2, self.hidden],
                ),
                ("self_attn.o_proj.weight", vec![self.hidden, self.hidden]),
                ("post_attention_layernorm.weight", vec![self.hidden]),
                ("mlp.gate_proj.weight", vec![self.ffn, self.hidden]),
                ("mlp.up_proj.weight", vec![self.ffn, self.hidden]),
                ("mlp.down_proj.weight", vec![self.hidden, self.ffn]),
            ] {
                t.push((format!("{p}.{n}"), s));
            }
            if self.model_type == "qwen2" {
                for (n, rows) in [
                    ("q_proj", self.hidden),
                    ("k_proj", self.hidden / 2),
                    ("v_proj", self.hidden / 2),
                ] {
                    t.push((format!("{p}.self_attn.{n}.bias"), vec![rows]));
                }
            }
        }
        t.push(("model.norm.weight".to_string(), vec![self.hidden]));
        t
    }

    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let config = serde_json::json!({
            "architectures": [match self.model_type {
                "llama" => "LlamaForCausalLM",
                "mistral" => "MistralForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                _ => "BertModel",
            }],
            "model_type": self.model_type, "hidden_size": self.hidden, "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": VOCAB, "tie_word_embeddings": true, "rms_norm_eps": 1e-5,
            "torch_dtype": if self.dtype == Dtype::F32 { "float32" } else { "bfloat16" },
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        let tensors = self.tensors();
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .map(|(n, s)| {
                let dtype = if self.int_tensor.as_deref() == Some(n.as_str()) {
                    Dtype::I32
                } else {
                    self.dtype
                };
                TensorSpec::new(n.clone(), dtype, s.clone())
            })
            .collect();
        let w = ShardedWriter::create(dir, &specs, 1 << 30).unwrap();
        let mut seed = 0x9E3779B97F4A7C15u64;
        for (spec, (name, shape)) in specs.iter().zip(&tensors) {
            let n: usize = shape.iter().product();
            let mut vals: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect();
            for (t, i, v) in &self.poison {
                if t == name {
                    vals[*i] = *v;
                }
            }
            if let Some((t, row)) = &self.zero_row {
                if t == name {
                    let cols = shape[1];
                    vals[row * cols..(row + 1) * cols]
                        .iter_mut()
                        .for_each(|v| *v = 0.0);
                }
            }
            let bytes: Vec<u8> = match spec.dtype {
                Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Dtype::I32 => vals
                    .iter()
                    .flat_map(|v| (*v as i32).to_le_bytes())
                    .collect(),
                _ => vals
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            w.write(name, &bytes).unwrap();
        }
        w.finish().unwrap();
    }
}

/// Entries of `dir` (names), to show that nothing was left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
