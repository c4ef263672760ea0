//! Streaming writer for size-limited safetensors shards.
//!
//! The whole output layout (every tensor's name, dtype and shape) is planned first, so
//! each file's header and each tensor's offset are known before any data exists. Then
//! tensors can be produced in any order, by any thread, and written straight to their
//! place with positional writes: memory stays near one tensor, never one model.

use crate::{Error, IoContext, Result};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One tensor of the planned output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }

    pub fn byte_len(&self) -> u64 {
        let elems: u64 = self.shape.iter().map(|&d| d as u64).product();
        elems * dtype_bytes(self.dtype) as u64
    }
}

/// Bytes per element of the dtypes this project writes.
pub fn dtype_bytes(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

/// The safetensors name of a dtype (`F8_E4M3`, `BF16`, ...).
pub fn dtype_name(dtype: Dtype) -> String {
    dtype.to_string()
}

struct Placement {
    shard: usize,
    offset: u64,
    len: u64,
}

struct Shard {
    path: PathBuf,
    file: File,
    data_start: u64,
}

/// Writes a planned set of tensors into one `model.safetensors` or several
/// `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`.
pub struct ShardedWriter {
    dir: PathBuf,
    shards: Vec<Shard>,
    places: HashMap<String, Placement>,
    /// Bytes of each tensor not yet written.
    pending: Mutex<BTreeMap<String, u64>>,
    write_index: bool,
    total_size: u64,
}

impl ShardedWriter {
    /// Lays out `tensors` (in the given order) into shards of at most
    /// `max_shard_bytes` of tensor data each (a larger tensor gets a shard of its own),
    /// creates the files at their final size and writes their headers.
    pub fn create(dir: &Path, tensors: &[TensorSpec], max_shard_bytes: u64) -> Result<Self> {
        let hf_name = |i: usize, count: usize| {
            if count == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, count)
            }
        };
        Self::create_named(dir, tensors, max_shard_bytes, &hf_name, true)
    }

    /// [`ShardedWriter::create`] with file names of the caller's choosing: `file_name(i, n)`
    /// names file `i` of `n`. `write_index` adds `model.safetensors.index.json` when there is
    /// more than one file.
    pub fn create_named(
        dir: &Path,
        tensors: &[TensorSpec],
        max_shard_bytes: u64,
        file_name: &dyn Fn(usize, usize) -> String,
        write_index: bool,
    ) -> Result<Self> {
        let mut groups: Vec<Vec<&TensorSpec>> = vec![Vec::new()];
        let mut current = 0u64;
        for t in tensors {
            let len = t.byte_len();
            let last = groups.last_mut().expect("groups is never empty");
            if !last.is_empty() && current + len > max_shard_bytes {
                groups.push(vec![t]);
                current = len;
            } else {
                last.push(t);
                current += len;
            }
        }
        let count = groups.len();
        let mut shards = Vec::with_capacity(count);
        let mut places = HashMap::new();
        let mut pending = BTreeMap::new();
        let mut total_size = 0;
        for (i, group) in groups.iter().enumerate() {
            let path = dir.join(file_name(i, count));
            let (header, data_len) = header_for(group);
            let file = File::create(&path).at(&path)?;
            let data_start = 8 + header.len() as u64;
            file.write_all_at(&(header.len() as u64).to_le_bytes(), 0)
                .at(&path)?;
            file.write_all_at(&header, 8).at(&path)?;
            file.set_len(data_start + data_len).at(&path)?;
            let mut offset = 0;
            for t in group {
                let len = t.byte_len();
                if places
                    .insert(
                        t.name.clone(),
                        Placement {
                            shard: i,
                            offset,
                            len,
                        },
                    )
                    .is_some()
                {
                    return Err(Error::tensor(&path, &t.name, "planned twice in the output"));
                }
                if len > 0 {
                    pending.insert(t.name.clone(), len);
                }
                offset += len;
            }
            total_size += data_len;
            shards.push(Shard {
                path,
                file,
                data_start,
            });
        }
        Ok(ShardedWriter {
            dir: dir.to_path_buf(),
            shards,
            places,
            pending: Mutex::new(pending),
            write_index,
            total_size,
        })
    }

    /// Writes one tensor's bytes to its planned place. Safe to call from many threads.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let len = self.place(name)?.1.len;
        if bytes.len() as u64 != len {
            return Err(Error::tensor(
                &self.shards[self.place(name)?.1.shard].path,
                name,
                format!("planned {len} bytes but {} were produced", bytes.len()),
            ));
        }
        self.write_at(name, 0, bytes)
    }

    /// Writes `bytes` at byte `offset` of a planned tensor (a tensor may be written in
    /// pieces, e.g. the members of a fused layer; pieces must not overlap).
    pub fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<()> {
        let (shard, place) = self.place(name)?;
        let end = offset + bytes.len() as u64;
        if end > place.len {
            return Err(Error::tensor(
                &shard.path,
                name,
                format!(
                    "a write of bytes {offset}..{end} runs past the planned {} bytes",
                    place.len
                ),
            ));
        }
        shard
            .file
            .write_all_at(bytes, shard.data_start + place.offset + offset)
            .at(&shard.path)?;
        let mut pending = self.pending.lock().expect("writer lock poisoned");
        if let Some(left) = pending.get_mut(name) {
            *left = left.saturating_sub(bytes.len() as u64);
            if *left == 0 {
                pending.remove(name);
            }
        }
        Ok(())
    }

    fn place(&self, name: &str) -> Result<(&Shard, &Placement)> {
        let place = self
            .places
            .get(name)
            .ok_or_else(|| Error::tensor(&self.dir, name, "was not planned for this output"))?;
        Ok((&self.shards[place.shard], place))
    }

    /// Checks that every planned tensor was written and writes the index when there is
    /// more than one shard. Returns the file names written. Flushing to disk is left to
    /// the caller (`StagedDir::sync`/`commit`), so it can overlap with other work.
    pub fn finish(self) -> Result<Vec<String>> {
        let pending = self.pending.into_inner().expect("writer lock poisoned");
        if let Some((name, _)) = pending.iter().next() {
            return Err(Error::tensor(
                &self.dir,
                name,
                format!("{} planned tensors were never written", pending.len()),
            ));
        }
        let mut names = Vec::new();
        for shard in &self.shards {
            names.push(file_name(&shard.path));
        }
        if self.write_index && self.shards.len() > 1 {
            let mut weight_map: Vec<(&String, &Placement)> = self.places.iter().collect();
            weight_map.sort_by(|a, b| a.0.cmp(b.0));
            let map: serde_json::Map<String, serde_json::Value> = weight_map
                .into_iter()
                .map(|(n, p)| (n.clone(), file_name(&self.shards[p.shard].path).into()))
                .collect();
            let index = serde_json::json!({
                "metadata": {"total_size": self.total_size},
                "weight_map": map,
            });
            let path = self.dir.join("model.safetensors.index.json");
            let text = serde_json::to_string_pretty(&index).expect("index serialises");
            std::fs::write(&path, text).at(&path)?;
            names.push("model.safetensors.index.json".into());
        }
        Ok(names)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The JSON header of one shard, padded with spaces to a multiple of 8 bytes so the
/// data that follows is aligned (as the safetensors library writes it).
fn header_for(group: &[&TensorSpec]) -> (Vec<u8>, u64) {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in group {
        let end = offset + t.byte_len();
        map.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype_name(t.dtype), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&map).expect("header serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    (header, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    #[test]
    fn single_file_round_trips_through_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let specs = vec![
            TensorSpec::new("b", Dtype::F32, vec![2, 3]),
            TensorSpec::new("a", Dtype::I8, vec![5]),
        ];
        let w = ShardedWriter::create(dir.path(), &specs, 1 << 20).unwrap();
        w.write("a", &[1, 2, 3, 4, 5]).unwrap();
        let floats: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.write("b", &floats).unwrap();
        assert_eq!(w.finish().unwrap(), vec!["model.safetensors"]);
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().data(), &[1, 2, 3, 4, 5]);
        assert_eq!(st.tensor("b").unwrap().shape(), &[2, 3]);
        assert_eq!(st.tensor("b").unwrap().data(), &floats[..]);
    }

    #[test]
    fn splits_at_the_limit_and_writes_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<_> = (0..5)
            .map(|i| TensorSpec::new(format!("t{i}"), Dtype::U8, vec![100]))
            .collect();
        let w = ShardedWriter::create(dir.path(), &specs, 250).unwrap();
        for i in (0..5).rev() {
            w.write(&format!("t{i}"), &[i as u8; 100]).unwrap();
        }
        let names = w.finish().unwrap();
        assert_eq!(
            names.len(),
            4,
            "3 shards of <=250 bytes plus the index: {names:?}"
        );
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(index["metadata"]["total_size"], 500);
        assert_eq!(
            index["weight_map"]["t4"],
            "model-00003-of-00003.safetensors"
        );
        let bytes = std::fs::read(dir.path().join("model-00003-of-00003.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("t4").unwrap().data(), &[4u8; 100]);
    }

    #[test]
    fn unwritten_or_wrong_sized_tensors_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let specs = vec![TensorSpec::new("x", Dtype::F16, vec![4])];
        let w = ShardedWriter::create(dir.path(), &specs, 1 << 20).unwrap();
        assert!(w
            .write("x", &[0; 7])
            .unwrap_err()
            .to_string()
            .contains("planned 8 bytes"));
        assert!(w.write("y", &[0; 8]).is_err());
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("never written"));
    }
}
