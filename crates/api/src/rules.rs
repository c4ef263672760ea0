//! SageMaker's rules for a CreateOptimizationJob request that the shapes cannot
//! express: which techniques combine, and what Neuron instances accept
//! (shared/design/FORMATS.md, "LMI container conventions"). Each broken rule is
//! reported like a shape violation: the member path, the value, and the rule.
//!
//! Rules SageMaker states and this module enforces:
//! - sharding combines with no other technique ("quantize first, then shard" in a
//!   second job) — except that temper lifts the rule for quantization: quantization and
//!   sharding in one job run quantize, then shard, and write exactly the pre-sharded
//!   checkpoint the two jobs SageMaker asks for would (vLLM `load_format=sharded_state`),
//!   and for speculative decoding: its draft head is trained on the unsharded checkpoint
//!   and travels with the rank files;
//! - compilation and speculative decoding do not combine;
//! - Neuron instances (`ml.inf*`, `ml.trn*`) take compilation only.
//!
//! A rule SageMaker states that temper lifts: SmoothQuant (`OPTION_QUANTIZE=smoothquant`)
//! only together with compilation, because SageMaker runs it in TensorRT-LLM's build; temper
//! writes the SmoothQuant-scaled W8A8 checkpoint vLLM runs, so it needs no compilation.
//!
//! Rules of this crate, because a job could not mean anything else: at least one
//! optimization, each technique at most once, tag keys unique (the model's own
//! documentation says "Tag keys must be unique per resource").

use crate::types::{CreateOptimizationJobRequest, OptimizationConfig};
use crate::validate::{to_result, Violation};
use crate::ApiError;
use serde_json::Value;
use std::collections::BTreeMap;

const CONFIGS: &str = "optimizationConfigs";
const SHARDING: &str = "ModelShardingConfig";
const COMPILATION: &str = "ModelCompilationConfig";
const SPECULATIVE: &str = "ModelSpeculativeDecodingConfig";
const QUANTIZATION: &str = "ModelQuantizationConfig";

/// Checks every rule; all broken ones are reported in one `ValidationException`.
pub fn check(req: &CreateOptimizationJobRequest) -> Result<(), ApiError> {
    to_result(violations(req))
}

pub(crate) fn violations(req: &CreateOptimizationJobRequest) -> Vec<Violation> {
    let names: Vec<&str> = req
        .optimization_configs
        .iter()
        .map(OptimizationConfig::member_name)
        .collect();
    let listed = Value::from(names.clone());
    let mut out = Vec::new();
    let mut broken = |rule: String| out.push(Violation::new(CONFIGS, Some(&listed), rule));
    if names.is_empty() {
        broken("Member must hold at least one optimization configuration".into());
    }
    for (name, entries) in duplicates(&names) {
        broken(format!(
            "Each technique may be given once per job; {name} is given in entries {}",
            entries.join(" and ")
        ));
    }
    let has = |name: &str| names.contains(&name);
    if has(SHARDING)
        && names
            .iter()
            .any(|n| *n != SHARDING && *n != QUANTIZATION && *n != SPECULATIVE)
    {
        broken(format!(
            "{SHARDING} combines only with {QUANTIZATION} and {SPECULATIVE} in one job (temper \
             quantizes, trains the draft head, then shards); run the other techniques first, \
             then shard their output in a second job"
        ));
    }
    if has(COMPILATION) && has(SPECULATIVE) {
        broken(format!(
            "{COMPILATION} and {SPECULATIVE} do not combine in one job"
        ));
    }
    let instance = req.deployment_instance_type.as_str();
    if is_neuron(instance) {
        let others: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != COMPILATION)
            .collect();
        if !others.is_empty() {
            broken(format!(
                "Neuron instances ({instance}) take {COMPILATION} only, not [{}]",
                others.join(", ")
            ));
        }
    }
    out.extend(duplicate_tag_keys(req));
    out
}

/// AWS Inferentia and Trainium instances, served by the Neuron SDK: compiled
/// artifacts are all they run.
fn is_neuron(instance_type: &str) -> bool {
    instance_type.starts_with("ml.inf") || instance_type.starts_with("ml.trn")
}

/// Techniques named more than once, with their 1-based entry numbers.
fn duplicates<'a>(names: &[&'a str]) -> BTreeMap<&'a str, Vec<String>> {
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        seen.entry(name).or_default().push((i + 1).to_string());
    }
    seen.retain(|_, entries| entries.len() > 1);
    seen
}

fn duplicate_tag_keys(req: &CreateOptimizationJobRequest) -> Vec<Violation> {
    let Some(tags) = &req.tags else {
        return Vec::new();
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for tag in tags {
        *counts.entry(tag.key.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(key, n)| {
            Violation::new(
                "tags",
                Some(&Value::from(key)),
                format!("Tag keys must be unique per resource; this key is given {n} times"),
            )
        })
        .collect()
}
