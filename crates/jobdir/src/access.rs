//! What a job may touch on the server's host: local paths only under the configured
//! roots, and KMS encryption only where it can be honoured.

use std::path::{Component, Path, PathBuf};
use temper_api::ApiError;
use temper_core::spec::{JobSpec, Location};
use temper_options::job::{calib_data_path, OPTION_CALIB_DATA};

/// Checks every location of a job against the server's local roots, and KmsKeyId
/// against the output.
pub fn check(spec: &JobSpec, roots: &[PathBuf]) -> Result<(), ApiError> {
    within_roots("ModelSource.S3.S3Uri", &spec.source, roots)?;
    within_roots("OutputConfig.S3OutputLocation", &spec.output, roots)?;
    for (i, opt) in spec.optimizations.iter().enumerate() {
        if let Some(data) = &opt.training_data {
            let member = format!(
                "OptimizationConfigs.{}.ModelSpeculativeDecodingConfig.TrainingDataSource.S3Uri",
                i + 1
            );
            within_roots(&member, &data.location, roots)?;
        }
        // A data file option is a path the worker opens: the same rule as any location,
        // applied to the path exactly as the pipeline will read it.
        if let Some(path) = calib_data_path(&spec.options_for(opt)) {
            within_roots(OPTION_CALIB_DATA, &Location::Local(path), roots)?;
        }
    }
    if let (Some(key), Location::Local(path)) = (&spec.kms_key_id, &spec.output) {
        return Err(ApiError::ValidationException(format!(
            "OutputConfig.KmsKeyId '{key}' cannot be honoured: the output {} is a local \
             path, which temper does not encrypt; write to an s3:// location (the key is \
             passed to S3 as SSE-KMS) or leave KmsKeyId out",
            path.display()
        )));
    }
    Ok(())
}

/// Checks a recommendations job's model and sample payload against the server's roots.
pub fn check_recommendation(
    spec: &crate::recommendation::RecommendationSpec,
    roots: &[PathBuf],
) -> Result<(), ApiError> {
    within_roots("InputConfig.ModelName", &spec.model, roots)?;
    if let Some(payload) = &spec.sample_payload {
        within_roots(
            "InputConfig.ContainerConfig.PayloadConfig.SamplePayloadUrl",
            payload,
            roots,
        )?;
    }
    Ok(())
}

/// Holds one local location to the roots (an S3 one passes); `member` names it in the error.
pub fn within_roots(member: &str, location: &Location, roots: &[PathBuf]) -> Result<(), ApiError> {
    let Location::Local(path) = location else {
        return Ok(());
    };
    if roots.is_empty() {
        return Err(ApiError::ValidationException(format!(
            "Value '{}' at '{member}' is a local path, and this server takes s3:// URIs \
             only; start temper-server with --local-root DIR to allow paths under DIR",
            path.display()
        )));
    }
    let resolved = resolve(path).ok_or_else(|| {
        ApiError::ValidationException(format!(
            "Value '{}' at '{member}' must be an absolute path (file:///abs/path) without \
             '..' or dangling symbolic links",
            path.display()
        ))
    })?;
    if roots.iter().any(|root| resolved.starts_with(root)) {
        return Ok(());
    }
    let allowed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(ApiError::ValidationException(format!(
        "Value '{}' at '{member}' is outside the directories this server may use ({}); \
         move the data under one of them or start the server with another --local-root",
        path.display(),
        allowed.join(", ")
    )))
}

/// The path with symlinks of its existing part resolved and `..` refused, so that
/// neither can lead out of a root: the longest existing ancestor is canonicalized and
/// the rest (not yet created, e.g. the output directory) appended.
fn resolve(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while existing.canonicalize().is_err() {
        // Present but unresolvable (a dangling symlink): where it leads is unknown.
        if existing.symlink_metadata().is_ok() {
            return None;
        }
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?.to_path_buf();
    }
    let mut resolved = existing.canonicalize().ok()?;
    resolved.extend(rest.iter().rev());
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_under_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("models")).unwrap();
        let root = root.canonicalize().unwrap();
        let roots = [root.clone()];
        let ok = |p: PathBuf| within_roots("m", &Location::Local(p), &roots);
        ok(root.join("models")).unwrap();
        ok(root.join("out/new/dir")).unwrap();
        assert!(ok(dir.path().join("elsewhere")).is_err());
        assert!(ok(root.join("../escape")).is_err());
        assert!(ok(PathBuf::from("relative/path")).is_err());
        // A symlink inside the root that points out of it does not lead out.
        std::os::unix::fs::symlink(dir.path(), root.join("link")).unwrap();
        let err = ok(root.join("link/x")).unwrap_err();
        assert!(err.message().contains("outside"), "{err}");
        // A dangling symlink inside the root could be pointed anywhere later.
        std::os::unix::fs::symlink(dir.path().join("not-yet"), root.join("dangling")).unwrap();
        assert!(ok(root.join("dangling/out")).is_err());
        // OPTION_CALIB_DATA is checked as the pipeline reads it (trimmed, file:// off).
        let env = std::collections::BTreeMap::from([(
            "OPTION_CALIB_DATA".to_string(),
            format!(" file://{} ", root.join("link").display()),
        )]);
        let path = calib_data_path(&env).unwrap();
        assert!(within_roots("c", &Location::Local(path), &roots).is_err());
        let none = within_roots("m", &Location::Local(root.join("models")), &[]).unwrap_err();
        assert!(none.message().contains("--local-root"), "{none}");
        let s3 = Location::S3 {
            bucket: "b".into(),
            key: "k".into(),
        };
        within_roots("m", &s3, &[]).unwrap();
    }
}
