//! What a worker agent runs: the instance types given with `--instance-types` (whole
//! families as `ml.g5.*`), else those its GPUs make up, else any (a CPU host runs every
//! job on its CPUs, as `temper-server` does).

use temper_catalog::{Accelerator, Instance, INSTANCES};

/// Why a capacity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("--instance-types {0}: {1}")]
    Unknown(String, String),
    #[error("--instance-types {0}: no instance type of the catalog matches; families are written as ml.g5.*")]
    NoMatch(String),
}

/// The instance types `--instance-types` names (comma-separated or repeated, `ml.g5.*` for
/// a family), checked against the catalog, in catalog order without repeats.
pub fn from_args(args: &[String]) -> Result<Vec<String>, CapacityError> {
    let mut types: Vec<&'static str> = Vec::new();
    for arg in args.iter().flat_map(|a| a.split(',')).map(str::trim) {
        if arg.is_empty() {
            continue;
        }
        let matched: Vec<&'static str> = match arg.strip_suffix('*') {
            Some(prefix) => INSTANCES
                .iter()
                .filter(|i| i.name.starts_with(prefix))
                .map(|i| i.name)
                .collect(),
            None => vec![
                Instance::lookup(arg)
                    .map_err(|e| CapacityError::Unknown(arg.to_string(), e.to_string()))?
                    .name,
            ],
        };
        if matched.is_empty() {
            return Err(CapacityError::NoMatch(arg.to_string()));
        }
        types.extend(matched);
    }
    Ok(INSTANCES
        .iter()
        .map(|i| i.name)
        .filter(|n| types.contains(n))
        .map(String::from)
        .collect())
}

/// The instance types a host with `count` GPUs named `gpu_name` (as `nvidia-smi` names
/// them, e.g. "NVIDIA A10G", "NVIDIA H100 80GB HBM3") can stand in for: the catalog's
/// instances of that accelerator with at most that many devices. `None` for a GPU the
/// catalog does not know.
pub fn from_gpus(gpu_name: &str, count: u32) -> Option<Vec<String>> {
    let accelerator = [
        Accelerator::T4,
        Accelerator::A10G,
        Accelerator::L40S,
        Accelerator::L4,
        Accelerator::A100,
        Accelerator::H100,
        Accelerator::H200,
        Accelerator::B200,
    ]
    .into_iter()
    // Whole words ("A100-SXM4-80GB" is an A100), so an L40S is never taken for an L4.
    .find(|a| {
        gpu_name
            .split_whitespace()
            .filter_map(|word| word.split('-').next())
            .any(|word| Some(word) == a.name().split_whitespace().nth(1))
    })?;
    Some(
        INSTANCES
            .iter()
            .filter(|i| i.accelerator == accelerator && i.devices <= count)
            .map(|i| i.name.to_string())
            .collect(),
    )
}

/// The GPUs `nvidia-smi` lists: their name (of the first) and count. `None` without a
/// driver (no `nvidia-smi`, or it fails) or without GPUs.
pub fn detect_gpus() -> Option<(String, u32)> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some((names.first()?.to_string(), names.len() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_expand_and_unknown_types_are_named() {
        let types = from_args(&["ml.g5.*".into(), "ml.g6.xlarge,ml.g5.xlarge".into()]).unwrap();
        assert!(types.contains(&"ml.g5.48xlarge".to_string()), "{types:?}");
        assert!(types.contains(&"ml.g6.xlarge".to_string()));
        assert_eq!(
            types.iter().filter(|t| *t == "ml.g5.xlarge").count(),
            1,
            "no repeats"
        );
        let err = from_args(&["ml.g5.huge".into()]).unwrap_err().to_string();
        assert!(
            err.contains("ml.g5.huge") && err.contains("ml.g5.xlarge"),
            "{err}"
        );
        let err = from_args(&["ml.z9.*".into()]).unwrap_err().to_string();
        assert!(err.contains("no instance type"), "{err}");
    }

    #[test]
    fn gpus_stand_for_the_instances_they_make_up() {
        let l4 = from_gpus("NVIDIA L4", 1).unwrap();
        assert!(l4.contains(&"ml.g6.xlarge".to_string()), "{l4:?}");
        assert!(!l4.iter().any(|t| t == "ml.g6.12xlarge"), "4 GPUs: {l4:?}");
        assert!(
            !l4.iter().any(|t| t.starts_with("ml.g6e.")),
            "L40S is not L4: {l4:?}"
        );
        let l40s = from_gpus("NVIDIA L40S", 4).unwrap();
        assert!(l40s.contains(&"ml.g6e.12xlarge".to_string()), "{l40s:?}");
        let h100 = from_gpus("NVIDIA H100 80GB HBM3", 8).unwrap();
        assert!(h100.contains(&"ml.p5.48xlarge".to_string()), "{h100:?}");
        let a100 = from_gpus("NVIDIA A100-SXM4-40GB", 8).unwrap();
        assert!(a100.contains(&"ml.p4d.24xlarge".to_string()), "{a100:?}");
        assert_eq!(from_gpus("NVIDIA GeForce RTX 4090", 1), None);
    }
}
