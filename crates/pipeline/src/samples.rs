//! Sample text run through the model runtime: calibration for static FP8 (the largest input of
//! every Linear) and the quality evaluation written into every manifest (perplexity change, KL
//! divergence and top-1 agreement of the artifact against its source), on disjoint windows.

use crate::progress::{Cancel, Event, Sink};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use temper_format::Scheme;
use temper_options::SampleOptions;
use temper_runtime::eval::{compare, Comparison, Side};
use temper_runtime::layerwise::run_layers;
use temper_runtime::{LayerSource, LoadOptions};
use temper_text::data::{Document, Documents, WindowOptions};

/// English prose written for temper (narrative, technical, dialogue, a recipe, code), used
/// when a job names no data: the model was not tuned on it.
pub const BUILT_IN_SAMPLE: &str = include_str!("../data/sample.txt");

/// Token windows for calibration and evaluation, disjoint.
pub struct SampleWindows {
    /// The data file, or `built-in sample`.
    pub source: String,
    pub window_len: usize,
    pub calibration: Vec<Vec<u32>>,
    pub evaluation: Vec<Vec<u32>>,
    /// Records of the data file that could not be used (reported as a warning).
    pub skipped: Option<String>,
}

/// Cuts the windows a job needs from its sample data, tokenized with the model's `tokenizer`
/// (and its chat template, for conversations).
/// Evaluation windows come first in the data and calibration windows after them, so the two
/// never overlap. With the built-in sample, calibration takes what is left when the text runs
/// short; with the user's own data a shortfall is an error.
pub fn sample_windows(
    model_dir: &Path,
    tokenizer: &temper_text::Tokenizer,
    opts: &SampleOptions,
    calibrate: bool,
) -> Result<SampleWindows> {
    let template = temper_text::chat::ChatTemplate::from_model_dir(model_dir)?;
    let (docs, source) = match &opts.data {
        Some(path) => (
            temper_text::data::load_documents(path)?,
            path.display().to_string(),
        ),
        None => (
            Documents {
                path: PathBuf::from("built-in sample"),
                format: temper_text::data::DataFormat::PlainText,
                documents: vec![Document::Text(BUILT_IN_SAMPLE.to_string())],
                skipped: None,
            },
            "built-in sample".to_string(),
        ),
    };
    let wanted = opts.eval_windows
        + if calibrate {
            opts.calibration_windows
        } else {
            0
        };
    let windows = temper_text::data::token_windows(
        tokenizer,
        &docs.documents,
        template.as_ref(),
        &WindowOptions {
            window_len: opts.window_len,
            max_windows: wanted,
        },
    )?;
    let available = windows.len();
    let needed_for_eval = opts.eval_windows;
    let short = if calibrate {
        available < needed_for_eval + 1 || (opts.data.is_some() && available < wanted)
    } else {
        available < needed_for_eval
    };
    if short {
        return Err(Error::Plan(format!(
            "the sample data ({source}) gives {available} windows of {} tokens, and the job needs {} \
             ({} for the quality evaluation{}); give more text with OPTION_CALIB_DATA, or \
             lower OPTION_MAX_MODEL_LEN, OPTION_EVAL_SAMPLES or OPTION_CALIB_SIZE",
            opts.window_len,
            if calibrate { wanted } else { needed_for_eval },
            opts.eval_windows,
            if calibrate {
                format!(", {} for calibration", opts.calibration_windows)
            } else {
                String::new()
            },
        )));
    }
    let mut windows = windows;
    let calibration = windows.split_off(needed_for_eval.min(windows.len()));
    Ok(SampleWindows {
        source,
        window_len: opts.window_len,
        calibration: if calibrate { calibration } else { Vec::new() },
        evaluation: windows,
        skipped: docs.skipped.as_ref().map(|s| s.to_string()),
    })
}

/// What calibration measured, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationRecord {
    pub source: String,
    pub windows: usize,
    pub window_len: usize,
    pub seconds: f64,
}

/// A runtime pass stopped by a cancelled job is the job's cancellation.
fn stopped_or(e: temper_runtime::RuntimeError, cancel: &Cancel) -> Error {
    match e {
        temper_runtime::RuntimeError::Stopped if cancel.is_cancelled() => Error::Cancelled,
        other => other.into(),
    }
}

/// Runs the calibration windows through the source model, one layer at a time (memory near one
/// layer), and returns the largest |input| of every Linear module.
pub fn calibrate(
    model_dir: &Path,
    samples: &SampleWindows,
    sink: Sink,
    cancel: &Cancel,
) -> Result<(BTreeMap<String, f32>, CalibrationRecord)> {
    let started = std::time::Instant::now();
    let source = LayerSource::open(
        model_dir,
        &LoadOptions {
            observe_inputs: true,
            ..Default::default()
        },
    )?;
    let mut absmax = BTreeMap::new();
    // The LM head is never quantized, so calibration stops after the last layer.
    run_layers(
        &source,
        &samples.calibration,
        |_, layer| {
            for p in layer.projections() {
                p.record_observed(&mut absmax);
            }
        },
        |done, total| {
            sink(Event::Progress {
                unit: "layers",
                done,
                total,
            });
            !cancel.is_cancelled()
        },
    )
    .map_err(|e| stopped_or(e, cancel))?;
    let record = CalibrationRecord {
        source: samples.source.clone(),
        windows: samples.calibration.len(),
        window_len: samples.window_len,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((absmax, record))
}

/// The quality evaluation written into the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationRecord {
    pub measured: bool,
    /// Why not, when `measured` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// How activations were treated, matching how the target runs the artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activations: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_format: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

impl EvaluationRecord {
    pub fn skipped(reason: impl Into<String>) -> Self {
        EvaluationRecord {
            measured: false,
            reason: Some(reason.into()),
            data: None,
            activations: None,
            candidate_format: None,
            comparison: None,
        }
    }
}

/// Compares the artifact in `artifact_dir` with the source model on the held-out windows.
/// `weight_only` mirrors targets that run FP8 checkpoints without FP8 activations.
pub fn evaluate(
    source_dir: &Path,
    artifact_dir: &Path,
    samples: &SampleWindows,
    scheme: Scheme,
    weight_only: bool,
    sink: Sink,
    cancel: &Cancel,
) -> Result<EvaluationRecord> {
    let candidate_opts = LoadOptions {
        weight_only,
        ..Default::default()
    };
    let comparison = compare(
        Side {
            dir: source_dir,
            opts: &LoadOptions::default(),
        },
        Side {
            dir: artifact_dir,
            opts: &candidate_opts,
        },
        &samples.evaluation,
        |done, total| {
            sink(Event::Progress {
                unit: "steps",
                done,
                total,
            });
            !cancel.is_cancelled()
        },
    )
    .map_err(|e| stopped_or(e, cancel))?;
    let candidate_format = LayerSource::open(artifact_dir, &candidate_opts)?.format()?;
    let activations = match (scheme, weight_only) {
        (Scheme::W8A16 { .. }, _) => "f32 (weight-only scheme)",
        (Scheme::W4A16 { .. }, _) => "bf16 (W4A16: 16-bit activations, as served)",
        (_, true) => "f32: the target has no native FP8 matmul and runs the checkpoint weight-only",
        (Scheme::W8A8, false) => "int8 per token, as served",
        (Scheme::Fp8Static, false) => "fp8 with the calibrated static input scales, as served",
        (Scheme::Fp8Dynamic, false) => "fp8 per token, as served",
        (Scheme::Fp8Block, false) => "fp8 per token and 128-column group, as served",
    };
    Ok(EvaluationRecord {
        measured: true,
        reason: None,
        data: Some(format!(
            "{}: {} held-out windows of {} tokens",
            samples.source,
            samples.evaluation.len(),
            samples.window_len
        )),
        activations: Some(activations.into()),
        candidate_format: Some(candidate_format),
        comparison: Some(comparison),
    })
}
