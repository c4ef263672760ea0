//! `import_gguf`: a GGUF file into a complete Hugging Face model directory.

use crate::config::{Arch, ModelParams};
use crate::error::{Error, Result};
use crate::names::{
    head_dim_for, map_name, output_order, unpermuted_source_row, Hf, Mapping, Role,
};
use crate::reader::GgufFile;
use crate::rope::{infer_llama3, Llama3Rope};
use crate::tokenizer::{self, TokenizerSummary};
use half::bf16;
use safetensors::Dtype;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use temper_core::staging::StagedDir;
use temper_core::writer::{ShardedWriter, TensorSpec};
use temper_core::IoContext;

// Tensor bytes are produced by viewing f32/bf16 slices as bytes; safetensors files
// are little-endian, so that view is only right on little-endian hosts.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "GGUF import writes safetensors by viewing memory as little-endian"
);

/// The dtype of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputDtype {
    /// Hugging Face's usual checkpoint dtype; every GGUF quantization fits in it
    /// except for the rounding of the (already quantized) values' scales.
    #[default]
    Bf16,
    /// Exact dequantized values, twice the size.
    F32,
}

impl OutputDtype {
    fn safetensors(self) -> Dtype {
        match self {
            OutputDtype::Bf16 => Dtype::BF16,
            OutputDtype::F32 => Dtype::F32,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            OutputDtype::Bf16 => "bfloat16",
            OutputDtype::F32 => "float32",
        }
    }
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dtype: OutputDtype,
    /// Replace an existing output directory (only once the new one is complete).
    pub overwrite: bool,
    /// Largest safetensors shard, in bytes of tensor data.
    pub max_shard_bytes: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dtype: OutputDtype::Bf16,
            overwrite: false,
            max_shard_bytes: 5 << 30,
        }
    }
}

/// What an import produced.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub source: PathBuf,
    pub source_bytes: u64,
    pub output: PathBuf,
    /// GGUF `general.architecture` (`llama`, `qwen2`).
    pub architecture: String,
    /// The Hugging Face class written to `config.json`.
    pub hf_architecture: String,
    pub dtype: String,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes_written: u64,
    /// How the source tensors were stored (`Q4_1`: 210, `F32`: 61, ...).
    pub source_tensor_types: BTreeMap<String, usize>,
    pub tie_word_embeddings: bool,
    /// Whether q/k rows were put back in Hugging Face's rotary order.
    pub unpermuted_qk: bool,
    pub tokenizer: TokenizerSummary,
    /// Files written, relative to `output`.
    pub files: Vec<String>,
    /// GGUF tensors not written (recomputed by Hugging Face models), with why.
    pub skipped_tensors: Vec<String>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// One tensor to write.
struct Planned {
    gguf: String,
    hf: Hf,
    shape: Vec<usize>,
    /// Where its data lies in the GGUF.
    offset: u64,
    /// Heads to un-permute the rows over (llama q and k).
    unpermute_heads: Option<usize>,
}

/// Imports `gguf` into the Hugging Face model directory `out_dir`.
///
/// Everything is checked (header, metadata, tensor directory, tokenizer) before the
/// output is created; tensors are then dequantized and written one at a time, into a
/// staging directory renamed into place only when complete, so a failure leaves
/// nothing behind. `progress` is called after each tensor with
/// `(tensors_done, tensors_total, bytes_written)`.
pub fn import_gguf(
    gguf: &Path,
    out_dir: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(usize, usize, u64),
) -> Result<ImportReport> {
    let started = Instant::now();
    let mut file = GgufFile::open(gguf)?;
    let meta = file.meta();
    let arch = Arch::from_meta(&meta)?;
    let mut params = ModelParams::read(arch, &meta, file.tensor_infos())?;
    let tok = tokenizer::build(&meta, params.context_length)?;
    let mut warnings = tok.warnings.clone();
    check_vocab(
        gguf,
        tok.summary.vocab_size,
        params.vocab_size,
        &mut warnings,
    )?;
    let (plan, skipped) = plan(&file, &params)?;
    if file.tensor_infos().contains_key("rope_freqs.weight") {
        apply_rope_freqs(&mut file, &mut params, &mut warnings)?;
    }
    let source_tensor_types = file
        .tensor_infos()
        .values()
        .fold(BTreeMap::new(), |mut m, t| {
            *m.entry(ggml_name(t.ggml_dtype)).or_insert(0) += 1;
            m
        });

    let stage = StagedDir::create(out_dir, opts.overwrite)?;
    let dtype = opts.dtype.safetensors();
    let specs: Vec<TensorSpec> = plan
        .iter()
        .map(|p| TensorSpec::new(p.hf.name.clone(), dtype, p.shape.clone()))
        .collect();
    let writer = ShardedWriter::create(stage.path(), &specs, opts.max_shard_bytes)?;
    let (written, parameters) = write_tensors(&mut file, &plan, &writer, opts.dtype, progress)?;
    let mut files = writer.finish()?;
    files.extend(write_metadata_files(
        stage.path(),
        gguf,
        &params,
        opts.dtype,
        &tok,
    )?);
    let output = stage.commit()?;
    Ok(ImportReport {
        source: gguf.to_path_buf(),
        source_bytes: file.file_size(),
        output,
        architecture: arch.gguf_name().to_string(),
        hf_architecture: arch.hf_class().to_string(),
        dtype: opts.dtype.torch_name().to_string(),
        tensors: plan.len(),
        parameters,
        bytes_written: written,
        source_tensor_types,
        tie_word_embeddings: params.tie_word_embeddings,
        unpermuted_qk: arch.permutes_qk(),
        tokenizer: tok.summary,
        files,
        skipped_tensors: skipped,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Dequantizes, converts and writes every planned tensor; returns the bytes and
/// parameters written.
fn write_tensors(
    file: &mut GgufFile,
    plan: &[Planned],
    writer: &ShardedWriter,
    dtype: OutputDtype,
    progress: &mut dyn FnMut(usize, usize, u64),
) -> Result<(u64, u64)> {
    let (total, mut written, mut parameters) = (plan.len(), 0u64, 0u64);
    progress(0, total, 0);
    // Planned in output order; read in file order so the GGUF streams through once.
    let mut by_offset: Vec<&Planned> = plan.iter().collect();
    by_offset.sort_by_key(|p| p.offset);
    for (done, p) in by_offset.into_iter().enumerate() {
        let (values, _) = file.read_f32(&p.gguf)?;
        let bytes = convert(&values, &p.shape, p.unpermute_heads, dtype);
        writer.write(&p.hf.name, bytes.as_bytes())?;
        written += bytes.as_bytes().len() as u64;
        parameters += values.len() as u64;
        progress(done + 1, total, written);
    }
    Ok((written, parameters))
}

/// llama.cpp's name of a tensor type (`Q4_K`, where candle's enum says `Q4K`).
fn ggml_name(dtype: candle_core::quantized::GgmlDType) -> String {
    let name = format!("{dtype:?}");
    match name.strip_suffix('K') {
        Some(stem) if stem.starts_with('Q') => format!("{stem}_K"),
        _ => name,
    }
}

/// The embedding may have more rows than tokens (padding), never fewer.
fn check_vocab(gguf: &Path, tokens: usize, rows: usize, warnings: &mut Vec<String>) -> Result<()> {
    if tokens > rows {
        return Err(Error::tensor(
            gguf,
            "token_embd.weight",
            format!(
                "has {rows} rows but the tokenizer has {tokens} tokens; the file is inconsistent"
            ),
        ));
    }
    if tokens < rows {
        warnings.push(format!(
            "the embedding has {rows} rows for {tokens} tokens; vocab_size is set to {rows} (the extra rows are padding)"
        ));
    }
    Ok(())
}

/// Maps every tensor to its output, in output order; returns it and the skipped ones.
fn plan(file: &GgufFile, params: &ModelParams) -> Result<(Vec<Planned>, Vec<String>)> {
    let mut plan = Vec::new();
    let mut skipped = Vec::new();
    for (name, info) in file.tensor_infos() {
        let hf = match map_name(name) {
            Mapping::Tensor(hf) => hf,
            Mapping::Skip(why) => {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
            Mapping::Unknown => {
                return Err(Error::tensor(
                    file.path(),
                    name,
                    format!(
                        "has no known Hugging Face name for architecture `{}` (mixture-of-experts and fused-QKV \
                         files are not supported)",
                        params.arch.gguf_name()
                    ),
                ))
            }
        };
        let shape = info.shape.dims().to_vec();
        let heads = match hf.role {
            Role::Query if params.arch.permutes_qk() => Some(params.num_heads),
            Role::Key if params.arch.permutes_qk() => Some(params.num_kv_heads),
            _ => None,
        };
        if let Some(heads) = heads {
            if shape
                .first()
                .and_then(|&rows| head_dim_for(rows, heads))
                .is_none()
            {
                return Err(Error::tensor(
                    file.path(),
                    name,
                    format!("has shape {shape:?}, whose rows do not split into {heads} heads of even size"),
                ));
            }
        }
        plan.push(Planned {
            gguf: name.clone(),
            hf,
            shape,
            offset: info.offset,
            unpermute_heads: heads,
        });
    }
    plan.sort_by_key(|p| output_order(&p.hf));
    skipped.sort();
    Ok((plan, skipped))
}

/// Turns Llama 3's rope factor tensor back into `rope_scaling`, or warns.
fn apply_rope_freqs(
    file: &mut GgufFile,
    params: &mut ModelParams,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let (factors, _) = file.read_f32("rope_freqs.weight")?;
    match infer_llama3(&factors, params.rope_theta, params.head_dim) {
        Llama3Rope::None => {}
        Llama3Rope::Scaling(scaling) => {
            if params.rope_scaling.is_none() {
                params.rope_scaling = Some(scaling);
            }
        }
        Llama3Rope::Unrecognised => warnings.push(format!(
            "{}: `rope_freqs.weight` holds rope factors that match no known Llama 3 scaling; config.json has no \
             llama3 `rope_scaling`: copy it from the original model's config.json",
            file.path().display()
        )),
    }
    Ok(())
}

/// Converted tensor data, viewable as the bytes safetensors stores.
enum Converted<'a> {
    F32(Cow<'a, [f32]>),
    Bf16(Vec<bf16>),
}

impl Converted<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Converted::F32(v) => bytemuck::cast_slice(v),
            Converted::Bf16(v) => bytemuck::cast_slice(v),
        }
    }
}

/// Reorders q/k rows where needed and converts to the output dtype.
fn convert<'a>(
    values: &'a [f32],
    shape: &[usize],
    unpermute_heads: Option<usize>,
    dtype: OutputDtype,
) -> Converted<'a> {
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let cols = values.len() / rows;
    let head_dim = unpermute_heads.and_then(|heads| head_dim_for(rows, heads));
    let row = |r: usize| {
        let src = head_dim.map_or(r, |hd| unpermuted_source_row(r, hd));
        &values[src * cols..(src + 1) * cols]
    };
    match (dtype, head_dim) {
        (OutputDtype::F32, None) => Converted::F32(Cow::Borrowed(values)),
        (OutputDtype::F32, Some(_)) => Converted::F32(Cow::Owned(
            (0..rows).flat_map(|r| row(r).iter().copied()).collect(),
        )),
        (OutputDtype::Bf16, _) => {
            let mut out = Vec::with_capacity(values.len());
            for r in 0..rows {
                out.extend(row(r).iter().map(|&x| bf16::from_f32(x)));
            }
            Converted::Bf16(out)
        }
    }
}

/// Writes config, generation config and the tokenizer files; returns their names.
fn write_metadata_files(
    dir: &Path,
    gguf: &Path,
    params: &ModelParams,
    dtype: OutputDtype,
    tok: &tokenizer::TokenizerFiles,
) -> Result<Vec<String>> {
    let json_files = [
        ("config.json", params.config_json(dtype.torch_name())),
        ("generation_config.json", params.generation_config_json()),
        ("tokenizer_config.json", tok.tokenizer_config.clone()),
        ("special_tokens_map.json", tok.special_tokens_map.clone()),
    ];
    let mut names = Vec::new();
    for (name, value) in &json_files {
        write_json(&dir.join(name), value)?;
        names.push(name.to_string());
    }
    let path = dir.join("tokenizer.json");
    tok.tokenizer
        .save(&path, true)
        .map_err(|e| Error::tokenizer(gguf, format!("cannot write {}: {e}", path.display())))?;
    names.push("tokenizer.json".into());
    Ok(names)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|source| temper_core::Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
    text.push('\n');
    std::fs::write(path, text).at(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_unpermutes_rows() {
        // 2 heads of 4 rows, 1 column: GGUF rows [0,2,1,3 | 4,6,5,7] hold HF rows 0..8.
        let gguf: Vec<f32> = [0., 2., 1., 3., 4., 6., 5., 7.].to_vec();
        let out = convert(&gguf, &[8, 1], Some(2), OutputDtype::F32);
        let Converted::F32(v) = out else {
            panic!("f32 expected")
        };
        assert_eq!(&v[..], &[0., 1., 2., 3., 4., 5., 6., 7.]);
        let out = convert(&[1.0, -2.5, 3.0e-3], &[3], None, OutputDtype::Bf16);
        assert_eq!(out.as_bytes().len(), 6);
        let Converted::Bf16(v) = out else {
            panic!("bf16 expected")
        };
        assert_eq!(v[1], bf16::from_f32(-2.5));
        assert_eq!(ggml_name(candle_core::quantized::GgmlDType::Q4K), "Q4_K");
        assert_eq!(ggml_name(candle_core::quantized::GgmlDType::Q4_1), "Q4_1");
        let same = convert(&gguf, &[8, 1], None, OutputDtype::F32);
        assert!(matches!(same, Converted::F32(Cow::Borrowed(_))));
    }
}
