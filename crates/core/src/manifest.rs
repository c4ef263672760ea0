//! `manifest.json`: what an artifact is, how it was made, and what it cost.
//!
//! Versioned (`schema_version`) so consumers can rely on its shape; each pass records
//! its options and a report of its own (kept as JSON here so passes stay independent).

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// A file with its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDigest {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One applied pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PassRecord {
    pub name: String,
    /// The options the pass settled on, after defaults.
    pub options: serde_json::Value,
    pub report: serde_json::Value,
}

/// The deployment target and what the artifact needs from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetRecord {
    pub instance_type: String,
    pub accelerator: String,
    pub accelerator_count: u32,
    /// `None` where the catalog row is unverified.
    pub memory_per_device_gib: Option<f64>,
    pub compute: String,
    /// How the target runs this artifact's formats (e.g. FP8 weight-only on A100).
    pub notes: Vec<String>,
    pub fit: FitRecord,
}

/// Whether the optimized model fits the target's memory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FitRecord {
    /// `None` where the target's memory is not known (unverified catalog rows).
    pub fits: Option<bool>,
    pub tensor_parallel_degree: u32,
    pub weight_bytes: u64,
    pub weight_bytes_per_device: u64,
    pub device_bytes: Option<u64>,
    pub explanation: String,
}

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema_version: u32,
    pub tool: String,
    pub tool_version: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub job_name: String,
    pub source: String,
    pub inputs: Vec<FileDigest>,
    pub target: TargetRecord,
    pub recommended_image: String,
    /// Other images that can serve the artifact (the project's own serving image).
    pub alternative_images: Vec<String>,
    pub passes: Vec<PassRecord>,
    /// For tensor-parallel artifacts: the degree, each rank's files with SHA-256, and per
    /// source tensor the rank, target name, split dimension and range (the shard pass's
    /// report). Loaders check rank files against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<serde_json::Value>,
    /// For artifacts with an EAGLE draft head (`speculative/`): the data it was trained on,
    /// the training run, its draft vocabulary, and the acceptance and speed-up measured with
    /// the artifact's own model on conversations training never saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative_decoding: Option<serde_json::Value>,
    /// What the optimization cost in quality, measured by running the artifact and its source
    /// on held-out text: `{"measured": true, perplexity, KL, top-1 ...}` or
    /// `{"measured": false, "reason": ...}`.
    #[serde(default)]
    pub evaluation: serde_json::Value,
    pub outputs: Vec<FileDigest>,
    pub warnings: Vec<String>,
}

impl Manifest {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }
}
