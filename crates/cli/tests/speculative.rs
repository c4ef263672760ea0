//! Speculative decoding end to end: `optimize --speculative` trains an EAGLE-3 head (a short
//! run), writes it beside the model with the serving configuration and the measurements, and
//! `optimize generate --speculative` decodes with it, token for token as without it. Bad
//! training data is refused by name before anything is written.

mod common;

use common::*;
use std::path::Path;

/// A few updates on a few conversations: enough to exercise every step of the pass.
const SMALL: &[&str] = &[
    "--speculative",
    "--env",
    "OPTION_EAGLE_STEPS=3",
    "--env",
    "OPTION_EAGLE_MAX_SAMPLES=24",
    "--env",
    "OPTION_EAGLE_HELD_OUT=3",
    "--env",
    "OPTION_EAGLE_EVAL_PROMPTS=2",
    "--env",
    "OPTION_EAGLE_DRAFT_VOCAB_SIZE=1024",
    "--env",
    "OPTION_MAX_MODEL_LEN=160",
];

/// What a failed run said: its JSON error on stdout (`--json`) and anything on stderr.
fn failure(o: &std::process::Output) -> String {
    format!("{} {}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

fn sharegpt() -> std::path::PathBuf {
    workspace().join(".cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json")
}

fn with_data(data: &Path) -> Vec<String> {
    let mut args: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    args.push("--training-data".into());
    args.push(data.display().to_string());
    args.push("--json".into());
    args
}

#[test]
fn a_job_writes_a_head_vllm_loads_and_generate_uses_it_losslessly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eagle");
    let args = with_data(&sharegpt());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let source_files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
    };
    let before = source_files(smollm2());
    let o = quantize(smollm2(), "ml.g6.xlarge", &out, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    // The job reads its source and never writes through to it.
    assert!(
        before == source_files(smollm2()),
        "the source model changed"
    );
    let summary = stdout_json(&o);
    assert_eq!(summary["speculative"]["steps"], 3);

    let head: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("speculative/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(head["architectures"][0], "LlamaForCausalLMEagle3");
    assert_eq!(head["draft_vocab_size"], 1024);
    let st = std::fs::read(out.join("speculative/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert!(st.names().iter().all(|n| !n.contains("embed")));
    assert_eq!(st.tensor("d2t").unwrap().dtype(), safetensors::Dtype::I64);

    let props = std::fs::read_to_string(out.join("serving.properties")).unwrap();
    let line = props
        .lines()
        .find(|l| l.starts_with("option.speculative_config="))
        .expect(&props);
    let config: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("option.speculative_config=")).unwrap();
    assert_eq!(config["method"], "eagle3");
    assert_eq!(config["model"], "/opt/ml/model/speculative");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let s = &manifest["speculative_decoding"];
    assert_eq!(s["method"], "eagle3");
    assert_eq!(s["data"]["samples"], 24);
    assert_eq!(s["training"]["steps_done"], 3);
    let depth = s["serving"]["num_speculative_tokens"].as_u64().unwrap();
    assert_eq!(config["num_speculative_tokens"].as_u64(), Some(depth));
    let results = s["measurement"]["results"].as_array().unwrap();
    assert!(results.len() >= 4);
    for r in results {
        // Greedy speculative decoding is lossless: every prompt gave the same tokens.
        assert_eq!(r["identical_outputs"], 2, "{r}");
        assert!(r["acceptance_length"].as_f64().unwrap() >= 1.0);
    }
    let files: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"speculative/model.safetensors"),
        "{files:?}"
    );
    assert!(!tmp.path().join(".eagle.eagle-checkpoints").exists());

    let gen = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--prompt",
            "Name three colours.",
            "--chat",
            "--max-tokens",
            "24",
            "--json",
        ];
        a.extend_from_slice(extra);
        let o = run(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout_json(&o)
    };
    let plain = gen(&[]);
    let spec = gen(&["--speculative"]);
    assert_eq!(spec["report"]["token_ids"], plain["report"]["token_ids"]);
    assert!(spec["acceptance_length"].as_f64().unwrap() >= 1.0);
    let tree = gen(&["--speculative", "--draft-depth", "3", "--draft-top-k", "2"]);
    assert_eq!(tree["report"]["token_ids"], plain["report"]["token_ids"]);
    assert_eq!(tree["report"]["speculative"]["tree"]["nodes"], 7);
}

#[test]
fn bad_training_data_is_refused_by_name_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty.jsonl", String::new(), "empty.jsonl"),
        (
            "no-assistant.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n".repeat(4),
            "assistant",
        ),
        (
            "prose.txt",
            "Just some prose, not conversations.".into(),
            "prose.txt",
        ),
    ];
    for (name, text, expected) in cases {
        let data = tmp.path().join(name);
        std::fs::write(&data, text).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let args = with_data(&data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = quantize(smollm2(), "ml.g6.xlarge", &out, &args);
        assert!(!o.status.success(), "{name} was accepted");
        let err = failure(&o);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!out.exists(), "{name}: an output was left behind");
    }
    // Every sample longer than OPTION_MAX_MODEL_LEN: the error says so and what to do.
    let out = tmp.path().join("out-long");
    let mut args = with_data(&sharegpt());
    args.extend(["--env".to_string(), "OPTION_MAX_MODEL_LEN=16".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = quantize(smollm2(), "ml.g6.xlarge", &out, &args);
    assert!(!o.status.success());
    assert!(
        failure(&o).contains("OPTION_MAX_MODEL_LEN"),
        "{}",
        failure(&o)
    );
    assert!(!out.exists());
    // A manifest naming a key that is not there.
    let manifest = tmp.path().join("manifest.json");
    std::fs::write(
        &manifest,
        format!(
            "[{{\"prefix\": \"{}/\"}}, \"missing.jsonl\"]",
            tmp.path().display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out-manifest");
    let mut args = with_data(&manifest);
    args.extend([
        "--training-data-type".to_string(),
        "ManifestFile".to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = quantize(smollm2(), "ml.g6.xlarge", &out, &args);
    assert!(!o.status.success());
    assert!(failure(&o).contains("missing.jsonl"), "{}", failure(&o));
    assert!(!out.exists());
    // Options out of range.
    let o = quantize(
        smollm2(),
        "ml.g6.xlarge",
        &tmp.path().join("out-opt"),
        &["--speculative", "--env", "OPTION_EAGLE_LEARNING_RATE=3"],
    );
    assert!(!o.status.success());
    assert!(
        failure(&o).contains("OPTION_EAGLE_LEARNING_RATE=3"),
        "{}",
        failure(&o)
    );
}
