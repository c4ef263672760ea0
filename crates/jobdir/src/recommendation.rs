//! What an inference-recommendations job's worker runs ([`RecommendationSpec`], built and
//! checked by the server at Create) and what it reports ([`RecommendationReport`]).
//!
//! The worker writes the steps it has finished to `steps.json` as it goes (so
//! ListInferenceRecommendationsJobSteps shows a job in progress), and the whole report as
//! the `summary` of its `result.json`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use temper_api::recommendation::{
    InferenceRecommendation, InferenceRecommendationsJobStep, RecommendationJobStoppingConditions,
    RecommendationJobType, TrafficPattern,
};
use temper_core::spec::{JobSpec, Location, Optimization, Stopping, Technique};

/// The swept variables an `Advanced` job prepares the model with before serving it.
pub const OPTION_QUANTIZE: &str = "OPTION_QUANTIZE";
pub const OPTION_TENSOR_PARALLEL_DEGREE: &str = "OPTION_TENSOR_PARALLEL_DEGREE";
/// The swept variables temper-serve reads itself.
pub const OPTION_MAX_ROLLING_BATCH_SIZE: &str = "OPTION_MAX_ROLLING_BATCH_SIZE";
pub const OPTION_MAX_INPUT_LEN: &str = "OPTION_MAX_INPUT_LEN";

/// One endpoint configuration of an `Advanced` job: an instance type and one value of each
/// swept environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestConfiguration {
    pub instance_type: String,
    /// `OPTION_*` name -> value, as swept (empty when nothing is swept).
    pub environment: BTreeMap<String, String>,
}

impl TestConfiguration {
    /// The optimization job that prepares the model for this configuration (quantized with
    /// `OPTION_QUANTIZE`, sharded to `OPTION_TENSOR_PARALLEL_DEGREE`), or `None` when the
    /// model is served as it is (neither set, `none`, or a degree of 1).
    pub fn preparation(&self, name: &str, source: Location, output: Location) -> Option<JobSpec> {
        let mut optimizations = Vec::new();
        if let Some(q) = self
            .environment
            .get(OPTION_QUANTIZE)
            .filter(|q| !q.eq_ignore_ascii_case("none"))
        {
            let env = BTreeMap::from([(OPTION_QUANTIZE.to_string(), q.clone())]);
            optimizations.push(Optimization::new(Technique::Quantization, env));
        }
        if let Some(d) = self
            .environment
            .get(OPTION_TENSOR_PARALLEL_DEGREE)
            .filter(|d| d.trim() != "1")
        {
            let env = BTreeMap::from([(OPTION_TENSOR_PARALLEL_DEGREE.to_string(), d.clone())]);
            optimizations.push(Optimization::new(Technique::Sharding, env));
        }
        if optimizations.is_empty() {
            return None;
        }
        Some(JobSpec {
            name: name.to_string(),
            source,
            output,
            instance_type: self.instance_type.clone(),
            optimizations,
            environment: BTreeMap::new(),
            stopping: Stopping::default(),
            kms_key_id: None,
            role_arn: None,
            tags: vec![],
            overwrite: true,
        })
    }

    /// What the prepared model is keyed by: configurations that differ only in what
    /// temper-serve reads share one prepared model.
    pub fn preparation_key(&self) -> String {
        let get = |k: &str| self.environment.get(k).map(String::as_str).unwrap_or("");
        format!(
            "{}-{}-{}",
            self.instance_type,
            get(OPTION_QUANTIZE),
            get(OPTION_TENSOR_PARALLEL_DEGREE)
        )
    }
}

/// An inference-recommendations job, as its worker runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationSpec {
    pub name: String,
    pub job_type: RecommendationJobType,
    /// `InputConfig.ModelName`, as given.
    pub model_name: String,
    /// Where the model is: the output of the optimization job of that name, or the location
    /// the server registered under it.
    pub model: Location,
    /// `Default`: the instance types to recommend among.
    pub candidates: Vec<String>,
    /// `Advanced`: the configurations to load-test, in order, at most `MaxNumberOfTests`.
    pub configurations: Vec<TestConfiguration>,
    /// Configurations of the sweep left out by `MaxNumberOfTests`.
    pub skipped_configurations: usize,
    pub max_parallel_tests: u32,
    pub traffic: Option<TrafficPattern>,
    pub stopping: Option<RecommendationJobStoppingConditions>,
    /// `SamplePayloadUrl`: a tar (optionally gzipped) of request bodies.
    pub sample_payload: Option<Location>,
    /// The first of `SupportedContentTypes` (default `application/json`).
    pub content_type: String,
    /// USD per hour of the instance types whose price the server knows.
    pub prices: BTreeMap<String, f64>,
}

/// What the worker found: the recommendations (best first), every step, and why the first
/// recommendation is the best. A job that did not complete keeps its steps only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecommendationReport {
    pub recommendations: Vec<InferenceRecommendation>,
    pub steps: Vec<InferenceRecommendationsJobStep>,
    pub explanation: String,
}

/// What a worker runs: an optimization job or an inference-recommendations job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    Optimize(JobSpec),
    Recommend(RecommendationSpec),
}

pub fn recommendation_spec_path(dir: &Path) -> PathBuf {
    dir.join("recommendation.json")
}

pub fn steps_path(dir: &Path) -> PathBuf {
    dir.join("steps.json")
}

/// Writes the work for the worker: an optimization job's spec to `spec.json`, a
/// recommendation job's to `recommendation.json` (removing the other, so that the worker
/// never reads a previous job's).
pub fn write_work(dir: &Path, work: &Work) -> std::io::Result<()> {
    let remove = |path: PathBuf| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    match work {
        Work::Optimize(spec) => {
            remove(recommendation_spec_path(dir))?;
            crate::files::write_spec(dir, spec)
        }
        Work::Recommend(spec) => {
            remove(crate::files::spec_path(dir))?;
            let json = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
            crate::files::write_atomic(&recommendation_spec_path(dir), &json)
        }
    }
}

/// Reads the work [`write_work`] wrote.
pub fn read_work(dir: &Path) -> std::io::Result<Work> {
    match std::fs::read(recommendation_spec_path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Work::Recommend)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::files::read_spec(dir).map(Work::Optimize)
        }
        Err(e) => Err(e),
    }
}

pub fn write_steps(dir: &Path, steps: &[InferenceRecommendationsJobStep]) -> std::io::Result<()> {
    let json = serde_json::to_vec(steps).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&steps_path(dir), &json)
}

/// The steps a worker has finished so far (none if it has not written any).
pub fn read_steps(dir: &Path) -> Vec<InferenceRecommendationsJobStep> {
    std::fs::read(steps_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_round_trips_and_replaces_the_other_kind() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RecommendationSpec {
            name: "rec".into(),
            job_type: RecommendationJobType::Default,
            model_name: "m".into(),
            model: Location::Local("/models/m".into()),
            candidates: vec!["ml.g6.xlarge".into()],
            configurations: vec![],
            skipped_configurations: 0,
            max_parallel_tests: 1,
            traffic: None,
            stopping: None,
            sample_payload: None,
            content_type: "application/json".into(),
            prices: BTreeMap::from([("ml.g6.xlarge".to_string(), 1.0)]),
        };
        write_work(dir.path(), &Work::Recommend(spec.clone())).unwrap();
        assert_eq!(
            read_work(dir.path()).unwrap(),
            Work::Recommend(spec.clone())
        );
        assert!(read_steps(dir.path()).is_empty());
        // A job that did not complete is stored with its steps only, and reads back so.
        let partial: RecommendationReport =
            serde_json::from_value(serde_json::json!({"steps": []})).unwrap();
        assert_eq!(partial, RecommendationReport::default());
        // Nothing to read is an error, not a default job.
        let empty = tempfile::tempdir().unwrap();
        assert!(read_work(empty.path()).is_err());
    }
}
