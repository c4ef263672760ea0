//! The job specification: what to optimize, for which target, with which techniques.
//!
//! One type for every entry point: the `optimize` CLI builds it from flags or from a
//! CreateOptimizationJob request document, the job API builds it from the wire request,
//! and the worker receives it as JSON. Technique options stay as the LMI `OPTION_*`
//! environment map the API carries; each pass parses its own options from that map
//! once, when the job is planned.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a model, a data set or an output lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A local path (from a plain path or a `file://` URI).
    Local(PathBuf),
    /// An object-store prefix (`s3://bucket/key`).
    S3 { bucket: String, key: String },
}

impl Location {
    /// Parses `s3://bucket/key`, `file:///abs/path` or a plain path.
    pub fn parse(uri: &str) -> Result<Self> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Spec(format!(
                    "`{uri}` has no bucket name after s3://"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(Error::Spec(format!("`{uri}` has no path after file://")));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if uri.contains("://") {
            return Err(Error::Spec(format!(
                "`{uri}`: only s3://, file:// and plain paths are supported"
            )));
        }
        if uri.is_empty() {
            return Err(Error::Spec("an empty path was given as a location".into()));
        }
        Ok(Location::Local(PathBuf::from(uri)))
    }

    /// The local path, or an error naming what this build can't reach yet.
    pub fn local_path(&self) -> Result<&std::path::Path> {
        match self {
            Location::Local(p) => Ok(p),
            Location::S3 { bucket, key } => Err(Error::Spec(format!(
                "s3://{bucket}/{key}: object-store locations are served by the job API (temper-server); the local \
                 `optimize` command needs a local path or file:// URI"
            ))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// The optimization technique of one `OptimizationConfig` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    Quantization,
    Compilation,
    Sharding,
    SpeculativeDecoding,
}

/// Training data for speculative decoding (`ModelSpeculativeDecodingTrainingDataSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingData {
    pub location: Location,
    /// `S3Prefix` or `ManifestFile`.
    pub data_type: String,
}

/// One optimization to apply, with its LMI-style options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Optimization {
    pub technique: Technique,
    /// The container image the request named, if any (recorded, not run).
    #[serde(default)]
    pub image: Option<String>,
    /// `OverrideEnvironment`: `OPTION_*` variables as strings, parsed by the pass.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Speculative decoding only: `EAGLE` (the API's one technique value).
    #[serde(default)]
    pub speculative_technique: Option<String>,
    #[serde(default)]
    pub training_data: Option<TrainingData>,
}

impl Optimization {
    pub fn new(technique: Technique, env: BTreeMap<String, String>) -> Self {
        Optimization {
            technique,
            image: None,
            env,
            speculative_technique: None,
            training_data: None,
        }
    }
}

/// Limits from `StoppingCondition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    pub max_runtime_secs: Option<u64>,
    pub max_pending_secs: Option<u64>,
}

/// A whole optimization job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `OptimizationJobName`.
    pub name: String,
    pub source: Location,
    pub output: Location,
    /// `DeploymentInstanceType`, e.g. `ml.g6.12xlarge`.
    pub instance_type: String,
    pub optimizations: Vec<Optimization>,
    /// `OptimizationEnvironment`: applies to every optimization; an optimization's own
    /// `OverrideEnvironment` wins on conflicts.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub stopping: Stopping,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Replace an existing output (CLI `--overwrite`).
    #[serde(default)]
    pub overwrite: bool,
}

impl JobSpec {
    /// The options one optimization sees: the job-wide environment overlaid with the
    /// optimization's own overrides.
    pub fn options_for(&self, optimization: &Optimization) -> BTreeMap<String, String> {
        let mut merged = self.environment.clone();
        merged.extend(optimization.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }

    /// The first optimization of a technique, if the job has one.
    pub fn find(&self, technique: Technique) -> Option<&Optimization> {
        self.optimizations.iter().find(|o| o.technique == technique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("s3://b/k/x/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                key: "k/x/".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/m").unwrap(),
            Location::Local("/tmp/m".into())
        );
        assert_eq!(
            Location::parse("rel/m").unwrap(),
            Location::Local("rel/m".into())
        );
        assert!(Location::parse("https://x/y").is_err());
        assert!(Location::parse("s3:///k").is_err());
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn override_environment_wins() {
        let mut spec = JobSpec {
            name: "j".into(),
            source: Location::parse("a").unwrap(),
            output: Location::parse("b").unwrap(),
            instance_type: "ml.g6.xlarge".into(),
            optimizations: vec![Optimization::new(
                Technique::Quantization,
                [("OPTION_QUANTIZE".to_string(), "fp8".to_string())].into(),
            )],
            environment: BTreeMap::new(),
            stopping: Stopping::default(),
            kms_key_id: None,
            role_arn: None,
            tags: vec![],
            overwrite: false,
        };
        spec.environment
            .insert("OPTION_QUANTIZE".into(), "int8".into());
        spec.environment.insert("OPTION_X".into(), "1".into());
        let opts = spec.options_for(&spec.optimizations[0]);
        assert_eq!(opts["OPTION_QUANTIZE"], "fp8");
        assert_eq!(opts["OPTION_X"], "1");
    }
}
