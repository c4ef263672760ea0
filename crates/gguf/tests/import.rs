//! GGUF import on the real SmolLM2-135M-Instruct Q4_1 file (fetched by
//! `scripts/fetch-assets.sh`).

use candle_core::quantized::gguf_file::{self, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use temper_gguf::reader::GgufFile;
use temper_gguf::{import_gguf, Error, ImportOptions};
use tokenizers::Tokenizer;

mod common;
use common::asset;

fn no_progress() -> impl FnMut(usize, usize, u64) {
    |_, _, _| {}
}

/// The tokenizer as `import_gguf` writes it, read back through `tokenizer.json` text.
fn smollm_tokenizer() -> Tokenizer {
    let file = GgufFile::open(&asset()).unwrap();
    let files = temper_gguf::tokenizer::build(&file.meta(), 8192).unwrap();
    let json = files.tokenizer.to_string(false).unwrap();
    json.parse().unwrap()
}

#[test]
fn tokenizer_round_trips_real_text() {
    let tok = smollm_tokenizer();
    let samples = [
        "The quick brown fox jumps over the lazy dog. It wasn't, they'd say, a surprise.",
        "12345",
        "def f(x):\n    if x > 0:\n        return x  # positive\n\treturn -x\n\n",
        "naïve café 日本語 🙂",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "   leading and trailing spaces   ",
    ];
    for text in samples {
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(
            tok.decode(enc.get_ids(), false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
    // Special tokens are single ids with the GGUF's own numbering.
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(id("<|endoftext|>"), 0);
    assert_eq!(id("<|im_start|>"), 1);
    assert_eq!(id("<|im_end|>"), 2);
    let chat = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert_eq!(chat.get_ids()[0], 1);
    assert_eq!(*chat.get_ids().last().unwrap(), 2);
    assert_eq!(chat.get_ids().len(), 5, "{:?}", chat.get_tokens());
    // SmolLM2 splits digits one by one (the `smollm` pre-tokenizer).
    let digits = tok.encode("12345", false).unwrap();
    assert_eq!(digits.get_tokens(), ["1", "2", "3", "4", "5"]);
    // Words with a leading space are single byte-level tokens ("Ġ" marks the space).
    let paris = tok.encode("The capital of France is Paris", false).unwrap();
    assert_eq!(
        paris.get_tokens(),
        ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis", "ĠParis"]
    );
    assert_eq!(paris.get_ids()[5], id("ĠParis"));
    // No BOS is added (tokenizer.ggml.add_bos_token = false) and specials are skippable.
    assert_eq!(
        tok.encode("hi", true).unwrap().get_ids(),
        tok.encode("hi", false).unwrap().get_ids()
    );
    assert_eq!(tok.decode(chat.get_ids(), true).unwrap(), "user\nhi");
}

#[test]
fn bf16_import_has_hugging_face_layout() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("smollm2-bf16");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    let opts = ImportOptions {
        overwrite: true,
        max_shard_bytes: 100 << 20,
        ..Default::default()
    };
    let report = import_gguf(&asset(), &out, &opts, &mut no_progress()).unwrap();
    assert!(
        !out.join("stale.txt").exists(),
        "overwrite replaces the whole directory"
    );
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "no staging leftovers"
    );
    assert_eq!(report.dtype, "bfloat16");
    assert_eq!(report.source_tensor_types.get("Q4_1"), Some(&210));
    assert_eq!(report.source_tensor_types.get("F32"), Some(&61));
    assert_eq!(report.source_tensor_types.get("Q8_0"), Some(&1));
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.safetensors.index.json",
    ] {
        assert!(
            report.files.iter().any(|n| n == f) && out.join(f).is_file(),
            "{f}: {:?}",
            report.files
        );
    }
    let (tensors, shards) = read_shards(&out);
    assert_eq!(shards, 3);
    assert_eq!(tensors.len(), 272);
    assert!(
        !tensors.contains_key("lm_head.weight"),
        "tied embeddings: no lm_head"
    );
    assert!(tensors
        .values()
        .all(|(dtype, _, _)| *dtype == safetensors::Dtype::BF16));
    let expect = [
        ("model.embed_tokens.weight", vec![49152, 576]),
        ("model.layers.0.self_attn.q_proj.weight", vec![576, 576]),
        ("model.layers.0.self_attn.k_proj.weight", vec![192, 576]),
        ("model.layers.0.self_attn.v_proj.weight", vec![192, 576]),
        ("model.layers.29.mlp.down_proj.weight", vec![576, 1536]),
        ("model.layers.29.mlp.gate_proj.weight", vec![1536, 576]),
        ("model.layers.0.input_layernorm.weight", vec![576]),
        ("model.norm.weight", vec![576]),
    ];
    for (name, shape) in expect {
        assert_eq!(tensors[name].1, shape, "{name}");
    }
    // The final norm is F32 in the GGUF: its bf16 copy is the exact rounding.
    let (norm, _) = GgufFile::open(&asset())
        .unwrap()
        .read_f32("output_norm.weight")
        .unwrap();
    let written: Vec<half::bf16> = tensors["model.norm.weight"]
        .2
        .chunks(2)
        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]))
        .collect();
    let expected: Vec<half::bf16> = norm.iter().map(|&x| half::bf16::from_f32(x)).collect();
    assert_eq!(written, expected);

    check_config_files(&out);
    let report_json = serde_json::to_value(&report).unwrap();
    assert_eq!(report_json["tokenizer"]["pre"], "smollm");
}

type TensorData = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Every tensor of a sharded output, found through its index; and the shard count.
fn read_shards(out: &Path) -> (HashMap<String, TensorData>, usize) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let weight_map = index["weight_map"].as_object().unwrap();
    let shards: BTreeSet<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
    let mut tensors = HashMap::new();
    for shard in &shards {
        let bytes = std::fs::read(out.join(shard)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, t) in st.tensors() {
            assert_eq!(
                weight_map[&name], *shard,
                "{name} is in the shard the index names"
            );
            tensors.insert(name, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
        }
    }
    assert_eq!(tensors.len(), weight_map.len());
    (tensors, shards.len())
}

/// `config.json`, `tokenizer_config.json` and `generation_config.json` of SmolLM2.
fn check_config_files(out: &Path) {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let checks = [
        ("architectures", serde_json::json!(["LlamaForCausalLM"])),
        ("model_type", "llama".into()),
        ("hidden_size", 576.into()),
        ("intermediate_size", 1536.into()),
        ("num_hidden_layers", 30.into()),
        ("num_attention_heads", 9.into()),
        ("num_key_value_heads", 3.into()),
        ("rms_norm_eps", 1e-5.into()),
        ("rope_theta", 100000.0.into()),
        ("max_position_embeddings", 8192.into()),
        ("vocab_size", 49152.into()),
        ("tie_word_embeddings", true.into()),
        ("torch_dtype", "bfloat16".into()),
        ("bos_token_id", 1.into()),
        ("eos_token_id", 2.into()),
        ("hidden_act", "silu".into()),
        ("attention_bias", false.into()),
    ];
    for (key, value) in checks {
        assert_eq!(config[key], value, "config.json {key}");
    }
    assert!(
        config.get("head_dim").is_none(),
        "head_dim is implied by hidden_size / heads"
    );
    // The core crate's parser accepts the written config.
    let parsed = temper_core::config::ModelConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(parsed.head_dim, 64);

    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["pad_token"], "<|im_end|>");
    assert_eq!(tc["unk_token"], "<|endoftext|>");
    assert_eq!(tc["add_bos_token"], false);
    assert_eq!(tc["model_max_length"], 8192);
    assert_eq!(tc["tokenizer_class"], "GPT2Tokenizer");
    assert!(tc["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(tc["added_tokens_decoder"].as_object().unwrap().len(), 17);
    assert_eq!(tc["added_tokens_decoder"]["1"]["content"], "<|im_start|>");
    let gen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (gen["bos_token_id"].clone(), gen["eos_token_id"].clone()),
        (1.into(), 2.into())
    );
}

/// Writes a small GGUF with the given metadata and no tensors.
fn synthetic_gguf(path: &Path, metadata: &[(&str, Value)]) {
    let mut file = std::fs::File::create(path).unwrap();
    let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &refs, &[]).unwrap();
}

fn assert_nothing_written(root: &Path, keep: &[&str]) {
    let left: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let opts = ImportOptions::default();
    let run = |gguf: &Path| import_gguf(gguf, &out, &opts, &mut no_progress()).unwrap_err();

    let missing = root.path().join("nope.gguf");
    let err = run(&missing);
    assert!(
        matches!(err, Error::Open { .. }) && err.to_string().contains("nope.gguf"),
        "{err}"
    );

    // Cut inside the metadata, and inside the tensor data.
    let source = std::fs::read(asset()).unwrap();
    for (name, len) in [("head.gguf", 1 << 20), ("half.gguf", source.len() / 2)] {
        let cut = root.path().join(name);
        std::fs::write(&cut, &source[..len]).unwrap();
        let err = run(&cut).to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains("download it again"), "{err}");
        assert!(!out.exists());
        assert_nothing_written(root.path(), &["head.gguf", "half.gguf"]);
    }
    let err = run(&root.path().join("half.gguf")).to_string();
    assert!(
        err.contains("truncated") && err.contains("tensor `"),
        "{err}"
    );

    let bert = root.path().join("bert.gguf");
    synthetic_gguf(
        &bert,
        &[("general.architecture", Value::String("bert".into()))],
    );
    let err = run(&bert);
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`bert`")
            && msg.contains("llama")
            && msg.contains("qwen2")
            && msg.contains("bert.gguf"),
        "{msg}"
    );

    let bare = root.path().join("bare.gguf");
    synthetic_gguf(
        &bare,
        &[("general.architecture", Value::String("llama".into()))],
    );
    let msg = run(&bare).to_string();
    assert!(
        msg.contains("llama.embedding_length") && msg.contains("missing"),
        "{msg}"
    );

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = import_gguf(&asset(), &out, &opts, &mut no_progress()).unwrap_err();
    assert!(
        matches!(err, Error::Core(temper_core::Error::OutputExists { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}
