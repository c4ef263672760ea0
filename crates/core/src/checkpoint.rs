//! A Hugging Face checkpoint on disk: `config.json` plus memory-mapped safetensors,
//! either one `model.safetensors` or shards listed in `model.safetensors.index.json`.
//!
//! Nothing is read into memory up front: headers are parsed and checked (offsets inside
//! the file, contiguous, dtypes known), and tensor bytes are borrowed straight from the
//! mapping when a pass asks for them, so peak memory follows the pass, not the model.

use crate::config::ModelConfig;
use crate::{Error, IoContext, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// One tensor's place in the checkpoint.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    file: usize,
    start: usize,
    end: usize,
}

impl TensorEntry {
    pub fn byte_len(&self) -> usize {
        self.end - self.start
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct WeightFile {
    path: PathBuf,
    map: Mmap,
}

/// An opened model directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    files: Vec<WeightFile>,
    /// In file order, then offset order: the order a sequential reader would meet them.
    tensors: Vec<TensorEntry>,
    by_name: BTreeMap<String, usize>,
    /// Tensor bytes handed out by [`Checkpoint::bytes`] (what this reader touched).
    bytes_read: std::sync::atomic::AtomicU64,
}

impl Checkpoint {
    /// Opens `dir`, reading `config.json` and every safetensors header.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let reason = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(Error::ModelDir {
                dir: dir.to_path_buf(),
                reason: reason.to_string(),
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::ModelDir {
                dir: dir.to_path_buf(),
                reason: "has no config.json; a Hugging Face model directory needs config.json and \
                         model.safetensors (or shards with model.safetensors.index.json). For a GGUF \
                         file, run `optimize import-gguf` first"
                    .into(),
            });
        }
        let names = weight_file_names(dir)?;
        Self::open_files(dir, &names)
    }

    /// Opens `config.json` of `dir` and exactly the safetensors files `names` (relative to
    /// `dir`), e.g. one tensor-parallel rank's files of a pre-sharded artifact.
    pub fn open_files(dir: &Path, names: &[String]) -> Result<Self> {
        let config = ModelConfig::load(&dir.join("config.json"))?;
        let mut checkpoint = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files: Vec::new(),
            tensors: Vec::new(),
            by_name: BTreeMap::new(),
            bytes_read: Default::default(),
        };
        for name in names {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::ModelDir {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "is missing {name}, which the checkpoint needs; copy the complete artifact"
                    ),
                });
            }
            checkpoint.add_file(&path)?;
        }
        Ok(checkpoint)
    }

    /// Tensor bytes read through [`Checkpoint::bytes`] so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).at(path)?;
        // SAFETY: the mapping is read-only and lives as long as this Checkpoint. A
        // concurrent writer truncating the file could fault the process; model files
        // are inputs we never write, and users are told not to modify them mid-job.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let bad = |reason: String| Error::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        // Full validation: header JSON, offsets inside the buffer, no gaps or overlaps.
        SafeTensors::deserialize(&map).map_err(|e| bad(describe(&e, map.len())))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(describe(&e, map.len())))?;
        let data_start = 8 + header_len;
        let index = self.files.len();
        let mut entries: Vec<TensorEntry> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                file: index,
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            })
            .collect();
        entries.sort_by_key(|e| e.start);
        for e in entries {
            if self
                .by_name
                .insert(e.name.clone(), self.tensors.len())
                .is_some()
            {
                return Err(Error::tensor(
                    path,
                    &e.name,
                    "appears in more than one safetensors file",
                ));
            }
            self.tensors.push(e);
        }
        self.files.push(WeightFile {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    /// Every tensor, in storage order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw little-endian bytes of a tensor, borrowed from the mapping.
    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        self.bytes_read.fetch_add(
            entry.byte_len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        &self.files[entry.file].map[entry.start..entry.end]
    }

    /// Tells the kernel a tensor's source pages are no longer needed, so resident memory
    /// stays near one tensor while a pass streams through a large model. The pages are
    /// file-backed and unmodified: a later read simply faults them in again.
    pub fn release(&self, entry: &TensorEntry) {
        let map = &self.files[entry.file].map;
        let page = 4096;
        let start = entry.start.div_ceil(page) * page;
        let end = (entry.end / page) * page;
        if end > start {
            // SAFETY: MADV_DONTNEED on a read-only, file-backed mapping only drops clean
            // page-cache references; the bytes stay identical when touched again, so any
            // slice still borrowed from `map` keeps reading the same data.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// The file a tensor lives in (for error messages).
    pub fn file_of(&self, entry: &TensorEntry) -> &Path {
        &self.files[entry.file].path
    }

    /// The safetensors files, in order.
    pub fn weight_files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Sum of the tensor data sizes.
    pub fn total_tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.byte_len() as u64).sum()
    }
}

/// Turns the safetensors crate's error into a sentence about this file.
fn describe(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer | E::InvalidOffset(_) => format!(
            "the header points past the end of the file or has gaps ({e:?}; the file has {file_len} bytes): \
             the file is truncated or corrupt, download or copy it again"
        ),
        E::HeaderTooSmall | E::HeaderTooLarge | E::InvalidHeaderLength => format!(
            "the header length is invalid ({e:?}; the file has {file_len} bytes): is this a safetensors file, \
             and is it complete?"
        ),
        other => format!("{other:?}"),
    }
}

/// The safetensors files of a model directory, from the index when there is one.
fn weight_file_names(dir: &Path) -> Result<Vec<String>> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path).at(&index_path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: index_path.clone(),
                source,
            })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Config {
                path: index_path.clone(),
                field: "weight_map".into(),
                reason: "is missing or not an object of tensor name -> file name".into(),
            })?;
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| Error::Config {
                path: index_path.clone(),
                field: format!("weight_map.{tensor}"),
                reason: format!("must be a file name, found {file}"),
            })?;
            if file.contains('/') || file.contains("..") || !dir.join(file).is_file() {
                return Err(Error::Config {
                    path: index_path.clone(),
                    field: format!("weight_map.{tensor}"),
                    reason: format!("names `{file}`, which is not a file in {}", dir.display()),
                });
            }
            files.insert(file.to_string());
        }
        return Ok(files.into_iter().collect());
    }
    if dir.join("model.safetensors").is_file() {
        return Ok(vec!["model.safetensors".into()]);
    }
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        let hint = if std::fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok())
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".bin") || n.ends_with(".pt")
            }) {
            " (PyTorch .bin/.pt weights were found: convert them to safetensors first)"
        } else {
            ""
        };
        return Err(Error::ModelDir {
            dir: dir.to_path_buf(),
            reason: format!("has no model.safetensors, no model.safetensors.index.json and no *.safetensors{hint}"),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{ShardedWriter, TensorSpec};

    fn write_model(dir: &Path, shard_limit: u64) {
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,
               "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#,
        )
        .unwrap();
        let specs = vec![
            TensorSpec::new("model.embed_tokens.weight", Dtype::F32, vec![10, 8]),
            TensorSpec::new("model.layers.0.mlp.up_proj.weight", Dtype::F32, vec![16, 8]),
        ];
        let w = ShardedWriter::create(dir, &specs, shard_limit).unwrap();
        w.write("model.embed_tokens.weight", &[1; 320]).unwrap();
        w.write("model.layers.0.mlp.up_proj.weight", &[2; 512])
            .unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn opens_single_and_sharded() {
        for limit in [1 << 20, 100] {
            let dir = tempfile::tempdir().unwrap();
            write_model(dir.path(), limit);
            let c = Checkpoint::open(dir.path()).unwrap();
            assert_eq!(c.tensors().len(), 2);
            let up = c.get("model.layers.0.mlp.up_proj.weight").unwrap();
            assert_eq!(up.shape, vec![16, 8]);
            assert_eq!(c.bytes(up), &[2u8; 512][..]);
            assert_eq!(c.weight_files().count(), if limit == 100 { 2 } else { 1 });
        }
    }

    #[test]
    fn truncated_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), 1 << 20);
        let path = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = Checkpoint::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn missing_pieces_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = Checkpoint::open(&dir.path().join("nope"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = Checkpoint::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no config.json"), "{err}");
        write_model(dir.path(), 1 << 20);
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let err = Checkpoint::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
    }
}
