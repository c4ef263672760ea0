//! Peak resident memory of `optimize` on a synthetic multi-GB checkpoint, beside the
//! size of its largest tensor and of the whole model; and its wall time beside a plain
//! copy (with fsync) of the same files, measured in the same run.
//!
//! Usage: cargo run --release -p temper-benches --bin peak_rss -- [LAYERS] [JOB] [FLAGS...]
//! (default 12 layers of Llama-2-7B shapes, about 5 GB of bf16; JOB fp8, int8, awq, gptq,
//! int4, shard (tensor parallel 8) or fp8+shard; FLAGS go to `optimize` as they are, e.g.
//! `--env OPTION_CALIB_SIZE=2`). The model has a byte-level tokenizer, so the calibrated
//! methods run on it (on the built-in sample text unless FLAGS say otherwise).
//! Needs `target/release/optimize` (cargo build --release --bin optimize).

use std::process::Command;
use temper_benches::{workspace, SyntheticModel};

fn main() {
    let mut args = std::env::args().skip(1);
    let layers: usize = args
        .next()
        .map(|a| a.parse().expect("LAYERS is a number"))
        .unwrap_or(12);
    let scheme = args.next().unwrap_or_else(|| "fp8".into());
    let bin = workspace().join("target/release/optimize");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release --bin optimize",
        bin.display()
    );
    let scratch = tempfile::tempdir_in(workspace().join(".cache")).expect("scratch dir");
    let model_dir = scratch.path().join("model");
    let model = SyntheticModel::llama7b_like(layers);
    let started = std::time::Instant::now();
    let total = model.write(&model_dir);
    eprintln!(
        "wrote a {:.2} GB synthetic checkpoint in {:.1} s",
        total as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let copy_seconds = copy_dir(&model_dir, &scratch.path().join("copy"));
    let out = scratch.path().join("out");
    let started = std::time::Instant::now();
    let job: Vec<&str> = match scheme.as_str() {
        "shard" => vec!["--tensor-parallel", "8"],
        "fp8+shard" => vec!["--quantize", "fp8", "--tensor-parallel", "8"],
        other => vec!["--quantize", other],
    };
    let output = Command::new(&bin)
        .args([
            "--model",
            model_dir.to_str().unwrap(),
            "--instance-type",
            "ml.p4de.24xlarge",
        ])
        .args(&job)
        .args(args)
        .args(["--output", out.to_str().unwrap(), "--json"])
        .output()
        .expect("optimize runs");
    assert!(
        output.status.success(),
        "optimize failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seconds = started.elapsed().as_secs_f64();
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON summary");
    // optimize reads its own high-water mark (VmHWM) just before it exits.
    let peak = summary["peak_rss_bytes"]
        .as_u64()
        .expect("peak_rss_bytes in the summary");
    let largest = model.largest_tensor_bytes();
    println!(
        "{}",
        serde_json::json!({
            "model_bytes": total,
            "largest_tensor_bytes": largest,
            "peak_rss_bytes": peak,
            "peak_rss_over_largest_tensor": peak as f64 / largest as f64,
            "peak_rss_over_model": peak as f64 / total as f64,
            "scheme": scheme,
            "seconds": seconds,
            "copy_seconds": copy_seconds,
            "seconds_over_copy": seconds / copy_seconds,
        })
    );
}

/// Copies every file of `from` into `to` and fsyncs it; returns the seconds taken.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> f64 {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read model dir") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        std::fs::copy(entry.path(), &dest).expect("copy file");
        std::fs::File::open(&dest)
            .and_then(|f| f.sync_all())
            .expect("fsync copy");
    }
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(to).expect("remove copy");
    seconds
}
