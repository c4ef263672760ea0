//! Running a whole job from its [`JobSpec`]: plan, quantize into a staged directory,
//! write the side files and the manifest, then rename into place. Any error or a
//! cancellation drops the staging directory, so the output either appears complete or
//! not at all.

use crate::artifact;
use crate::options::QuantizeOptions;
use crate::plan::QuantizePlan;
use crate::progress::{Cancel, Event, Sink};
use crate::quantize_pass::{run_quantize, QuantizeReport};
use crate::samples::{self, CalibrationRecord, EvaluationRecord, SampleWindows};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use temper_catalog::{recommended_image, ImageFlavour, Instance, DEFAULT_REGION};
use temper_core::checkpoint::Checkpoint;
use temper_core::manifest::{Manifest, PassRecord, TargetRecord, SCHEMA_VERSION};
use temper_core::spec::{JobSpec, Technique};
use temper_core::staging::StagedDir;
use temper_core::writer::ShardedWriter;
use temper_kernels::Isa;

/// A finished job.
#[derive(Debug)]
pub struct JobOutcome {
    pub output: PathBuf,
    pub manifest: Manifest,
    pub report: QuantizeReport,
}

impl JobOutcome {
    /// The job's summary as `optimize --json` prints it and the job API's worker
    /// reports it: what was written, how, how well, and for which image.
    pub fn summary(&self, spec: &JobSpec) -> serde_json::Value {
        let r = &self.report;
        let m = &self.manifest;
        serde_json::json!({
            "status": "completed",
            "job_name": spec.name,
            "output": self.output,
            "instance_type": spec.instance_type,
            "scheme": r.scheme,
            "format": r.format,
            "isa": r.isa,
            "tensors_quantized": r.tensors_quantized,
            "tensors_copied": r.tensors_copied,
            "input_bytes": r.input_bytes,
            "output_bytes": r.output_bytes,
            "quantize_seconds": r.seconds,
            "mean_relative_rms_error": r.mean_relative_rms_error,
            "worst_relative_rms_error": r.worst_relative_rms_error,
            "worst_tensor": r.worst_tensor,
            "fit": m.target.fit,
            "notes": m.target.notes,
            "recommended_image": m.recommended_image,
            "warnings": m.warnings,
            "evaluation": m.evaluation,
        })
    }
}

/// Checks the spec and builds the plan, without writing anything.
pub fn plan_job(spec: &JobSpec) -> Result<QuantizePlan> {
    let quantization = match spec.optimizations.as_slice() {
        [one] if one.technique == Technique::Quantization => one,
        [] => return Err(Error::Plan("the job has no optimization to apply".into())),
        others => {
            let names: Vec<String> = others
                .iter()
                .map(|o| format!("{:?}", o.technique))
                .collect();
            return Err(Error::Unsupported(format!(
                "this version runs one quantization per job; the job asks for [{}] (compilation, sharding \
                 and speculative decoding come in later versions)",
                names.join(", ")
            )));
        }
    };
    let instance = Instance::lookup(&spec.instance_type)?;
    let options = QuantizeOptions::from_env(&spec.options_for(quantization))?;
    let source = spec.source.local_path()?;
    let output = spec.output.local_path()?;
    if let (Ok(s), Ok(o)) = (source.canonicalize(), absolute(output)) {
        if o == s || o.starts_with(&s) || s.starts_with(&o) {
            return Err(Error::Plan(format!(
                "the output {} and the source model {} overlap (one contains the other); writing or \
                 replacing the output would destroy the source: write the artifact somewhere else",
                output.display(),
                source.display()
            )));
        }
    }
    let checkpoint = Checkpoint::open(source)?;
    QuantizePlan::new(checkpoint, options, instance)
}

fn absolute(path: &std::path::Path) -> std::io::Result<PathBuf> {
    match path.canonicalize() {
        Ok(p) => Ok(p),
        Err(_) => Ok(std::path::absolute(path)?),
    }
}

/// Runs the job to completion.
pub fn run_job(spec: &JobSpec, isa: Isa, sink: Sink, cancel: &Cancel) -> Result<JobOutcome> {
    sink(Event::Phase("plan"));
    let mut plan = plan_job(spec)?;
    let output = spec.output.local_path()?;
    let (samples, sample_problem) = prepare_samples(&plan)?;
    let calibration = if plan.options.scheme.needs_calibration() {
        let samples = samples.as_ref().ok_or_else(|| {
            Error::Plan(format!(
                "static FP8 needs calibration: {}",
                sample_problem.clone().unwrap_or_default()
            ))
        })?;
        sink(Event::Phase("calibrate"));
        let (absmax, record) = samples::calibrate(&plan.checkpoint.dir, samples, sink, cancel)?;
        plan.input_absmax = absmax;
        cancel.check()?;
        Some(record)
    } else {
        None
    };
    let stage = StagedDir::create(output, spec.overwrite)?;
    let side_files = artifact::side_file_names(&plan.checkpoint.dir)?;
    let input_names = artifact::input_names(&plan, &side_files);
    // Hashing the inputs reads every source byte again: do it on its own thread while
    // the quantize pass runs, so it costs little wall time.
    // A failure or Ctrl-C stops the hashing at its next block instead of waiting for it.
    let failed = AtomicBool::new(false);
    let stop = || failed.load(Ordering::Relaxed) || cancel.is_cancelled();
    let (report, inputs, mut files) = std::thread::scope(|scope| -> Result<_> {
        let hashing = scope.spawn(|| artifact::digests(&plan.checkpoint.dir, &input_names, &stop));
        let quantized = (|| -> Result<_> {
            let writer =
                ShardedWriter::create(stage.path(), &plan.outputs, plan.options.max_shard_bytes)?;
            sink(Event::Phase("quantize"));
            let report = run_quantize(&plan, &writer, isa, sink, cancel)?;
            Ok((report, writer.finish()?))
        })();
        failed.store(quantized.is_err(), Ordering::Relaxed);
        let hashed = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (report, files) = quantized?;
        sink(Event::Phase("finish"));
        let inputs = hashed?.ok_or(Error::Cancelled)?;
        Ok((report, inputs, files))
    })?;
    cancel.check()?;
    artifact::copy_side_files(&plan.checkpoint.dir, stage.path(), &side_files)?;
    artifact::write_config(&plan, stage.path())?;
    artifact::write_serving_properties(&plan, stage.path())?;
    files.extend(side_files.iter().cloned());
    files.push("config.json".into());
    files.push("serving.properties".into());
    files.sort();
    let evaluation = match (&samples, sample_problem) {
        (Some(samples), _) if !samples.evaluation.is_empty() => {
            sink(Event::Phase("evaluate"));
            let weight_only =
                plan.options.scheme.is_fp8() && !plan.instance.accelerator.native_fp8();
            samples::evaluate(
                &plan.checkpoint.dir,
                stage.path(),
                samples,
                plan.options.scheme,
                weight_only,
                sink,
                cancel,
            )?
        }
        (_, Some(problem)) => EvaluationRecord::skipped(problem),
        _ => EvaluationRecord::skipped("OPTION_EVAL=false: the job asked not to measure quality"),
    };
    cancel.check()?;
    // Hashing the outputs (CPU) and flushing them to disk (I/O wait) overlap.
    let (outputs, synced) = rayon::join(
        || artifact::digests(stage.path(), &files, &|| cancel.is_cancelled()),
        || stage.sync(),
    );
    synced?;
    let outputs = outputs?.ok_or(Error::Cancelled)?;
    let quality = Quality {
        calibration,
        evaluation,
        skipped_records: samples.and_then(|s| s.skipped),
    };
    let manifest = manifest(spec, &plan, &report, &quality, inputs, outputs);
    let path = stage.path().join("manifest.json");
    std::fs::write(&path, manifest.to_json_pretty() + "\n")
        .map_err(|e| temper_core::Error::io(&path, e))?;
    cancel.check()?;
    let output = stage.commit()?;
    Ok(JobOutcome {
        output,
        manifest,
        report,
    })
}

/// Sample windows when the job needs them, or why they could not be made (the quality
/// evaluation is then skipped with that reason; static FP8 fails with it).
fn prepare_samples(plan: &QuantizePlan) -> Result<(Option<SampleWindows>, Option<String>)> {
    let opts = &plan.options.samples;
    let calibrate = plan.options.scheme.needs_calibration();
    if opts.eval_windows == 0 && !calibrate {
        return Ok((None, None));
    }
    let config = &plan.checkpoint.config;
    if config.family == temper_core::config::Family::Unknown {
        let reason = format!(
            "the model runtime runs {} models, not `{}`",
            temper_core::config::Family::SUPPORTED,
            config.model_type
        );
        return skip_or_fail(calibrate, reason);
    }
    let tokenizer = plan.checkpoint.dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        let reason = format!(
            "{} has no tokenizer.json, so no sample text could be tokenized",
            plan.checkpoint.dir.display()
        );
        return skip_or_fail(calibrate, reason);
    }
    let tokenizer = match temper_text::tokenizer::load_tokenizer(&tokenizer) {
        Ok(t) => t,
        Err(e) => return skip_or_fail(calibrate, e.to_string()),
    };
    // A user's data file that cannot be read is an error in the job, not a skipped check.
    samples::sample_windows(&plan.checkpoint.dir, &tokenizer, opts, calibrate)
        .map(|s| (Some(s), None))
}

/// Without usable sample text, evaluation is skipped with the reason; calibration, which the
/// artifact cannot be written without, fails the job with it.
fn skip_or_fail(
    calibrate: bool,
    reason: String,
) -> Result<(Option<SampleWindows>, Option<String>)> {
    if calibrate {
        return Err(Error::Plan(format!(
            "{reason}; static FP8 needs it to calibrate input scales (use --scheme FP8_DYNAMIC, or add the model's tokenizer.json)"
        )));
    }
    Ok((
        None,
        Some(format!(
            "{reason}, so the artifact's quality was not measured"
        )),
    ))
}

/// Calibration and evaluation results for the manifest.
struct Quality {
    calibration: Option<CalibrationRecord>,
    evaluation: EvaluationRecord,
    skipped_records: Option<String>,
}

fn manifest(
    spec: &JobSpec,
    plan: &QuantizePlan,
    report: &QuantizeReport,
    quality: &Quality,
    inputs: Vec<temper_core::manifest::FileDigest>,
    outputs: Vec<temper_core::manifest::FileDigest>,
) -> Manifest {
    let instance = plan.instance;
    let mut warnings: Vec<String> = report
        .tensors
        .iter()
        .filter(|t| t.zero_groups > 0)
        .map(|t| {
            format!(
                "{}: {} scale group(s) are all zeros; they are stored with scale 1.0 and dequantize to exactly 0",
                t.name, t.zero_groups
            )
        })
        .collect();
    if plan.fit.fits.is_none() {
        warnings.push(plan.fit.explanation.clone());
    }
    if let Some(reason) = quality
        .evaluation
        .reason
        .as_ref()
        .filter(|_| !quality.evaluation.measured)
    {
        warnings.push(format!("quality not measured: {reason}"));
    }
    if let Some(skipped) = &quality.skipped_records {
        warnings.push(format!("sample data: {skipped}"));
    }
    let flavour = ImageFlavour::for_target(instance, false);
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
            notes: plan.notes.clone(),
            fit: plan.fit.clone(),
        },
        recommended_image: recommended_image(flavour, DEFAULT_REGION),
        alternative_images: Vec::new(),
        passes: vec![PassRecord {
            name: "quantize".into(),
            options: serde_json::json!({
                "scheme": plan.options.scheme,
                "ignore": plan.ignore,
                "requested_ignore": plan.options.ignore,
                "scale_dtype": plan.scale_dtype.to_string(),
                "max_shard_bytes": plan.options.max_shard_bytes,
                "environment": spec.options_for(&spec.optimizations[0]),
                "calibration": quality.calibration,
            }),
            report: serde_json::to_value(report).expect("report serialises"),
        }],
        evaluation: serde_json::to_value(&quality.evaluation).expect("evaluation serialises"),
        outputs,
        warnings,
    }
}
