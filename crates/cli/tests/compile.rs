//! The compilation pass through `optimize --compile`: what it writes for a Neuron instance,
//! and every refusal (named option or scheme, nothing left behind). The TensorRT-LLM
//! checkpoint's contents are checked by tests/python/test_trtllm_checkpoint.py.

mod common;

use common::*;

/// Runs `optimize --compile` on SmolLM2 into `<parent>/out`; on failure checks the message
/// and that nothing was left in `parent`.
fn compile(extra: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let mut args = vec![
        "--model",
        smollm2().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--compile",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    (parent, o)
}

fn refused(extra: &[&str], needles: &[&str]) {
    let (parent, o) = compile(extra);
    assert!(!o.status.success(), "expected a refusal for {extra:?}");
    let err = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    for n in needles {
        assert!(
            err.contains(n),
            "{extra:?}: error should mention `{n}`:\n{err}"
        );
    }
    assert_eq!(listing(parent.path()), Vec::<String>::new(), "{err}");
}

#[test]
fn bad_compilation_requests_are_refused_naming_what_to_do() {
    let g6 = ["--instance-type", "ml.g6.xlarge"];
    let inf2 = ["--instance-type", "ml.inf2.xlarge"];
    refused(&inf2, &["OPTION_TENSOR_PARALLEL_DEGREE", "[1, 2]"]);
    refused(
        &[&inf2[..], &["--tensor-parallel", "4"]].concat(),
        &["=4", "2 cores"],
    );
    refused(
        &[&inf2[..], &["--tensor-parallel", "2", "--quantize", "fp8"]].concat(),
        &["Neuron's engines do not load FP8_DYNAMIC"],
    );
    refused(
        &[&g6[..], &["--quantize", "int8"]].concat(),
        &["INT8 W8A16", "pre-interleaved", "vLLM"],
    );
    refused(
        &[&g6[..], &["--env", "OPTION_N_POSITIONS=512"]].concat(),
        &[
            "OPTION_N_POSITIONS is a Neuron compilation option",
            "OPTION_MAX_INPUT_LEN",
        ],
    );
    refused(
        &[
            &g6[..],
            &[
                "--env",
                "OPTION_MAX_INPUT_LEN=8000",
                "--env",
                "OPTION_MAX_OUTPUT_LEN=1000",
            ],
        ]
        .concat(),
        &["OPTION_MAX_OUTPUT_LEN=1000", "8192"],
    );
    refused(
        &[&g6[..], &["--env", "OPTION_MAX_NUM_TOKENS=0"]].concat(),
        &["OPTION_MAX_NUM_TOKENS=0", "1 to 1048576"],
    );
    refused(
        &[
            &inf2[..],
            &["--tensor-parallel", "2", "--env", "OPTION_DTYPE=float16"],
        ]
        .concat(),
        &["OPTION_DTYPE=float16", "fp16, bf16 or fp32"],
    );
    refused(
        &[&g6[..], &["--speculative"]].concat(),
        &["compilation does not combine with speculative"],
    );
}

#[test]
fn neuron_compilation_writes_the_checked_settings_beside_the_weights() {
    let (parent, o) = compile(&[
        "--instance-type",
        "ml.inf2.24xlarge",
        "--tensor-parallel",
        "8",
        "--env",
        "OPTION_N_POSITIONS=2048",
        "--env",
        "OPTION_DTYPE=bf16",
        "--env",
        "OPTION_NEURON_OPTIMIZE_LEVEL=3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = parent.path().join("out");
    let summary = stdout_json(&o);
    assert!(
        summary["recommended_image"]
            .as_str()
            .unwrap()
            .contains("neuronx"),
        "{summary}"
    );
    let props = std::fs::read_to_string(out.join("serving.properties")).unwrap();
    for line in [
        "option.tensor_parallel_degree=8",
        "option.n_positions=2048",
        "option.dtype=bf16",
        "option.neuron_optimize_level=3",
    ] {
        assert!(props.contains(line), "{props}");
    }
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("neuron-compile.json")).unwrap()).unwrap();
    assert_eq!(settings["neuron_cores"], 12);
    assert!(settings["neff"].as_str().unwrap().contains("neuronx-cc"));
    // The weights are the source's, byte for byte, and not a link to them.
    let (a, b) = (
        std::fs::read(smollm2().join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap(),
    );
    assert!(a == b);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        std::fs::metadata(smollm2().join("model.safetensors"))
            .unwrap()
            .ino(),
        std::fs::metadata(out.join("model.safetensors"))
            .unwrap()
            .ino()
    );
}
