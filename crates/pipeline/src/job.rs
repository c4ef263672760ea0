//! Running a whole job from its [`JobSpec`]: plan every pass, then run them in order, each
//! reading the checkpoint the previous one wrote (a hidden directory inside the stage),
//! write the side files and the manifest, then rename the stage into place. Any error or a
//! cancellation drops the staging directory, so the output either appears complete or not at
//! all.

use crate::artifact;
use crate::passes::compile::CompilePass;
use crate::passes::quantize::rewrite::Rewrites;
use crate::passes::quantize::{QuantizePass, QuantizePlan};
use crate::passes::shard::{ShardPass, ShardPlan};
use crate::passes::speculative::SpeculativePass;
use crate::passes::{Pass, PassContext, PassOutput};
use crate::progress::{Cancel, Event, Sink};
use crate::samples::{self, EvaluationRecord, SampleWindows};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use temper_catalog::{recommended_image, ImageFlavour, Instance, DEFAULT_REGION};
use temper_core::checkpoint::Checkpoint;
use temper_core::manifest::{FileDigest, FitRecord, Manifest, TargetRecord, SCHEMA_VERSION};
use temper_core::spec::JobSpec;
use temper_core::staging::StagedDir;
use temper_core::writer::TensorSpec;
use temper_core::IoContext;
use temper_cuda::Device;
use temper_options::quantize::Method;
use temper_options::{JobOptions, ModelShape, PassOptions, Target};

/// A job with every pass planned and checked.
pub struct JobPlan {
    pub options: JobOptions,
    pub target: Target,
    pub source: Checkpoint,
    pub quantize: Option<QuantizePass>,
    pub speculative: Option<SpeculativePass>,
    pub shard: Option<ShardPass>,
    pub compile: Option<CompilePass>,
    pub fit: FitRecord,
}

/// A finished job.
#[derive(Debug)]
pub struct JobOutcome {
    pub output: PathBuf,
    pub manifest: Manifest,
    /// Each pass's summary, in order, as `(name, summary)`.
    pub passes: Vec<(String, serde_json::Value)>,
}

impl JobOutcome {
    /// The job's summary as `optimize --json` prints it and the job API's worker
    /// reports it: what was written, how, how well, and for which image. The quantize pass's
    /// figures sit at the top level (as before sharding existed); every pass is under
    /// `passes`.
    pub fn summary(&self, spec: &JobSpec) -> serde_json::Value {
        let m = &self.manifest;
        let mut s = serde_json::json!({
            "status": "completed",
            "job_name": spec.name,
            "output": self.output,
            "instance_type": spec.instance_type,
            "tensor_parallel_degree": m.target.fit.tensor_parallel_degree,
            "fit": m.target.fit,
            "notes": m.target.notes,
            "recommended_image": m.recommended_image,
            "warnings": m.warnings,
            "evaluation": m.evaluation,
            "passes": self.passes.iter().map(|(n, s)| serde_json::json!({"pass": n, "summary": s})).collect::<Vec<_>>(),
        });
        for (name, summary) in &self.passes {
            match name.as_str() {
                "quantize" => {
                    if let (Some(obj), Some(q)) = (s.as_object_mut(), summary.as_object()) {
                        for (k, v) in q {
                            let key = if k == "seconds" {
                                "quantize_seconds"
                            } else {
                                k
                            };
                            obj.insert(key.to_string(), v.clone());
                        }
                    }
                }
                other => s[other] = summary.clone(),
            }
        }
        s
    }
}

/// Checks the spec and plans every pass, without writing anything.
pub fn plan_job(spec: &JobSpec) -> Result<JobPlan> {
    let options = JobOptions::parse(spec)?;
    let instance = Instance::lookup(&spec.instance_type)?;
    let source_dir = spec.source.local_path()?;
    let output = spec.output.local_path()?;
    if let (Ok(s), Ok(o)) = (source_dir.canonicalize(), absolute(output)) {
        if o == s || o.starts_with(&s) || s.starts_with(&o) {
            return Err(Error::Plan(format!(
                "the output {} and the source model {} overlap (one contains the other); writing or \
                 replacing the output would destroy the source: write the artifact somewhere else",
                output.display(),
                source_dir.display()
            )));
        }
    }
    let source = Checkpoint::open(source_dir)?;
    let shape = ModelShape::of(&source.config);
    let compiled = options
        .passes
        .iter()
        .any(|p| matches!(p, PassOptions::Compile(_)));
    let mut target = Target::resolve_for(instance, shape, options.requested_degree, compiled)?;
    let common = &options.common;
    let mut layout: Vec<TensorSpec> = source
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone()))
        .collect();
    let mut quantize = None;
    let mut speculative = None;
    let mut shard = None;
    let mut compile = None;
    for pass in &options.passes {
        match pass {
            PassOptions::Quantize(q) => {
                let plan = QuantizePlan::new(
                    Checkpoint::open(source_dir)?,
                    q.clone(),
                    common,
                    &mut target,
                )?;
                layout = plan.outputs.clone();
                quantize = Some(QuantizePass {
                    plan,
                    max_shard_bytes: common.max_shard_bytes,
                    calibration: None,
                });
            }
            PassOptions::Speculative(o) => {
                speculative = Some(plan_speculative(
                    spec,
                    o,
                    &source,
                    output,
                    quantize.as_ref().is_some_and(|q: &QuantizePass| {
                        q.plan.options.scheme.is_fp8() && !target.fp8_native()
                    }),
                )?);
            }
            PassOptions::Shard(_) => {
                if quantize.is_none() {
                    source
                        .config
                        .check_supported(common.allow_unknown_architecture)?;
                }
                let plan = ShardPlan::new(
                    layout.clone(),
                    &source.config,
                    &target,
                    common.max_shard_bytes,
                )?;
                shard = Some(ShardPass { plan });
            }
            PassOptions::Compile(c) => {
                let scheme = quantize
                    .as_ref()
                    .map(|q: &QuantizePass| q.plan.options.scheme);
                let params = layout
                    .iter()
                    .map(|t| t.shape.iter().product::<usize>() as u64)
                    .sum();
                compile = Some(CompilePass::plan(
                    c,
                    &source.config,
                    &target,
                    scheme,
                    params,
                )?);
            }
        }
    }
    let weight_bytes = match &shard {
        // Replicated norms, kv heads and vocab padding make ranks a little larger than an
        // even split: the fit uses the largest rank.
        Some(s) => s.plan.max_rank_bytes() * target.tensor_parallel_degree as u64,
        None => layout.iter().map(TensorSpec::byte_len).sum(),
    };
    let fit = target.check_fit(weight_bytes, shape)?;
    Ok(JobPlan {
        options,
        target,
        source,
        quantize,
        speculative,
        shard,
        compile,
        fit,
    })
}

/// Plans the speculative pass, checking before any work that the runtime can run the model
/// to train against and that the training data is there.
fn plan_speculative(
    spec: &JobSpec,
    options: &temper_options::SpeculativeOptions,
    source: &Checkpoint,
    output: &Path,
    weight_only: bool,
) -> Result<SpeculativePass> {
    let config = &source.config;
    if config.family == temper_core::config::Family::Unknown {
        return Err(Error::Plan(format!(
            "the speculative-decoding pass trains against the model running in temper's runtime, \
             which runs {} models, not `{}` ({})",
            temper_core::config::Family::SUPPORTED,
            config.model_type,
            config.architecture
        )));
    }
    if !source.dir.join("tokenizer.json").is_file() {
        return Err(Error::Plan(format!(
            "{} has no tokenizer.json: the draft head's training data cannot be tokenized",
            source.dir.display()
        )));
    }
    let checkpoint_dir = options.checkpoint_dir.clone().unwrap_or_else(|| {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        output
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!(".{name}.eagle-checkpoints"))
    });
    // Training stops early enough to write the head and measure it within the job's limit.
    let deadline = spec.stopping.max_runtime_secs.map(|secs| {
        let reserve = (secs / 5).max(60).min(secs / 2);
        std::time::Instant::now() + std::time::Duration::from_secs(secs - reserve)
    });
    let pass = SpeculativePass {
        options: options.clone(),
        source_dir: source.dir.clone(),
        weight_only,
        checkpoint_dir,
        deadline,
        chosen_depth: None,
    };
    pass.data_files()?;
    Ok(pass)
}

/// The nearest existing directory at or above the output's parent, for scratch files.
fn scratch_dir(output: &Path) -> PathBuf {
    let mut dir = output.parent().unwrap_or(Path::new("."));
    loop {
        if dir.as_os_str().is_empty() {
            return PathBuf::from(".");
        }
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => return std::env::temp_dir(),
        }
    }
}

fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    match path.canonicalize() {
        Ok(p) => Ok(p),
        Err(_) => Ok(std::path::absolute(path)?),
    }
}

/// Runs the job to completion.
pub fn run_job(spec: &JobSpec, device: &Device, sink: Sink, cancel: &Cancel) -> Result<JobOutcome> {
    sink(Event::Phase("plan"));
    let mut plan = plan_job(spec)?;
    let output = spec.output.local_path()?;
    let (samples, sample_problem) = prepare_samples(&plan)?;
    if let Some(q) = plan.quantize.as_mut() {
        if q.plan.options.needs_calibration() {
            let what = match q.plan.options.method {
                Method::Awq => "AWQ",
                Method::Gptq { .. } => "GPTQ",
                Method::SmoothQuant { .. } => "SmoothQuant",
                Method::RoundToNearest => "static FP8",
            };
            let samples = samples.as_ref().ok_or_else(|| {
                Error::Plan(format!(
                    "{what} needs calibration: {}",
                    sample_problem.clone().unwrap_or_default()
                ))
            })?;
            use crate::passes::quantize::{awq, gptq, smoothquant};
            let (dir, scheme, dtype) = (
                &q.plan.checkpoint.dir,
                q.plan.options.scheme,
                q.plan.scale_dtype,
            );
            // GPTQ rounds the weights AWQ or SmoothQuant scaled (its codes replace AWQ's clip
            // ratios); its record goes beside the scaling method's.
            let gptq_on_scaled =
                |found: &mut Rewrites, record: &mut serde_json::Value, sink: Sink| -> Result<()> {
                    sink(Event::Phase("gptq"));
                    let scratch = scratch_dir(output);
                    let (codes, g) = gptq::search(
                        dir,
                        samples,
                        scheme,
                        dtype,
                        true,
                        &scratch,
                        Some(gptq::Smoothing(found)),
                        sink,
                        cancel,
                    )?;
                    for (name, rewrite) in codes {
                        found.entry(name).or_default().merge(rewrite);
                    }
                    if let serde_json::Value::Object(m) = record {
                        m.insert("gptq".into(), record_json(&g));
                    }
                    Ok(())
                };
            let record = match q.plan.options.method {
                Method::SmoothQuant { alpha } => {
                    sink(Event::Phase("smoothquant"));
                    let (mut found, r) = smoothquant::search(dir, samples, alpha, sink, cancel)?;
                    let mut record = record_json(&r);
                    if q.plan.options.gptq_rounding {
                        gptq_on_scaled(&mut found, &mut record, sink)?;
                    }
                    q.plan.rewrites = found;
                    record
                }
                Method::Gptq { actorder } => {
                    sink(Event::Phase("gptq"));
                    // The codes wait beside the output (same disk as the artifact) until written.
                    let scratch = scratch_dir(output);
                    let (codes, r) = gptq::search(
                        dir, samples, scheme, dtype, actorder, &scratch, None, sink, cancel,
                    )?;
                    q.plan.rewrites = codes;
                    record_json(&r)
                }
                Method::Awq => {
                    sink(Event::Phase("awq"));
                    let (mut found, r) = awq::search(dir, samples, scheme, dtype, sink, cancel)?;
                    let mut record = record_json(&r);
                    if q.plan.options.gptq_rounding {
                        gptq_on_scaled(&mut found, &mut record, sink)?;
                    }
                    q.plan.rewrites = found;
                    record
                }
                Method::RoundToNearest => {
                    sink(Event::Phase("calibrate"));
                    let (absmax, r) = samples::calibrate(dir, samples, sink, cancel)?;
                    q.plan.input_absmax = absmax;
                    record_json(&r)
                }
            };
            q.calibration = Some(record);
            cancel.check()?;
        }
    }
    let stage = StagedDir::create(output, spec.overwrite)?;
    let source_dir = plan.source.dir.clone();
    let side_files = artifact::side_file_names(&source_dir)?;
    let input_names = artifact::input_names(&plan.source, &side_files);
    // Hashing the inputs reads every source byte again: do it on its own thread while the
    // passes run, so it costs little wall time. A failure or Ctrl-C stops it at its next block.
    let failed = AtomicBool::new(false);
    let stop = || failed.load(Ordering::Relaxed) || cancel.is_cancelled();
    let (outputs, inputs) = std::thread::scope(|scope| -> Result<_> {
        let hashing = scope.spawn(|| artifact::digests(&source_dir, &input_names, &stop));
        let ran = run_passes(&mut plan, &source_dir, stage.path(), device, sink, cancel);
        failed.store(ran.is_err(), Ordering::Relaxed);
        let hashed = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let ran = ran?;
        sink(Event::Phase("finish"));
        Ok((ran, hashed?.ok_or(Error::Cancelled)?))
    })?;
    let (mut pass_outputs, unsharded_dir) = outputs;
    cancel.check()?;
    artifact::copy_side_files(&source_dir, stage.path(), &side_files)?;
    artifact::write_serving_properties(&plan, stage.path())?;
    let mut files: Vec<String> = pass_outputs
        .last()
        .map(|o| o.files.clone())
        .unwrap_or_default();
    files.extend(side_files.iter().cloned());
    files.push("serving.properties".into());
    files.sort();
    files.dedup();
    let evaluation = evaluate(
        &plan,
        samples.as_ref(),
        sample_problem,
        &source_dir,
        &unsharded_dir,
        sink,
        cancel,
    )?;
    // Intermediate checkpoints live in hidden directories of the stage; never touch
    // anything else (the unsharded checkpoint of a shard-only job is the source).
    for intermediate in intermediates(stage.path())? {
        std::fs::remove_dir_all(&intermediate).at(&intermediate)?;
    }
    cancel.check()?;
    // Hashing the outputs (CPU) and flushing them to disk (I/O wait) overlap.
    let (outputs, synced) = rayon::join(
        || artifact::digests(stage.path(), &files, &|| cancel.is_cancelled()),
        || stage.sync(),
    );
    synced?;
    let outputs = outputs?.ok_or(Error::Cancelled)?;
    fill_rank_digests(&mut pass_outputs, &outputs);
    let skipped_records = samples.and_then(|s| s.skipped);
    let manifest = manifest(
        spec,
        &plan,
        &pass_outputs,
        evaluation,
        skipped_records,
        inputs,
        outputs,
    );
    let path = stage.path().join("manifest.json");
    std::fs::write(&path, manifest.to_json_pretty() + "\n").at(&path)?;
    cancel.check()?;
    let output = stage.commit()?;
    Ok(JobOutcome {
        output,
        manifest,
        passes: pass_outputs
            .into_iter()
            .map(|o| (o.record.name.clone(), o.summary))
            .collect(),
    })
}

/// Runs the passes in the job's order. Every pass but the last writes into a hidden
/// directory of the stage that the next one reads. Returns the outputs and the directory of
/// the last unsharded checkpoint (what the quality evaluation runs).
fn run_passes(
    plan: &mut JobPlan,
    source_dir: &Path,
    stage: &Path,
    device: &Device,
    sink: Sink,
    cancel: &Cancel,
) -> Result<(Vec<PassOutput>, PathBuf)> {
    let order: Vec<&'static str> = plan.options.passes.iter().map(PassOptions::name).collect();
    let mut ctx = PassContext {
        device,
        sink,
        cancel,
    };
    let mut input = source_dir.to_path_buf();
    let mut outputs = Vec::new();
    let mut unsharded = source_dir.to_path_buf();
    for (i, name) in order.iter().enumerate() {
        let last = i + 1 == order.len();
        let out = if last {
            stage.to_path_buf()
        } else {
            let dir = stage.join(format!(".pass-{i}-{name}"));
            std::fs::create_dir(&dir).at(&dir)?;
            dir
        };
        let pass: &mut dyn Pass = match *name {
            "quantize" => plan.quantize.as_mut().expect("planned"),
            "speculative" => plan.speculative.as_mut().expect("planned"),
            "compile" => plan.compile.as_mut().expect("planned"),
            _ => plan.shard.as_mut().expect("planned"),
        };
        outputs.push(pass.run(&input, &out, &mut ctx)?);
        // Sharded and compiled checkpoints are not what the runtime evaluates.
        if *name != "shard" && *name != "compile" {
            unsharded = out.clone();
        }
        input = out;
    }
    Ok((outputs, unsharded))
}

/// The hidden `.pass-*` directories of the stage.
fn intermediates(stage: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(stage)
        .at(stage)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pass-"))
        .map(|e| e.path())
        .collect())
}

/// The quality of the weights: the last unsharded checkpoint against the source. Sharding
/// moves bytes without changing them, so with sharding the weights measured are exactly
/// those the ranks hold (the runtime's tensor-parallel tests hold the ranks' logits to the
/// unsharded model's).
fn evaluate(
    plan: &JobPlan,
    samples: Option<&SampleWindows>,
    sample_problem: Option<String>,
    source_dir: &Path,
    unsharded_dir: &Path,
    sink: Sink,
    cancel: &Cancel,
) -> Result<EvaluationRecord> {
    let Some(q) = &plan.quantize else {
        if plan.speculative.is_some() {
            return Ok(EvaluationRecord::skipped(
                "no weight was changed (the draft head sits beside the model): the speculative \
                 pass measured the head's acceptance and speed-up (speculative_decoding)",
            ));
        }
        if plan.compile.is_some() {
            return Ok(EvaluationRecord::skipped(
                "the job only compiles: the rank files hold the source weights re-laid out \
                 (tests/python reassembles them), and the engine is built by the serving image",
            ));
        }
        return Ok(EvaluationRecord::skipped(
            "the job only shards: every rank file holds the source's bytes unchanged (per-tensor \
             source ranges and SHA-256 are in the shard pass's report); `optimize eval` runs the \
             sharded artifact",
        ));
    };
    match (samples, sample_problem) {
        (Some(samples), _) if !samples.evaluation.is_empty() => {
            sink(Event::Phase("evaluate"));
            let scheme = q.plan.options.scheme;
            let weight_only = scheme.is_fp8() && !plan.target.fp8_native();
            let mut record = samples::evaluate(
                source_dir,
                unsharded_dir,
                samples,
                scheme,
                weight_only,
                sink,
                cancel,
            )?;
            if plan.shard.is_some() {
                record.data = record.data.map(|d| {
                    format!("{d}; measured on the quantized checkpoint before sharding (the same weights)")
                });
            }
            Ok(record)
        }
        (_, Some(problem)) => Ok(EvaluationRecord::skipped(problem)),
        _ => Ok(EvaluationRecord::skipped(
            "OPTION_EVAL=false: the job asked not to measure quality",
        )),
    }
}

/// Puts each rank file's SHA-256 into the shard pass's report.
fn fill_rank_digests(outputs: &mut [PassOutput], digests: &[FileDigest]) {
    for o in outputs.iter_mut().filter(|o| o.record.name == "shard") {
        let Some(ranks) = o.record.report["ranks"].as_array_mut() else {
            continue;
        };
        for rank in ranks {
            let files: Vec<serde_json::Value> = rank["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .map(|f| {
                    let d = digests.iter().find(|d| d.path == f);
                    serde_json::json!({"path": f, "bytes": d.map(|d| d.bytes), "sha256": d.map(|d| d.sha256.clone())})
                })
                .collect();
            rank["files"] = files.into();
        }
    }
}

/// Sample windows when the job needs them, or why they could not be made (the quality
/// evaluation is then skipped with that reason; static FP8 fails with it).
fn prepare_samples(plan: &JobPlan) -> Result<(Option<SampleWindows>, Option<String>)> {
    let opts = &plan.options.common.samples;
    let calibrate = plan
        .quantize
        .as_ref()
        .is_some_and(|q| q.plan.options.needs_calibration());
    if plan.quantize.is_none() || (opts.eval_windows == 0 && !calibrate) {
        return Ok((None, None));
    }
    let config = &plan.source.config;
    if config.family == temper_core::config::Family::Unknown {
        let reason = format!(
            "the model runtime runs {} models, not `{}`",
            temper_core::config::Family::SUPPORTED,
            config.model_type
        );
        return skip_or_fail(calibrate, reason);
    }
    let tokenizer = plan.source.dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        let reason = format!(
            "{} has no tokenizer.json, so no sample text could be tokenized",
            plan.source.dir.display()
        );
        return skip_or_fail(calibrate, reason);
    }
    let tokenizer = match temper_text::tokenizer::load_tokenizer(&tokenizer) {
        Ok(t) => t,
        Err(e) => return skip_or_fail(calibrate, e.to_string()),
    };
    // A user's data file that cannot be read is an error in the job, not a skipped check.
    samples::sample_windows(&plan.source.dir, &tokenizer, opts, calibrate).map(|s| (Some(s), None))
}

/// Without usable sample text, evaluation is skipped with the reason; calibration, which the
/// artifact cannot be written without, fails the job with it.
fn skip_or_fail(
    calibrate: bool,
    reason: String,
) -> Result<(Option<SampleWindows>, Option<String>)> {
    if calibrate {
        return Err(Error::Plan(format!(
            "{reason}; static FP8 needs it to calibrate input scales (use OPTION_FP8_SCHEME=FP8_DYNAMIC, or add the model's tokenizer.json)"
        )));
    }
    Ok((
        None,
        Some(format!(
            "{reason}, so the artifact's quality was not measured"
        )),
    ))
}

/// A calibration record as manifest JSON.
fn record_json(r: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(r).expect("calibration records serialise")
}

/// GPTQ fits its calibration text when its Hessians (up to the widest input squared) come
/// from fewer rows than about twice that width: say so, with what to do.
fn gptq_data_warning(plan: &JobPlan, passes: &[PassOutput]) -> Option<String> {
    let q = plan.quantize.as_ref()?;
    let calibration = &passes
        .iter()
        .find(|p| p.record.name == "quantize")?
        .record
        .options["calibration"];
    // GPTQ's own record, or the one it left beside AWQ's or SmoothQuant's.
    let rows = match q.plan.options.method {
        Method::Gptq { .. } => calibration["rows_per_hessian"].as_u64()?,
        _ if q.plan.options.gptq_rounding => calibration["gptq"]["rows_per_hessian"].as_u64()?,
        _ => return None,
    } as usize;
    let widest = q
        .plan
        .checkpoint
        .tensors()
        .iter()
        .zip(&q.plan.actions)
        .filter(|(_, a)| matches!(a, crate::passes::quantize::Action::Quantize(_)))
        .filter_map(|(t, _)| t.shape.get(1).copied())
        .max()?;
    (rows < 2 * widest).then(|| {
        format!(
            "GPTQ's Hessians came from {rows} calibration tokens, fewer than twice the widest \
             layer's {widest} inputs: it fits the calibration text more than it generalises (on \
             SmolLM2, 1,536 tokens gave a KL of 0.29 against 0.20 with 8,192); give more text \
             with OPTION_CALIB_DATA and OPTION_CALIB_SIZE, or use AWQ"
        )
    })
}

fn manifest(
    spec: &JobSpec,
    plan: &JobPlan,
    passes: &[PassOutput],
    evaluation: EvaluationRecord,
    skipped_records: Option<String>,
    inputs: Vec<FileDigest>,
    outputs: Vec<FileDigest>,
) -> Manifest {
    let instance = plan.target.instance;
    let mut warnings: Vec<String> = passes
        .iter()
        .filter(|p| p.record.name == "quantize")
        .flat_map(|p| p.record.report["tensors"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["zero_groups"].as_u64().unwrap_or(0) > 0)
        .map(|t| {
            format!(
                "{}: {} scale group(s) are all zeros; they are stored with scale 1.0 and dequantize to exactly 0",
                t["name"].as_str().unwrap_or_default(), t["zero_groups"]
            )
        })
        .collect();
    if plan.fit.fits.is_none() {
        warnings.push(plan.fit.explanation.clone());
    }
    if let Some(reason) = evaluation.reason.as_ref().filter(|_| !evaluation.measured) {
        warnings.push(format!("quality not measured: {reason}"));
    }
    if let Some(m) = passes
        .iter()
        .find(|p| p.record.name == "speculative")
        .map(|p| &p.record.report["measurement"]["results"][0])
    {
        let speedup = m["speedup"].as_f64().unwrap_or(0.0);
        if speedup < 1.0 {
            warnings.push(format!(
                "speculative decoding with this head measured {speedup:.2}x plain decoding on \
                 this host (acceptance length {:.2}): it would slow serving down here; train \
                 longer or on more (regenerated) data, or serve without speculative_config",
                m["acceptance_length"].as_f64().unwrap_or(0.0)
            ));
        }
        let identical = &m["identical_outputs"];
        let prompts = passes
            .iter()
            .find(|p| p.record.name == "speculative")
            .map(|p| p.record.report["measurement"]["prompts"].clone());
        if prompts.as_ref() != Some(identical) {
            warnings.push(format!(
                "speculative greedy output differed from plain greedy output on some held-out \
                 prompts ({identical} of {} identical): near-tied logits computed in another \
                 order can flip",
                prompts.unwrap_or_default()
            ));
        }
    }
    if let Some(skipped) = &skipped_records {
        warnings.push(format!("sample data: {skipped}"));
    }
    if let Some(w) = gptq_data_warning(plan, passes) {
        warnings.push(w);
    }
    let mut notes = plan.target.notes.clone();
    if let Some(q) = &plan.quantize {
        notes.extend(q.plan.notes.iter().cloned());
        if plan.shard.is_some() {
            notes.push(
                "vLLM 0.8.4 (the LMI 15 image) cannot load compressed-tensors checkpoints with \
                 load_format=sharded_state (it processes weights before reading the rank files, \
                 and its state filter fails on the transposed quantized weights); the rank files \
                 are in the pre-processing layout newer loaders copy before processing, which no \
                 vLLM has been seen loading here"
                    .into(),
            );
        }
    }
    if plan.speculative.is_some() && plan.shard.is_some() {
        notes.push(
            "the EAGLE head in speculative/ is stored whole (not per rank): vLLM loads a draft \
             model with the target's load format, so with load_format=sharded_state it may look \
             for rank files of the head too; not checked here (no vLLM on this host)"
                .into(),
        );
    }
    let mut records: Vec<_> = passes.iter().map(|p| p.record.clone()).collect();
    for r in &mut records {
        // Each pass's options as the job gave them (its OverrideEnvironment over the job's).
        let technique = match r.name.as_str() {
            "quantize" => temper_core::spec::Technique::Quantization,
            "speculative" => temper_core::spec::Technique::SpeculativeDecoding,
            "compile" => temper_core::spec::Technique::Compilation,
            _ => temper_core::spec::Technique::Sharding,
        };
        if let Some(o) = spec.find(technique) {
            r.options["environment"] =
                serde_json::to_value(spec.options_for(o)).expect("map serialises");
        }
    }
    if plan
        .compile
        .as_ref()
        .is_some_and(|c| c.engine == crate::passes::compile::Engine::TensorRtLlm)
    {
        notes.push(
            "the TensorRT-LLM checkpoint follows TensorRT-LLM's source (0.19-1.0 era, for the 0.21 of \
             LMI 0.33); no trtllm-build ran on it here (no GPU): the image builds the engine when it \
             loads the directory"
                .into(),
        );
    }
    let flavour = ImageFlavour::for_target(instance, plan.compile.is_some());
    Manifest {
        schema_version: SCHEMA_VERSION,
        tool: "temper".into(),
        tool_version: temper_core::TOOL_VERSION.into(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        job_name: spec.name.clone(),
        source: spec.source.to_string(),
        inputs,
        target: TargetRecord {
            instance_type: instance.name.into(),
            accelerator: instance.accelerator.name().into(),
            accelerator_count: instance.devices,
            memory_per_device_gib: instance.memory_gib,
            compute: instance.accelerator.compute_label(),
            notes,
            fit: plan.fit.clone(),
        },
        recommended_image: recommended_image(flavour, DEFAULT_REGION),
        alternative_images: Vec::new(),
        sharding: passes
            .iter()
            .find(|p| p.record.name == "shard")
            .map(|p| p.record.report.clone()),
        speculative_decoding: passes
            .iter()
            .find(|p| p.record.name == "speculative")
            .map(|p| p.record.report.clone()),
        passes: records,
        evaluation: serde_json::to_value(&evaluation).expect("evaluation serialises"),
        outputs,
        warnings,
    }
}
