//! The speculative-decoding pass (`ModelSpeculativeDecodingConfig`, EAGLE): trains an EAGLE-3
//! draft head for the checkpoint it reads (the model the job outputs, so acceptance is that of
//! what will be served), writes the checkpoint unchanged plus the head in `speculative/`, and
//! measures what the head buys on held-out conversations.

mod measure;

pub use measure::{Measurement, ShapeResult};

use super::{Pass, PassContext, PassOutput};
use crate::progress::Event;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use temper_core::manifest::PassRecord;
use temper_core::IoContext;
use temper_eagle::export::{head_config, write_head};
use temper_eagle::regenerate::regenerate;
use temper_eagle::train::{train, Run, TrainOptions};
use temper_options::SpeculativeOptions;
use temper_runtime::speculative::DraftHead;
use temper_runtime::{LoadOptions, Model};
use temper_text::chat::ChatTemplate;
use temper_text::data::{chat_samples, training_files, ChatSampleOptions, SourceKind};

/// Where serving engines find the head inside the artifact.
pub const HEAD_DIR: &str = "speculative";
/// Where the LMI containers mount the model.
pub const CONTAINER_MODEL_DIR: &str = "/opt/ml/model";
/// Tokens generated per held-out prompt when measuring.
const MEASURE_TOKENS: usize = 64;

pub struct SpeculativePass {
    pub options: SpeculativeOptions,
    /// The job's source model: its tokenizer and chat template (intermediate checkpoints hold
    /// weights and config only).
    pub source_dir: PathBuf,
    /// Run FP8 weights with f32 activations, as the target GPU will.
    pub weight_only: bool,
    /// Training checkpoints, kept across a killed or stopped job so a rerun resumes.
    pub checkpoint_dir: PathBuf,
    /// Stop training (keeping the best head) by then, leaving time to export and measure.
    pub deadline: Option<Instant>,
    /// The chain length chosen by measurement (serving.properties' num_speculative_tokens),
    /// set once the pass has run.
    pub chosen_depth: Option<usize>,
}

impl SpeculativePass {
    /// The training data's files, or a clear error before any work.
    pub fn data_files(&self) -> Result<Vec<PathBuf>> {
        let source = self.options.source.as_ref().ok_or_else(|| {
            Error::Plan("the speculative-decoding pass has no training data source".into())
        })?;
        let path = source.path.as_ref().ok_or_else(|| {
            Error::Plan(format!(
                "TrainingDataSource.S3Uri {} is not a local path; the job API's worker downloads \
                 s3:// data before the job runs, the local `optimize` command needs a path",
                source.uri
            ))
        })?;
        if source.default && !path.exists() {
            return Err(Error::Plan(format!(
                "no training data was given (TrainingDataSource, or --training-data) and the \
                 default ShareGPT V3 file {} is missing: run scripts/fetch-assets.sh, set \
                 TEMPER_EAGLE_DEFAULT_DATA to its path, or give your own conversations",
                path.display()
            )));
        }
        let kind = SourceKind::parse(&source.data_type).ok_or_else(|| {
            Error::Plan(format!(
                "TrainingDataSource.S3DataType `{}`: expected S3Prefix or ManifestFile",
                source.data_type
            ))
        })?;
        Ok(training_files(path, kind)?)
    }
}

impl Pass for SpeculativePass {
    fn name(&self) -> &'static str {
        "speculative"
    }

    fn run(&mut self, input: &Path, out: &Path, ctx: &mut PassContext) -> Result<PassOutput> {
        let started = Instant::now();
        (ctx.sink)(Event::Phase("speculative"));
        let mut files = copy_checkpoint(input, out)?;
        let model = Model::load(
            input,
            &LoadOptions {
                weight_only: self.weight_only,
                ..Default::default()
            },
        )?;
        let tokenizer_path = self.source_dir.join("tokenizer.json");
        let tokenizer = temper_text::tokenizer::load_tokenizer(&tokenizer_path)?;
        let template = ChatTemplate::from_model_dir(&self.source_dir)?;
        let data_files = self.data_files()?;
        let o = &self.options;
        let samples = chat_samples(
            &data_files,
            template.as_ref(),
            &tokenizer,
            &ChatSampleOptions {
                max_len: o.max_len,
                max_samples: Some(o.max_samples),
            },
        )?;
        ctx.cancel.check()?;
        let eos =
            temper_text::config::GenerationDefaults::from_model_dir(&self.source_dir, &tokenizer)
                .map(|d| d.eos_token_ids)
                .unwrap_or_default();
        let (training, regeneration) = if o.regenerate {
            (ctx.sink)(Event::Phase("regenerate answers"));
            let sink = &mut ctx.sink;
            let (samples, record) = regenerate(
                &model,
                &tokenizer,
                &samples.samples,
                &eos,
                o.max_len,
                o.regenerate_tokens,
                0.0,
                o.seed,
                &mut |done, total| {
                    sink(Event::Progress {
                        unit: "conversations",
                        done,
                        total,
                    })
                },
            )?;
            (samples, Some(record))
        } else {
            (samples.samples.clone(), None)
        };
        ctx.cancel.check()?;
        let train_opts = TrainOptions {
            steps: o.steps,
            batch: o.batch,
            learning_rate: o.learning_rate,
            warmup: (o.steps / 20).max(1),
            ttt_steps: o.ttt_steps,
            draft_vocab_size: o.draft_vocab_size.min(model.params().vocab_size),
            seed: o.seed,
            held_out: o.held_out,
            eval_every: (o.steps / 6).max(1),
            max_grad_norm: 0.5,
        };
        let cancel = ctx.cancel;
        let sink = &mut ctx.sink;
        let (head, vocab, report) = train(
            &model,
            &training,
            &train_opts,
            &Run {
                work_dir: &self.checkpoint_dir,
                deadline: self.deadline,
                stop: &|| cancel.is_cancelled(),
            },
            &mut |p| {
                sink(Event::Progress {
                    unit: "steps",
                    done: p.step,
                    total: p.steps,
                });
            },
        )?;
        ctx.cancel.check()?;
        let raw: serde_json::Value = {
            let path = input.join("config.json");
            let text = std::fs::read_to_string(&path).at(&path)?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Plan(format!("{}: {e}", path.display())))?
        };
        let head_dir = out.join(HEAD_DIR);
        write_head(
            &head_dir,
            &head_config(model.params(), &raw, &vocab),
            &head,
            &vocab,
        )?;
        files.push(format!("{HEAD_DIR}/config.json"));
        files.push(format!("{HEAD_DIR}/model.safetensors"));

        (ctx.sink)(Event::Phase("measure speculative decoding"));
        let loaded = DraftHead::load(&head_dir, model.params())?;
        let prompts: Vec<Vec<u32>> = report
            .held_out
            .iter()
            .filter_map(|&i| {
                let s = &training[i];
                // The conversation up to its first assistant reply: what a user would send.
                let first = s.loss_mask.iter().position(|&m| m)?;
                (first >= 2).then(|| s.tokens[..first].to_vec())
            })
            .take(self.options.eval_prompts)
            .collect();
        let measurement = measure::measure(
            &model,
            &loaded,
            &tokenizer,
            &prompts,
            &eos,
            &report.best.per_depth,
            MEASURE_TOKENS,
        )?;
        self.chosen_depth = Some(measurement.chosen.depth);
        let chosen = &measurement.results[0];
        let summary = serde_json::json!({
            "head": HEAD_DIR,
            "training_samples": report.train_samples,
            "steps": report.steps_done,
            "stopped_early": report.stopped_early,
            "held_out_acceptance_length": report.best.acceptance_length,
            "acceptance_length": chosen.acceptance_length,
            "speedup": chosen.speedup,
            "tree": chosen.tree,
            "identical_outputs": format!("{}/{}", chosen.identical_outputs, measurement.prompts),
            "seconds": started.elapsed().as_secs_f64(),
        });
        let report_json = serde_json::json!({
            "method": "eagle3",
            "head": HEAD_DIR,
            "data": {
                "source": self.options.source,
                "files": data_files,
                "conversations_read": samples.conversations_read,
                "samples": samples.samples.len(),
                "tokens": samples.tokens(),
                "target_tokens": samples.masked_tokens(),
                "dropped_too_long": samples.dropped_too_long,
                "dropped_no_assistant": samples.dropped_no_assistant,
                "truncated_conversations": samples.truncated_conversations,
                "max_len": self.options.max_len,
                "regenerated": regeneration,
                "training_samples": training.len(),
            },
            "training": report,
            "draft_vocab": {"size": vocab.size(), "coverage": vocab.coverage},
            "measurement": measurement,
            "serving": {
                "num_speculative_tokens": measurement.chosen.depth,
                "speculative_config": speculative_config(measurement.chosen.depth),
            },
            "seconds": started.elapsed().as_secs_f64(),
        });
        // The checkpoint served its purpose once the head is written.
        let _ = std::fs::remove_dir_all(&self.checkpoint_dir);
        Ok(PassOutput {
            files,
            record: PassRecord {
                name: "speculative".into(),
                options: serde_json::to_value(&self.options).expect("options serialise"),
                report: report_json,
            },
            summary,
        })
    }
}

/// The `option.speculative_config` LMI passes to vLLM (`--speculative-config`).
pub fn speculative_config(num_tokens: usize) -> serde_json::Value {
    serde_json::json!({
        "method": "eagle3",
        "model": format!("{CONTAINER_MODEL_DIR}/{HEAD_DIR}"),
        "num_speculative_tokens": num_tokens,
    })
}

/// Copies the checkpoint (config.json, safetensors and their index) into `out`. Copies, not
/// hard links: a linked file would share its bytes with the job's source, and any later write
/// into the output (the job copies the tokenizer and other side files over) would change the
/// source too. Side files are left to the job.
fn copy_checkpoint(input: &Path, out: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input).at(input)? {
        let entry = entry.at(input)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json";
        if !entry.file_type().at(input)?.is_file() || !(weights || name == "config.json") {
            continue;
        }
        let dest = out.join(&name);
        std::fs::copy(entry.path(), &dest).at(&dest)?;
        files.push(name);
    }
    files.sort();
    Ok(files)
}
