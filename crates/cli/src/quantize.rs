//! The main job: from flags or a CreateOptimizationJob request document to an artifact.

use crate::args::JobArgs;
use crate::bar::Bar;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use temper_core::spec::{JobSpec, Location, Optimization, Stopping, Technique, TrainingData};
use temper_pipeline::progress::Cancel;

/// Builds the spec, runs it, prints the summary; returns the JSON summary.
pub fn run(args: &JobArgs, show_bar: bool, cancel: &Cancel) -> Result<Value> {
    // The device first: a host that cannot run the job says so before any download.
    let device = crate::args::open_device(args.device)?;
    let spec = match &args.request {
        Some(path) => spec_from_request(path, args)?,
        None => spec_from_flags(args)?,
    };
    let mut bar = Bar::new(show_bar);
    let mut sink = |e: temper_pipeline::progress::Event| bar.on_event(e);
    let outcome = temper_pipeline::run_job(&spec, &device, &mut sink, cancel);
    bar.finish();
    let outcome = outcome?;
    let mut summary = outcome.summary(&spec);
    summary["peak_rss_bytes"] = json!(peak_rss_bytes());
    if !args.json {
        print_summary(&summary);
    }
    Ok(summary)
}

fn spec_from_flags(args: &JobArgs) -> Result<JobSpec> {
    let model = args.model.as_ref().context("--model is required")?;
    let output = args.output.as_ref().context("--output is required")?;
    let name = args.name.clone().unwrap_or_else(|| default_name(model));
    // A Hub id (org/name[@revision]) becomes its downloaded snapshot directory.
    let progress = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let model = crate::hub::resolve(model, progress)?;
    Ok(JobSpec {
        name,
        source: Location::Local(model),
        output: Location::Local(output.clone()),
        instance_type: args
            .instance_type
            .clone()
            .context("--instance-type is required")?,
        optimizations: optimizations(args.environment()?, args)?,
        environment: Default::default(),
        stopping: Stopping {
            max_runtime_secs: args.max_runtime,
            ..Stopping::default()
        },
        kms_key_id: None,
        role_arn: None,
        tags: vec![],
        overwrite: args.overwrite,
    })
}

/// Flags and `--env` entries are the same `OPTION_*` names: `OPTION_QUANTIZE` makes a
/// quantization, `OPTION_TENSOR_PARALLEL_DEGREE` a sharding after it, each with the options
/// of its pass; job-wide options go with both.
fn optimizations(env: BTreeMap<String, String>, args: &JobArgs) -> Result<Vec<Optimization>> {
    let mut out = Vec::new();
    if env.contains_key("OPTION_QUANTIZE") {
        out.push(Optimization::new(Technique::Quantization, env.clone()));
    }
    if args.speculative || env.keys().any(|k| k.starts_with("OPTION_EAGLE_")) {
        let mut o = Optimization::new(Technique::SpeculativeDecoding, env.clone());
        o.training_data = args.training_data.as_ref().map(|p| TrainingData {
            location: Location::Local(p.clone()),
            data_type: args.training_data_type.clone(),
        });
        out.push(o);
    }
    if args.compile {
        // The compilation splits per rank itself: the degree is its option.
        out.push(Optimization::new(Technique::Compilation, env.clone()));
    } else if env.contains_key("OPTION_TENSOR_PARALLEL_DEGREE") {
        out.push(Optimization::new(Technique::Sharding, env.clone()));
    }
    if out.is_empty() {
        anyhow::bail!(
            "nothing to do: give --quantize awq|gptq|smoothquant|int4|fp8|int8 (OPTION_QUANTIZE), --speculative \
             (OPTION_EAGLE_*) and/or --tensor-parallel N (OPTION_TENSOR_PARALLEL_DEGREE), as flags \
             or --env entries"
        );
    }
    Ok(out)
}

fn spec_from_request(path: &Path, args: &JobArgs) -> Result<JobSpec> {
    if args.scheme.is_some() {
        anyhow::bail!(
            "--scheme needs --quantize; with --request, put OPTION_FP8_SCHEME or OPTION_INT8_SCHEME in the \
             request's OverrideEnvironment (or pass --env OPTION_INT8_SCHEME=W8A8)"
        );
    }
    let body = std::fs::read(path)
        .with_context(|| format!("reading the request document {}", path.display()))?;
    let options = temper_api::ConvertOptions {
        allow_local_paths: true,
    };
    let request = temper_api::parse_create_request_with(&body, &options)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.type_name(), e.message()))?;
    let mut spec = temper_api::to_job_spec(&request, &options)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.type_name(), e.message()))?;
    spec.overwrite = args.overwrite;
    // Flags given beside --request become job-wide options (OptimizationEnvironment); an
    // optimization's own OverrideEnvironment in the request still wins, as in the API.
    for (k, v) in args.environment()? {
        spec.environment.insert(k, v);
    }
    Ok(spec)
}

/// `optimize-<model directory name>`, reduced to the API's name pattern.
fn default_name(model: &Path) -> String {
    let base = model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!("optimize-{}", cleaned.trim_matches('-'));
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn mib(v: &Value) -> String {
    format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / (1u64 << 20) as f64)
}

fn print_summary(s: &Value) {
    println!("wrote {}", s["output"].as_str().unwrap_or_default());
    if s.get("scheme").is_some() {
        print_quantize(s);
    }
    if let Some(sh) = s.get("shard") {
        let secs = sh["seconds"].as_f64().unwrap_or(0.0);
        let rate = sh["input_bytes"].as_f64().unwrap_or(0.0) / secs.max(1e-9) / 1e9;
        println!(
            "  sharded for tensor-parallel degree {} (vLLM load_format={}): {} -> ranks of {} in {secs:.2} s ({rate:.2} GB/s)",
            sh["tensor_parallel_degree"],
            sh["load_format"].as_str().unwrap_or_default(),
            mib(&sh["input_bytes"]),
            sh["rank_bytes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(mib)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(sp) = s.get("speculative") {
        println!(
            "  EAGLE-3 head in {}/: {} updates on {} samples{}; held-out acceptance length {:.2}; \
             measured {:?}: acceptance length {:.2}, decode {:.2}x plain greedy ({} outputs identical)",
            sp["head"].as_str().unwrap_or_default(),
            sp["steps"],
            sp["training_samples"],
            sp["stopped_early"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            sp["held_out_acceptance_length"].as_f64().unwrap_or(0.0),
            sp["tree"],
            sp["acceptance_length"].as_f64().unwrap_or(0.0),
            sp["speedup"].as_f64().unwrap_or(0.0),
            sp["identical_outputs"].as_str().unwrap_or_default(),
        );
    }
    print_evaluation(&s["evaluation"]);
    println!(
        "  target {}: {}",
        s["instance_type"].as_str().unwrap_or_default(),
        s["fit"]["explanation"].as_str().unwrap_or_default()
    );
    for note in s["notes"].as_array().into_iter().flatten() {
        println!("  note: {}", note.as_str().unwrap_or_default());
    }
    for w in s["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", w.as_str().unwrap_or_default());
    }
    println!(
        "  recommended image: {}",
        s["recommended_image"].as_str().unwrap_or_default()
    );
}

fn print_quantize(s: &Value) {
    println!(
        "  {} ({}), {} tensors quantized, {} copied, on {}",
        s["scheme"].as_str().unwrap_or_default(),
        s["format"].as_str().unwrap_or_default(),
        s["tensors_quantized"],
        s["tensors_copied"],
        s["isa"].as_str().unwrap_or_default()
    );
    let secs = s["quantize_seconds"].as_f64().unwrap_or(0.0);
    let rate = s["input_bytes"].as_f64().unwrap_or(0.0) / secs.max(1e-9) / 1e9;
    println!(
        "  weights {} -> {} in {secs:.2} s ({rate:.2} GB/s)",
        mib(&s["input_bytes"]),
        mib(&s["output_bytes"])
    );
    println!(
        "  relative RMS error: mean {:.3e}, worst {:.3e} ({})",
        s["mean_relative_rms_error"].as_f64().unwrap_or(0.0),
        s["worst_relative_rms_error"].as_f64().unwrap_or(0.0),
        s["worst_tensor"].as_str().unwrap_or_default()
    );
}

/// What the quality evaluation measured, or why it did not run.
fn print_evaluation(e: &Value) {
    if e["measured"] == true {
        println!(
            "  quality vs source: perplexity {:.3} -> {:.3} ({:+.2}%), mean KL {:.4}, top-1 agreement {:.1}% ({}; {})",
            e["reference"]["perplexity"].as_f64().unwrap_or(f64::NAN),
            e["candidate"]["perplexity"].as_f64().unwrap_or(f64::NAN),
            e["perplexity_change"].as_f64().unwrap_or(f64::NAN) * 100.0,
            e["mean_kl"].as_f64().unwrap_or(f64::NAN),
            e["top1_agreement"].as_f64().unwrap_or(f64::NAN) * 100.0,
            e["data"].as_str().unwrap_or_default(),
            e["activations"].as_str().unwrap_or_default()
        );
    } else if let Some(reason) = e["reason"].as_str() {
        println!("  quality not measured: {reason}");
    }
}

/// The process's peak resident set size (VmHWM), where the OS reports it (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
