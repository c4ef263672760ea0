//! Reading a GGUF file: its metadata (typed, with messages that name the key) and its
//! tensors, one at a time, dequantized to f32.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::Device;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// GGML tensor types candle can dequantize (named in the error for any other type).
const READABLE_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// An open GGUF file whose header has been read.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
    file_size: u64,
}

impl GgufFile {
    /// Opens `path` and reads the header (metadata and tensor directory), then checks
    /// that every tensor's data lies inside the file, so a truncated download fails here,
    /// before anything is written.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let file_size = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| parse_error(path, &e))?;
        let gguf = GgufFile {
            path: path.to_path_buf(),
            reader,
            content,
            file_size,
        };
        gguf.check_extents()?;
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn meta(&self) -> Meta<'_> {
        Meta::new(&self.path, &self.content.metadata)
    }

    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.content.tensor_infos
    }

    /// Tensor names in the order their data lies in the file, so reading them in this
    /// order streams through the file once.
    pub fn names_in_file_order(&self) -> Vec<String> {
        let mut names: Vec<(&String, u64)> = self
            .content
            .tensor_infos
            .iter()
            .map(|(n, info)| (n, info.offset))
            .collect();
        names.sort_by_key(|&(n, offset)| (offset, n.clone()));
        names.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// Reads one tensor and dequantizes it. Returns the values (row-major) and the
    /// shape, outermost dimension first (candle has already reversed GGUF's order).
    pub fn read_f32(&mut self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "is not in the file"))?;
        let shape = info.shape.dims().to_vec();
        let fail = |what: &str, e: candle_core::Error| {
            Error::tensor(
                &self.path,
                name,
                format!("cannot {what} it: {}", candle_message(&e)),
            )
        };
        let qtensor = info
            .read(
                &mut self.reader,
                self.content.tensor_data_offset,
                &Device::Cpu,
            )
            .map_err(|e| fail("read", e))?;
        let values = qtensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| fail("dequantize", e))?;
        Ok((values, shape))
    }

    fn check_extents(&self) -> Result<()> {
        // In file order, so a truncated file names the first tensor it lost.
        for name in self.names_in_file_order() {
            let info = &self.content.tensor_infos[&name];
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if !elems.is_multiple_of(block) {
                return Err(Error::tensor(
                    &self.path,
                    &name,
                    format!(
                        "has {elems} elements, not a multiple of the {:?} block size {block}; the file is corrupt",
                        info.ggml_dtype
                    ),
                ));
            }
            let len = (elems / block * info.ggml_dtype.type_size()) as u64;
            let start = self.content.tensor_data_offset.saturating_add(info.offset);
            let end = start.saturating_add(len);
            if end > self.file_size {
                return Err(Error::tensor(
                    &self.path,
                    &name,
                    format!(
                        "needs bytes {start}..{end} but the file has only {} bytes: it is truncated; \
                         download it again",
                        self.file_size
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A candle error's message without the backtrace candle appends when
/// `RUST_BACKTRACE` is set (users need the reason, not candle's stack).
fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}

fn parse_error(path: &Path, e: &candle_core::Error) -> Error {
    let reason = candle_message(e);
    if let Some(code) = reason.strip_prefix("unknown dtype for tensor ") {
        return Error::Parse {
            path: path.to_path_buf(),
            reason: format!(
                "a tensor uses GGML type code {code}, which this importer cannot dequantize (readable \
                 types: {READABLE_TYPES}); convert the model with one of these quantizations"
            ),
        };
    }
    Error::Parse {
        path: path.to_path_buf(),
        reason,
    }
}

/// Typed access to GGUF metadata. Every error names the file and the key.
#[derive(Clone, Copy)]
pub struct Meta<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    pub fn new(path: &'a Path, map: &'a HashMap<String, Value>) -> Self {
        Meta { path, map }
    }

    pub fn path(&self) -> &'a Path {
        self.path
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> Error {
        Error::metadata(
            self.path,
            key,
            format!("expected {expected}, found {}", describe(found)),
        )
    }

    fn missing(&self, key: &str) -> Error {
        Error::metadata(
            self.path,
            key,
            "is missing; the file was not written by a converter this importer knows (llama.cpp's \
             convert_hf_to_gguf.py writes it)",
        )
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        as_u64(v)
            .map(Some)
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.u64(key)?;
        usize::try_from(v)
            .map_err(|_| Error::metadata(self.path, key, format!("{v} does not fit in memory")))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v).map(Some).map_err(|_| {
                Error::metadata(self.path, key, format!("{v} does not fit in memory"))
            }),
        }
    }

    /// A float, as the shortest decimal that reads back to the stored value (GGUF keeps
    /// most floats as f32: 1e-5 must stay 1e-5 in `config.json`, not 9.99999974e-6).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::F32(x) => format!("{x}").parse::<f64>().unwrap_or(f64::from(*x)),
            Value::F64(x) => *x,
            other => match as_u64(other) {
                Some(n) => n as f64,
                None => return Err(self.wrong(key, "a number", v)),
            },
        };
        Ok(Some(x))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => match as_u64(v) {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(self.wrong(key, "a boolean", v)),
            },
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.wrong(&format!("{key}[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn opt_ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                as_i64(v).ok_or_else(|| self.wrong(&format!("{key}[{i}]"), "an integer", v))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn opt_floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                other => Err(self.wrong(&format!("{key}[{i}]"), "a number", other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        _ => None,
    }
}

/// A short description of a value for error messages (never a 50,000-entry array).
fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} values", a.len()),
        Value::String(s) if s.chars().count() > 60 => {
            format!("the string {:?}...", s.chars().take(60).collect::<String>())
        }
        Value::String(s) => format!("the string {s:?}"),
        other => format!("{other:?}"),
    }
}
