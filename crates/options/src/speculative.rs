//! The speculative-decoding pass's options (`ModelSpeculativeDecodingConfig`, technique
//! `EAGLE`): training an EAGLE-3 draft head for the model the job outputs.
//!
//! Defaults are sized for a CPU host: on a 2-core machine they train a SmolLM2-135M head in
//! well under an hour. GPU-scale recipes use far more data and steps (EAGLE.md section 3.5).

use crate::env::Env;
use crate::error::{invalid, Result};
use serde::Serialize;
use std::path::PathBuf;

pub const OPTION_EAGLE_STEPS: &str = "OPTION_EAGLE_STEPS";
pub const OPTION_EAGLE_BATCH_SIZE: &str = "OPTION_EAGLE_BATCH_SIZE";
pub const OPTION_EAGLE_LEARNING_RATE: &str = "OPTION_EAGLE_LEARNING_RATE";
pub const OPTION_EAGLE_TTT_STEPS: &str = "OPTION_EAGLE_TTT_STEPS";
pub const OPTION_EAGLE_DRAFT_VOCAB_SIZE: &str = "OPTION_EAGLE_DRAFT_VOCAB_SIZE";
pub const OPTION_EAGLE_MAX_SAMPLES: &str = "OPTION_EAGLE_MAX_SAMPLES";
pub const OPTION_EAGLE_HELD_OUT: &str = "OPTION_EAGLE_HELD_OUT";
pub const OPTION_EAGLE_SEED: &str = "OPTION_EAGLE_SEED";
pub const OPTION_EAGLE_CHECKPOINT_DIR: &str = "OPTION_EAGLE_CHECKPOINT_DIR";
pub const OPTION_EAGLE_EVAL_PROMPTS: &str = "OPTION_EAGLE_EVAL_PROMPTS";
pub const OPTION_EAGLE_REGENERATE: &str = "OPTION_EAGLE_REGENERATE";
pub const OPTION_EAGLE_REGENERATE_TOKENS: &str = "OPTION_EAGLE_REGENERATE_TOKENS";
/// Where the default training data is looked for when the job gives none.
pub const DEFAULT_DATA_ENV: &str = "TEMPER_EAGLE_DEFAULT_DATA";
/// The ShareGPT V3 file `scripts/fetch-assets.sh` fetches.
pub const DEFAULT_DATA: &str = ".cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json";

/// The options this pass reads (`OPTION_MAX_MODEL_LEN` is the job's and also read here).
pub const KEYS: &[&str] = &[
    OPTION_EAGLE_STEPS,
    OPTION_EAGLE_BATCH_SIZE,
    OPTION_EAGLE_LEARNING_RATE,
    OPTION_EAGLE_TTT_STEPS,
    OPTION_EAGLE_DRAFT_VOCAB_SIZE,
    OPTION_EAGLE_MAX_SAMPLES,
    OPTION_EAGLE_HELD_OUT,
    OPTION_EAGLE_SEED,
    OPTION_EAGLE_CHECKPOINT_DIR,
    OPTION_EAGLE_EVAL_PROMPTS,
    OPTION_EAGLE_REGENERATE,
    OPTION_EAGLE_REGENERATE_TOKENS,
];

/// Where the training data is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingSource {
    /// The local file, directory or manifest; `None` for s3:// data not yet downloaded.
    pub path: Option<PathBuf>,
    /// As the job gave it.
    pub uri: String,
    /// `S3Prefix` (a file, a directory or a path prefix) or `ManifestFile`.
    pub data_type: String,
    /// True when the job gave no data and the documented default is used.
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeculativeOptions {
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub ttt_steps: usize,
    pub draft_vocab_size: usize,
    /// Conversations read from the data, at most.
    pub max_samples: usize,
    /// Samples kept out of training to measure acceptance and speed on.
    pub held_out: usize,
    /// Tokens per training sample, at most (`OPTION_MAX_MODEL_LEN`); longer ones are dropped.
    pub max_len: usize,
    pub seed: u64,
    /// Answer each conversation's first user turn with the target itself and train on that
    /// (on-policy data), instead of the data's own answers.
    pub regenerate: bool,
    /// Longest regenerated answer, in tokens.
    pub regenerate_tokens: usize,
    /// Held-out conversations plain and speculative decoding are measured on (at most the
    /// held-out samples).
    pub eval_prompts: usize,
    /// Where training checkpoints go (a rerun of the same job resumes from them).
    pub checkpoint_dir: Option<PathBuf>,
    /// `None` until the job's training data is known (the job spec's TrainingDataSource).
    pub source: Option<TrainingSource>,
}

impl SpeculativeOptions {
    pub fn parse(env: &Env) -> Result<Self> {
        let learning_rate = match env.get(OPTION_EAGLE_LEARNING_RATE) {
            None => 1e-3,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0 && *x < 1.0)
                .ok_or_else(|| {
                    invalid(
                        OPTION_EAGLE_LEARNING_RATE,
                        v,
                        "a number between 0 and 1, e.g. 1e-3",
                    )
                })?,
        };
        let ttt_steps = env.count(OPTION_EAGLE_TTT_STEPS, 4, 1)?;
        if ttt_steps > 16 {
            return Err(invalid(
                OPTION_EAGLE_TTT_STEPS,
                &ttt_steps.to_string(),
                "at most 16 (EAGLE-3 trains with 7; 3-5 suit CPUs)",
            ));
        }
        let draft_vocab_size = env.count(OPTION_EAGLE_DRAFT_VOCAB_SIZE, 8192, 16)?;
        let max_len = env.count(crate::job::OPTION_MAX_MODEL_LEN, 512, 16)?;
        let seed = match env.get(OPTION_EAGLE_SEED) {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| invalid(OPTION_EAGLE_SEED, v, "a whole number"))?,
        };
        Ok(SpeculativeOptions {
            // About 1,200 samples of up to 512 tokens: under an hour with the evaluations on 2 cores
            // (about 180 training tokens/s, BENCHMARKS.md).
            steps: env.count(OPTION_EAGLE_STEPS, 300, 1)?,
            batch: env.count(OPTION_EAGLE_BATCH_SIZE, 4, 1)?,
            learning_rate,
            ttt_steps,
            draft_vocab_size,
            max_samples: env.count(OPTION_EAGLE_MAX_SAMPLES, 4000, 2)?,
            held_out: env.count(OPTION_EAGLE_HELD_OUT, 16, 1)?,
            max_len,
            seed,
            eval_prompts: env.count(OPTION_EAGLE_EVAL_PROMPTS, 8, 1)?,
            regenerate: env.bool(OPTION_EAGLE_REGENERATE, false)?,
            regenerate_tokens: env.count(OPTION_EAGLE_REGENERATE_TOKENS, 192, 1)?,
            checkpoint_dir: env
                .get(OPTION_EAGLE_CHECKPOINT_DIR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            source: None,
        })
    }
}

/// The documented default training data: `$TEMPER_EAGLE_DEFAULT_DATA`, else
/// `.cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json` under the current directory.
pub fn default_source() -> TrainingSource {
    let path = std::env::var_os(DEFAULT_DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    TrainingSource {
        uri: path.display().to_string(),
        path: Some(path),
        data_type: "S3Prefix".into(),
        default: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<SpeculativeOptions> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SpeculativeOptions::parse(&Env::new(&map))
    }

    #[test]
    fn defaults_and_values() {
        let d = parse(&[]).unwrap();
        assert_eq!(
            (d.steps, d.batch, d.ttt_steps, d.draft_vocab_size),
            (300, 4, 4, 8192)
        );
        assert_eq!(d.max_len, 512);
        let o = parse(&[
            (OPTION_EAGLE_STEPS, "50"),
            (OPTION_EAGLE_LEARNING_RATE, "5e-4"),
            ("OPTION_MAX_MODEL_LEN", "1024"),
        ])
        .unwrap();
        assert_eq!((o.steps, o.learning_rate, o.max_len), (50, 5e-4, 1024));
    }

    #[test]
    fn out_of_range_values_name_the_option() {
        for (k, v) in [
            (OPTION_EAGLE_STEPS, "0"),
            (OPTION_EAGLE_LEARNING_RATE, "2"),
            (OPTION_EAGLE_LEARNING_RATE, "fast"),
            (OPTION_EAGLE_TTT_STEPS, "40"),
            (OPTION_EAGLE_DRAFT_VOCAB_SIZE, "3"),
            (OPTION_EAGLE_SEED, "-1"),
        ] {
            let e = parse(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
    }
}
