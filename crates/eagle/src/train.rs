//! The training loop: online target features, the training-time test, AdamW with gradient
//! clipping, held-out acceptance, checkpoints to resume from, and a time bound.
//!
//! Deterministic for a seed: the sample order, the initial weights and every update depend on
//! nothing else, and a run resumed from a checkpoint continues exactly where it stopped (the
//! optimiser's moments are saved with the weights).

use crate::adamw::{AdamW, AdamWParams};
use crate::draft::{DraftModel, DraftShape};
use crate::error::{EagleError, Result};
use crate::features::sample_features;
use crate::vocab::DraftVocab;
use candle_core::{Device, Tensor};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use temper_runtime::speculative::cost::expected_tokens;
use temper_runtime::speculative::default_aux_layers;
use temper_runtime::Model;
use temper_text::data::ChatSample;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    /// Optimiser updates.
    pub steps: usize,
    /// Samples per update.
    pub batch: usize,
    pub learning_rate: f64,
    /// Updates of linear warm-up; then cosine decay to a tenth.
    pub warmup: usize,
    /// Training-time-test steps (K).
    pub ttt_steps: usize,
    pub draft_vocab_size: usize,
    pub seed: u64,
    /// Samples kept out of training to measure acceptance on.
    pub held_out: usize,
    /// Updates between held-out evaluations (and checkpoints).
    pub eval_every: usize,
    /// Gradient clipping by global norm.
    pub max_grad_norm: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            steps: 300,
            batch: 4,
            learning_rate: 1e-3,
            warmup: 30,
            ttt_steps: 4,
            draft_vocab_size: 8192,
            seed: 0,
            held_out: 16,
            eval_every: 100,
            max_grad_norm: 0.5,
        }
    }
}

/// Chain acceptance measured with the training-time test on held-out samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evaluation {
    pub step: usize,
    pub loss: f64,
    /// Acceptance at depth d given every earlier draft was accepted.
    pub per_depth: Vec<f64>,
    /// `1 + sum_j prod_{d<=j} per_depth[d]`: tokens per target pass a chain of K would give.
    pub acceptance_length: f64,
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub tokens_per_second: f64,
    pub eta_seconds: f64,
    pub evaluation: Option<Evaluation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub steps_done: usize,
    pub resumed_at_step: Option<usize>,
    /// Why training ended before `steps`, when it did.
    pub stopped_early: Option<String>,
    pub train_samples: usize,
    pub held_out_samples: usize,
    /// Indices (into the samples given) of the held-out samples.
    pub held_out: Vec<usize>,
    pub tokens_trained: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub final_loss: f64,
    pub initial: Evaluation,
    pub best: Evaluation,
    pub draft_vocab_size: usize,
    pub draft_vocab_coverage: f64,
    pub aux_layers: Vec<usize>,
}

/// Where checkpoints go, and when to stop.
pub struct Run<'a> {
    pub work_dir: &'a Path,
    /// Stop (keeping the best head) once this much time has passed.
    pub deadline: Option<Instant>,
    /// Asked before every update: `true` stops training as the deadline does (a cancelled
    /// job; its checkpoint lets a rerun resume).
    pub stop: &'a (dyn Fn() -> bool + Sync),
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const CHECKPOINT_META: &str = "checkpoint.json";

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    options: TrainOptions,
    step: usize,
    tokens_trained: usize,
    vocab: Vec<u32>,
    best: Evaluation,
    initial: Evaluation,
}

/// Trains a head for `model` on `samples`. Returns the head with the best held-out acceptance.
pub fn train(
    model: &Model,
    samples: &[ChatSample],
    opts: &TrainOptions,
    run: &Run,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(DraftModel, DraftVocab, TrainReport)> {
    check_options(opts, samples.len())?;
    let started = Instant::now();
    let params = model.params();
    let aux = default_aux_layers(params.num_layers).to_vec();
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
    for i in (1..order.len()).rev() {
        let j = (rng.random::<u64>() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let (held, train_idx) = order.split_at(opts.held_out);
    let mut counts = vec![0u64; params.vocab_size];
    for &i in train_idx {
        let s = &samples[i];
        for (t, &m) in s.tokens.iter().zip(&s.loss_mask) {
            if m {
                counts[*t as usize] += 1;
            }
        }
    }
    let vocab = DraftVocab::from_counts(&counts, opts.draft_vocab_size)?;
    let shape = DraftShape::for_target(params, vocab.size());

    std::fs::create_dir_all(run.work_dir).map_err(|e| EagleError::io(run.work_dir, e))?;
    let (mut head, mut optim, start, mut tokens_trained, initial, mut best, resumed) =
        match load_checkpoint(run.work_dir, opts, &vocab, &shape)? {
            Some((head, optim, meta)) => {
                let at = meta.step;
                (
                    head,
                    optim,
                    meta.step,
                    meta.tokens_trained,
                    meta.initial,
                    meta.best,
                    Some(at),
                )
            }
            None => {
                let head =
                    DraftModel::init(shape.clone(), lm_head_rows(model, &vocab)?, opts.seed)?;
                let optim = AdamW::new(AdamWParams::default(), &head.vars)?;
                let initial = evaluate(model, &head, &vocab, &aux, samples, held, opts, 0)?;
                (head, optim, 0, 0, initial.clone(), initial, None)
            }
        };
    let mut best_vars = snapshot(&head)?;
    // Held-out acceptance now; the head is kept when it is the best so far; then a checkpoint.
    let measure = |head: &DraftModel,
                   optim: &AdamW,
                   step: usize,
                   tokens_trained: usize,
                   best: &mut Evaluation,
                   best_vars: &mut BTreeMap<String, Tensor>|
     -> Result<Evaluation> {
        let e = evaluate(model, head, &vocab, &aux, samples, held, opts, step)?;
        if e.acceptance_length > best.acceptance_length {
            *best = e.clone();
            *best_vars = snapshot(head)?;
        }
        save_checkpoint(
            run.work_dir,
            opts,
            head,
            optim,
            &vocab,
            step,
            tokens_trained,
            best,
            &initial,
        )?;
        Ok(e)
    };
    let mut last_loss = f64::NAN;
    let mut stopped_early = None;
    let loop_started = Instant::now();
    let mut loop_tokens = 0usize;
    let mut step = start;
    while step < opts.steps {
        if run.deadline.is_some_and(|d| Instant::now() >= d) {
            stopped_early = Some(format!(
                "the time limit (MaxRuntimeInSeconds) was reached after {step} of {} updates; \
                 the best head so far was kept",
                opts.steps
            ));
            break;
        }
        if (run.stop)() {
            stopped_early = Some(format!("stopped after {step} of {} updates", opts.steps));
            break;
        }
        let mut total: Option<Tensor> = None;
        let mut batch_tokens = 0;
        for b in 0..opts.batch {
            let s = &samples[train_idx[(step * opts.batch + b) % train_idx.len()]];
            let f = sample_features(model, &aux, &vocab, &s.tokens)?;
            let losses = head.ttt(&f, &s.tokens, &s.loss_mask, opts.ttt_steps)?;
            batch_tokens += s.tokens.len();
            total = Some(match total {
                None => losses.total,
                Some(t) => (t + losses.total)?,
            });
        }
        let loss = (total.expect("batch >= 1") / opts.batch as f64)?;
        last_loss = f64::from(loss.to_scalar::<f32>()?);
        if !last_loss.is_finite() {
            return Err(EagleError::Input(format!(
                "the loss became {last_loss} at update {step}; lower OPTION_EAGLE_LEARNING_RATE ({})",
                opts.learning_rate
            )));
        }
        let mut grads = loss.backward()?;
        AdamW::clip_grad_norm(&mut grads, &head.vars, opts.max_grad_norm)?;
        optim.update(&head.vars, &grads, learning_rate(opts, step))?;
        step += 1;
        tokens_trained += batch_tokens;
        loop_tokens += batch_tokens;
        let elapsed = loop_started.elapsed().as_secs_f64();
        let per_step = elapsed / (step - start) as f64;
        let mut evaluation = None;
        if step % opts.eval_every == 0 || step == opts.steps {
            let e = measure(
                &head,
                &optim,
                step,
                tokens_trained,
                &mut best,
                &mut best_vars,
            )?;
            evaluation = Some(e);
        }
        progress(&Progress {
            step,
            steps: opts.steps,
            loss: last_loss,
            tokens_per_second: loop_tokens as f64 / elapsed,
            eta_seconds: per_step * (opts.steps - step) as f64,
            evaluation,
        });
    }
    if stopped_early.is_some() && step > start {
        // The last updates since an evaluation count too: measure them before choosing.
        measure(
            &head,
            &optim,
            step,
            tokens_trained,
            &mut best,
            &mut best_vars,
        )?;
    }
    head = DraftModel::from_tensors(shape, &best_vars)?;
    let seconds = started.elapsed().as_secs_f64();
    let report = TrainReport {
        steps_done: step,
        resumed_at_step: resumed,
        stopped_early,
        train_samples: train_idx.len(),
        held_out_samples: held.len(),
        held_out: held.to_vec(),
        tokens_trained,
        seconds,
        tokens_per_second: loop_tokens as f64 / loop_started.elapsed().as_secs_f64().max(1e-9),
        final_loss: last_loss,
        initial,
        best,
        draft_vocab_size: vocab.size(),
        draft_vocab_coverage: vocab.coverage,
        aux_layers: aux,
    };
    Ok((head, vocab, report))
}

fn check_options(opts: &TrainOptions, samples: usize) -> Result<()> {
    let bad = |option: &str, value: String, why: &str| {
        Err(EagleError::Input(format!("{option}={value}: {why}")))
    };
    if opts.steps == 0 {
        return bad(
            "OPTION_EAGLE_STEPS",
            "0".into(),
            "train for at least one update",
        );
    }
    if opts.batch == 0 {
        return bad("OPTION_EAGLE_BATCH_SIZE", "0".into(), "use at least 1");
    }
    if !(opts.learning_rate > 0.0 && opts.learning_rate < 1.0) {
        return bad(
            "OPTION_EAGLE_LEARNING_RATE",
            opts.learning_rate.to_string(),
            "must be in (0, 1); 1e-3 suits small heads",
        );
    }
    if !(1..=16).contains(&opts.ttt_steps) {
        return bad(
            "OPTION_EAGLE_TTT_STEPS",
            opts.ttt_steps.to_string(),
            "must be between 1 and 16 (EAGLE-3 uses 7; 3-5 on CPUs)",
        );
    }
    if samples < opts.held_out + 1 {
        return Err(EagleError::Input(format!(
            "{samples} usable training samples: at least {} are needed ({} held out to measure \
             acceptance, and one to train on); give more data",
            opts.held_out + 1,
            opts.held_out
        )));
    }
    Ok(())
}

fn learning_rate(opts: &TrainOptions, step: usize) -> f64 {
    if step < opts.warmup {
        return opts.learning_rate * (step + 1) as f64 / opts.warmup as f64;
    }
    let span = (opts.steps - opts.warmup).max(1) as f64;
    let progress = (step - opts.warmup) as f64 / span;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    opts.learning_rate * (0.1 + 0.9 * cosine)
}

/// The target LM head's rows of the draft vocabulary (`[Vd, H]`), the head's initial LM head.
fn lm_head_rows(model: &Model, vocab: &DraftVocab) -> Result<Tensor> {
    let h = model.params().hidden_size;
    let lm = &model.head().lm_head().parts;
    let mut rows = vec![0f32; vocab.size() * h];
    for (i, &id) in vocab.used.iter().enumerate() {
        // The LM head may be split across parts (never for Llama-family heads).
        let mut r = id as usize;
        for part in lm {
            if r < part.rows() {
                part.matrix().row(r, &mut rows[i * h..(i + 1) * h]);
                break;
            }
            r -= part.rows();
        }
    }
    Ok(Tensor::from_vec(rows, (vocab.size(), h), &Device::Cpu)?)
}

#[allow(clippy::too_many_arguments)]
fn evaluate(
    model: &Model,
    head: &DraftModel,
    vocab: &DraftVocab,
    aux: &[usize],
    samples: &[ChatSample],
    held: &[usize],
    opts: &TrainOptions,
    step: usize,
) -> Result<Evaluation> {
    let k = opts.ttt_steps;
    let (mut accepted, mut counted) = (vec![0usize; k], vec![0usize; k]);
    let mut loss = 0.0;
    for &i in held {
        let s = &samples[i];
        let f = sample_features(model, aux, vocab, &s.tokens)?;
        let l = head.ttt(&f, &s.tokens, &s.loss_mask, k)?;
        loss += f64::from(l.total.to_scalar::<f32>()?);
        for d in 0..k {
            accepted[d] += l.accepted[d];
            counted[d] += l.counted[d];
        }
    }
    // accepted[d] counts chains alive through depth d, out of the positions counted at depth
    // 0; the conditional rate divides by the chains alive one depth earlier.
    let mut per_depth = Vec::with_capacity(k);
    let mut prev = counted.first().copied().unwrap_or(0);
    for &a in &accepted {
        per_depth.push(if prev > 0 {
            a as f64 / prev as f64
        } else {
            0.0
        });
        prev = a;
    }
    let acceptance_length = expected_tokens(per_depth.len(), &per_depth);
    Ok(Evaluation {
        step,
        loss: loss / held.len().max(1) as f64,
        per_depth,
        acceptance_length,
    })
}

fn snapshot(head: &DraftModel) -> Result<BTreeMap<String, Tensor>> {
    head.vars
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &Path,
    opts: &TrainOptions,
    head: &DraftModel,
    optim: &AdamW,
    vocab: &DraftVocab,
    step: usize,
    tokens_trained: usize,
    best: &Evaluation,
    initial: &Evaluation,
) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (n, v) in &head.vars {
        tensors.insert(format!("weight.{n}"), v.as_tensor().clone());
    }
    for (n, (m, v)) in &optim.moments {
        tensors.insert(format!("m.{n}"), m.clone());
        tensors.insert(format!("v.{n}"), v.clone());
    }
    let tmp = dir.join(format!("{CHECKPOINT}.partial"));
    let tensors: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&tensors, &tmp)?;
    let meta = CheckpointMeta {
        options: opts.clone(),
        step,
        tokens_trained,
        vocab: vocab.used.clone(),
        best: best.clone(),
        initial: initial.clone(),
    };
    let meta_tmp = dir.join(format!("{CHECKPOINT_META}.partial"));
    let text = serde_json::to_string(&meta).expect("checkpoint metadata serializes");
    std::fs::write(&meta_tmp, text).map_err(|e| EagleError::io(&meta_tmp, e))?;
    // Weights first, then the metadata that names their step: a crash between the two leaves
    // an older metadata file whose check below refuses the mismatch instead of mixing states.
    std::fs::rename(&tmp, dir.join(CHECKPOINT)).map_err(|e| EagleError::io(dir, e))?;
    std::fs::rename(&meta_tmp, dir.join(CHECKPOINT_META)).map_err(|e| EagleError::io(dir, e))?;
    Ok(())
}

type Resumed = (DraftModel, AdamW, CheckpointMeta);

fn load_checkpoint(
    dir: &Path,
    opts: &TrainOptions,
    vocab: &DraftVocab,
    shape: &DraftShape,
) -> Result<Option<Resumed>> {
    let meta_path: PathBuf = dir.join(CHECKPOINT_META);
    let Ok(text) = std::fs::read_to_string(&meta_path) else {
        return Ok(None);
    };
    let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| EagleError::Checkpoint {
        path: meta_path.clone(),
        what: format!("unreadable ({e}); delete the directory to start over"),
    })?;
    if meta.options != *opts || meta.vocab != vocab.used {
        return Err(EagleError::Checkpoint {
            path: meta_path,
            what: "was written by a run with other options or data; resuming would mix two \
                   runs. Delete the directory to start over, or rerun with the same options"
                .into(),
        });
    }
    let weights_path = dir.join(CHECKPOINT);
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    let pick = |prefix: &str| -> BTreeMap<String, Tensor> {
        tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
            .collect()
    };
    let head = DraftModel::from_tensors(shape.clone(), &pick("weight."))?;
    let mut optim = AdamW::new(AdamWParams::default(), &head.vars)?;
    let (m, v) = (pick("m."), pick("v."));
    for (name, slot) in optim.moments.iter_mut() {
        match (m.get(name), v.get(name)) {
            (Some(m), Some(v)) => *slot = (m.clone(), v.clone()),
            _ => {
                return Err(EagleError::Checkpoint {
                    path: weights_path,
                    what: format!("has no optimiser state for {name}"),
                })
            }
        }
    }
    optim.step = meta.step as u64;
    Ok(Some((head, optim, meta)))
}
