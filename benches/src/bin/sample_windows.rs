//! Prints the token windows an `optimize` job cuts from its sample data, as JSON
//! (`{"evaluation": [[ids...]...], "calibration": [[ids...]...]}`), so another tool (the
//! llm-compressor comparison in `scripts/compare-llmcompressor.py`) calibrates and evaluates on
//! exactly the same tokens.
//!
//! Usage: cargo run --release -p temper-benches --bin sample_windows -- MODEL_DIR DATA
//! WINDOW_LEN CALIB_WINDOWS [EVAL_WINDOWS] (DATA `builtin` for the built-in sample;
//! EVAL_WINDOWS defaults to 4, as `optimize` does).

use std::path::PathBuf;
use temper_options::SampleOptions;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!(
            "usage: sample_windows MODEL_DIR DATA|builtin WINDOW_LEN CALIB_WINDOWS [EVAL_WINDOWS]"
        );
        std::process::exit(2);
    }
    let model_dir = PathBuf::from(&args[0]);
    let number = |i: usize, what: &str| -> usize {
        args[i]
            .parse()
            .unwrap_or_else(|_| panic!("{what} must be a number, not {}", args[i]))
    };
    let opts = SampleOptions {
        data: (args[1] != "builtin").then(|| PathBuf::from(&args[1])),
        window_len: number(2, "WINDOW_LEN"),
        calibration_windows: number(3, "CALIB_WINDOWS"),
        eval_windows: if args.len() > 4 {
            number(4, "EVAL_WINDOWS")
        } else {
            4
        },
    };
    let tokenizer =
        temper_text::tokenizer::load_tokenizer(&model_dir).unwrap_or_else(|e| panic!("{e}"));
    let windows = temper_pipeline::samples::sample_windows(&model_dir, &tokenizer, &opts, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = serde_json::json!({
        "source": windows.source,
        "window_len": windows.window_len,
        "evaluation": windows.evaluation,
        "calibration": windows.calibration,
    });
    println!("{out}");
}
