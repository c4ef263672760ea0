//! Which files a training data source names, as SageMaker's
//! `TrainingDataSource {S3Uri, S3DataType}` describes them, for local paths:
//! `S3Prefix` (a file, a directory, or a path prefix like an S3 key prefix) or
//! `ManifestFile` (a JSON list of a prefix and keys below it).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::json_kind;
use crate::TextError;

/// How a training data location names its files (`S3DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `S3Prefix`: a file, a directory, or every file whose path starts with the string.
    Prefix,
    /// `ManifestFile`: a JSON manifest listing the files.
    Manifest,
}

impl SourceKind {
    /// The `S3DataType` value: `S3Prefix` or `ManifestFile`.
    pub fn parse(data_type: &str) -> Option<SourceKind> {
        match data_type {
            "S3Prefix" => Some(SourceKind::Prefix),
            "ManifestFile" => Some(SourceKind::Manifest),
            _ => None,
        }
    }
}

/// The data files of a training data source, in a fixed order.
///
/// - [`SourceKind::Prefix`]: `path` is a file (just it); a directory (every regular file
///   under it, recursively, sorted; names starting with `.` or `_` are skipped, files
///   and folders alike: hidden files and the `_SUCCESS`, `_temporary` markers of
///   Hadoop-style writers); or, when nothing is at `path`, a prefix as S3 reads one:
///   `/data/train` matches `/data/train.jsonl` and every file under `/data/train/`.
/// - [`SourceKind::Manifest`]: `path` is a manifest ([`Manifest`]); its keys are
///   appended to its prefix, and each must be a file.
///
/// No file is an error.
pub fn training_files(path: &Path, kind: SourceKind) -> Result<Vec<PathBuf>, TextError> {
    match kind {
        SourceKind::Prefix => prefix_files(path),
        SourceKind::Manifest => manifest_files(path),
    }
}

/// Names skipped when walking a directory: hidden files and `_`-markers.
fn is_hidden(name: &OsStr) -> bool {
    matches!(name.as_encoded_bytes().first(), Some(b'.' | b'_'))
}

const SKIPPED_NAMES: &str = "names starting with `.` or `_`, such as `_SUCCESS`, are not read";

fn prefix_files(path: &Path) -> Result<Vec<PathBuf>, TextError> {
    let none = |detail: String| TextError::NoTrainingFiles {
        path: path.to_path_buf(),
        detail,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(vec![path.to_path_buf()]),
        Ok(meta) if meta.is_dir() => {
            let mut files = Vec::new();
            walk(path, &mut files, &mut HashSet::new())?;
            if files.is_empty() {
                return Err(none(format!(
                    "the directory holds no files ({SKIPPED_NAMES})"
                )));
            }
            files.sort();
            return Ok(files);
        }
        Ok(_) => return Err(none("it is neither a file nor a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TextError::read(path, e)),
    }
    // Nothing at `path`: a prefix of file paths, as S3 reads its keys.
    let text = path.as_os_str().as_encoded_bytes();
    let (Some(stem), false) = (path.file_name(), text.ends_with(b"/")) else {
        return Err(none("no such directory".into()));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(none(format!(
                "nothing is at this path and its directory {} does not exist",
                parent.display()
            )))
        }
        Err(e) => return Err(TextError::read(parent, e)),
    };
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| TextError::read(parent, e))?;
        let name = entry.file_name();
        // The prefix names these entries itself, so even hidden ones are read.
        if !name.as_encoded_bytes().starts_with(stem.as_encoded_bytes()) {
            continue;
        }
        let entry_path = parent.join(&name);
        match std::fs::metadata(&entry_path) {
            Ok(meta) if meta.is_file() => files.push(entry_path),
            Ok(meta) if meta.is_dir() => walk(&entry_path, &mut files, &mut visited)?,
            Ok(_) => {}
            Err(e) => return Err(TextError::read(entry_path, e)),
        }
    }
    if files.is_empty() {
        return Err(none(format!(
            "nothing is at this path, and no file in {} has a path starting with it \
             (it is read as a prefix, like an S3 key prefix; {SKIPPED_NAMES} below it)",
            parent.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// Every regular file under `dir` (symbolic links followed, each directory once), hidden
/// names skipped, into `out`.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), TextError> {
    let canonical = dir.canonicalize().map_err(|e| TextError::read(dir, e))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| TextError::read(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| TextError::read(dir, e))?.file_name();
        if !is_hidden(&name) {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => out.push(path),
            Ok(meta) if meta.is_dir() => walk(&path, out, visited)?,
            // Sockets, pipes and devices are not data.
            Ok(_) => {}
            Err(e) => return Err(TextError::read(path, e)),
        }
    }
    Ok(())
}

/// A SageMaker `ManifestFile`: `[{"prefix": "s3://bucket/p/"}, "relative/key1", ...]`.
/// Each file is the prefix with a key appended as it is (no separator is added).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub prefix: String,
    /// The keys in order; key `i` is entry `i + 1` of the JSON list.
    pub keys: Vec<String>,
}

impl Manifest {
    /// Parses a manifest's bytes; `manifest` names it (a path or URI) in errors.
    pub fn parse(bytes: &[u8], manifest: &str) -> Result<Manifest, TextError> {
        let error = |reason: String| TextError::Manifest {
            manifest: manifest.to_string(),
            reason,
        };
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| error(format!("it is not valid JSON ({e})")))?;
        let Value::Array(entries) = value else {
            return Err(error(format!(
                "expected a JSON list, got {}",
                json_kind(&value)
            )));
        };
        let Some(first) = entries.first() else {
            return Err(error("the list is empty".into()));
        };
        let prefix = match first.get("prefix") {
            Some(Value::String(prefix)) if !prefix.is_empty() => prefix.clone(),
            Some(Value::String(_)) => return Err(error("entry [0]: `prefix` is empty".into())),
            _ => {
                return Err(error(format!(
                    "entry [0] must be an object with a string field `prefix`, got {}",
                    json_kind(first)
                )))
            }
        };
        let mut keys = Vec::with_capacity(entries.len() - 1);
        for (index, entry) in entries.iter().enumerate().skip(1) {
            match entry {
                Value::String(key) if !key.is_empty() => keys.push(key.clone()),
                Value::String(_) => return Err(error(format!("entry [{index}] is an empty key"))),
                other => {
                    return Err(error(format!(
                        "entry [{index}] must be a string key, got {}",
                        json_kind(other)
                    )))
                }
            }
        }
        if keys.is_empty() {
            return Err(error("it lists no keys after the prefix".into()));
        }
        Ok(Manifest { prefix, keys })
    }
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, TextError> {
    let bytes = std::fs::read(path).map_err(|e| TextError::read(path, e))?;
    let name = path.display().to_string();
    let manifest = Manifest::parse(&bytes, &name)?;
    let error = |reason: String| TextError::Manifest {
        manifest: name.clone(),
        reason,
    };
    let prefix = manifest.prefix.as_str();
    let local = if prefix.starts_with("s3://") {
        return Err(error(format!(
            "its prefix `{prefix}` is an S3 location, and local training data must name local \
             files; give the manifest's own s3:// URI as TrainingDataSource.S3Uri to the job \
             API, whose worker downloads S3 data before the job runs, or download the files \
             and write a manifest with a local prefix"
        )));
    } else if let Some(rest) = prefix.strip_prefix("file://") {
        rest
    } else if prefix.contains("://") {
        return Err(error(format!(
            "its prefix `{prefix}`: only file:// URIs and plain paths are supported here"
        )));
    } else {
        prefix
    };
    // A relative prefix is relative to the manifest's own directory.
    let base = if Path::new(local).is_absolute() {
        String::new()
    } else {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => format!("{}/", dir.display()),
            _ => String::new(),
        }
    };
    let mut files = Vec::with_capacity(manifest.keys.len());
    for (i, key) in manifest.keys.iter().enumerate() {
        let target = PathBuf::from(format!("{base}{local}{key}"));
        let reason = match std::fs::metadata(&target) {
            Ok(meta) if meta.is_file() => {
                files.push(target);
                continue;
            }
            Ok(meta) if meta.is_dir() => "it is a directory; manifest keys name files".to_string(),
            Ok(_) => "it is not a regular file".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut reason = "no such file".to_string();
                if !local.ends_with('/') && !key.starts_with('/') {
                    reason.push_str(
                        " (the prefix does not end with `/`, and keys are appended to it as \
                         they are)",
                    );
                }
                reason
            }
            Err(e) => format!("cannot read it: {e}"),
        };
        return Err(TextError::ManifestKey {
            manifest: name,
            index: i + 1,
            key: key.clone(),
            target: target.display().to_string(),
            reason,
        });
    }
    Ok(files)
}
