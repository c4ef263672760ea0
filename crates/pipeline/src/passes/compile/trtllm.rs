//! The TensorRT-LLM checkpoint ("unified checkpoint") of a Llama-family model, as
//! `trtllm-build` and the LLM API read it: `config.json` (`PretrainedConfig`: architecture,
//! dtype, dimensions, `mapping`, `quantization`) and one `rank{r}.safetensors` per
//! tensor-parallel rank with TensorRT-LLM's names and per-rank slices.
//!
//! Followed: TensorRT-LLM's `models/modeling_utils.py` (PretrainedConfig, QuantConfig,
//! preprocess_weights), `models/llama/convert.py` and `models/model_weights_loader.py` (the
//! name map and splits), `quantization/layers.py` (FP8Linear, Fp8Rowwise*); read at main
//! commits between the 0.19 and 1.0 releases (01ea6d79, 04a2cacb, 04100fd0), as the 0.21.0
//! tree itself could not be fetched here; this part of TensorRT-LLM did not change over
//! that span. Not yet checked with a real trtllm-build (no GPU here).
//!
//! Per rank r of t: `attention.qkv` = this rank's q rows, then k rows, then v rows (a kv
//! head repeated t / kv_heads times when there are fewer kv heads than ranks);
//! `attention.dense` (o_proj) and `mlp.proj` (down_proj) split by columns; `mlp.fc`
//! (gate_proj) and `mlp.gate` (up_proj) by rows; `lm_head` padded with zero rows to a
//! multiple of t and split by rows; the embedding and norms whole on every rank.

use super::{on_path, plan_error, CompilePass};
use crate::passes::PassContext;
use crate::progress::Event;
use crate::{Error, Result};
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use temper_core::checkpoint::{Checkpoint, TensorEntry};
use temper_core::config::ModelConfig;
use temper_core::dtype::FloatData;
use temper_core::writer::{dtype_bytes, ShardedWriter, TensorSpec};
use temper_core::IoContext;
use temper_format::Scheme;
use temper_kernels::{f32_to_fp8_e4m3, fp8_e4m3_to_f32};

/// Families written with TensorRT-LLM's `LlamaForCausalLM` (Mistral's config is Llama's).
const FAMILIES: &[&str] = &["llama", "mistral"];

/// TensorRT-LLM's `quant_algo` for a scheme the TRT build path takes.
fn quant_algo(scheme: Option<Scheme>) -> std::result::Result<Option<&'static str>, String> {
    match scheme {
        None => Ok(None),
        Some(Scheme::Fp8Static) => Ok(Some("FP8")),
        Some(Scheme::Fp8Dynamic) => Ok(Some("FP8_PER_CHANNEL_PER_TOKEN")),
        Some(other) => Err(format!(
            "TensorRT-LLM's checkpoint path takes FP8 with per-tensor scales (OPTION_FP8_SCHEME=FP8, \
             calibrated), FP8 per channel (FP8_DYNAMIC) or unquantized weights; {} is not \
             written for it here (its INT8/INT4 weights must be pre-interleaved per GPU \
             architecture, and FP8_BLOCK_SCALES exists only in its PyTorch backend): quantize \
             with one of those, or serve {} with the LMI (vLLM) image without compilation",
            other.label(),
            other.label()
        )),
    }
}

pub(super) fn check(config: &ModelConfig, scheme: Option<Scheme>, degree: usize) -> Result<()> {
    if !FAMILIES.contains(&config.model_type.as_str()) {
        return Err(plan_error(format!(
            "the TensorRT-LLM checkpoint is written for Llama-family models ({}); {} is `{}` \
             ({}): serve it with the LMI (vLLM) image without compilation",
            FAMILIES.join(", "),
            config.path.display(),
            config.model_type,
            config.architecture
        )));
    }
    for bias in ["attention_bias", "mlp_bias"] {
        if config.raw.get(bias).and_then(Value::as_bool) == Some(true) {
            return Err(plan_error(format!(
                "{} sets {bias}: biases are not written into TensorRT-LLM checkpoints here",
                config.path.display()
            )));
        }
    }
    quant_algo(scheme).map_err(plan_error)?;
    let d = Dims::of(config, degree);
    if !d.heads.is_multiple_of(degree) || !d.inter.is_multiple_of(degree) {
        return Err(plan_error(format!(
            "{} heads and {} MLP rows must divide by the tensor-parallel degree {degree}",
            d.heads, d.inter
        )));
    }
    Ok(())
}

/// The model's dimensions and the degree.
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    inter: usize,
    vocab: usize,
    layers: usize,
    t: usize,
}

impl Dims {
    fn of(c: &ModelConfig, t: usize) -> Dims {
        Dims {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            inter: c.intermediate_size,
            vocab: c.vocab_size,
            layers: c.num_hidden_layers,
            t,
        }
    }

    fn padded_vocab(&self) -> usize {
        self.vocab.div_ceil(self.t) * self.t
    }

    /// Rows of q_proj that rank r holds.
    fn q_rows(&self, r: usize) -> Range<usize> {
        let n = self.heads / self.t * self.head_dim;
        r * n..(r + 1) * n
    }

    /// Rows of k_proj (or v_proj) that rank r holds: its share of kv heads, or the one kv
    /// head it repeats when there are fewer kv heads than ranks.
    fn kv_rows(&self, r: usize) -> Range<usize> {
        if self.kv_heads >= self.t {
            let n = self.kv_heads / self.t * self.head_dim;
            r * n..(r + 1) * n
        } else {
            let head = r / (self.t / self.kv_heads);
            head * self.head_dim..(head + 1) * self.head_dim
        }
    }

    fn kv_rows_per_rank(&self) -> usize {
        self.kv_rows(0).len()
    }
}

/// One Linear of the input checkpoint: its stored weight and scales.
struct Linear<'a> {
    entry: &'a TensorEntry,
    bytes: &'a [u8],
    /// FP8: per-tensor (`[1]`) or per-row scales, as f32; `None` for a dense weight.
    scales: Option<Vec<f32>>,
    input_scale: Option<f32>,
}

impl Linear<'_> {
    fn cols(&self) -> usize {
        self.entry.shape[1]
    }

    fn elem(&self) -> usize {
        dtype_bytes(self.entry.dtype)
    }

    /// Rows `range`, row-major bytes.
    fn rows(&self, range: Range<usize>) -> &[u8] {
        let row = self.cols() * self.elem();
        &self.bytes[range.start * row..range.end * row]
    }

    /// Columns `range` of every row.
    fn cols_of(&self, range: Range<usize>) -> Vec<u8> {
        let (e, row) = (self.elem(), self.cols() * self.elem());
        let mut out = Vec::with_capacity(self.entry.shape[0] * range.len() * e);
        for r in self.bytes.chunks_exact(row) {
            out.extend_from_slice(&r[range.start * e..range.end * e]);
        }
        out
    }

    fn tensor_scale(&self) -> f32 {
        self.scales.as_ref().map_or(1.0, |s| s[0])
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(ck: &Checkpoint, e: &TensorEntry) -> Result<Vec<f32>> {
    let data = FloatData::from_bytes(e.dtype, ck.bytes(e)).ok_or_else(|| Error::Tensor {
        path: ck.file_of(e).to_path_buf(),
        tensor: e.name.clone(),
        reason: format!("a scale of dtype {} cannot be read as a float", e.dtype),
    })?;
    let mut out = vec![0f32; data.len()];
    data.copy_to_f32(0, &mut out);
    Ok(out)
}

struct Input<'a> {
    ck: &'a Checkpoint,
    scheme: Option<Scheme>,
}

impl<'a> Input<'a> {
    fn entry(&self, name: &str) -> Result<&'a TensorEntry> {
        self.ck.get(name).ok_or_else(|| Error::Tensor {
            path: self.ck.dir.clone(),
            tensor: name.to_string(),
            reason: "missing: the checkpoint is not the Llama layout the compilation expects"
                .into(),
        })
    }

    fn linear(&self, module: &str) -> Result<Linear<'a>> {
        let entry = self.entry(&format!("{module}.weight"))?;
        let (scales, input_scale) = match self.scheme {
            Some(Scheme::Fp8Static | Scheme::Fp8Dynamic) => {
                let s = floats(self.ck, self.entry(&format!("{module}.weight_scale"))?)?;
                let i = match self.ck.get(&format!("{module}.input_scale")) {
                    Some(e) => floats(self.ck, e)?.first().copied(),
                    None => None,
                };
                (Some(s), i)
            }
            _ => (None, None),
        };
        Ok(Linear {
            entry,
            bytes: self.ck.bytes(entry),
            scales,
            input_scale,
        })
    }
}

/// One rank tensor being assembled: name, dtype, shape, bytes.
type Out = (String, Dtype, Vec<usize>, Vec<u8>);

/// One rank's piece of a Linear: its stored weight and the scales that go with it.
struct Piece {
    rows: usize,
    cols: usize,
    weight: Vec<u8>,
    /// FP8 per channel: one scale per row of the piece.
    channel_scales: Vec<f32>,
    /// FP8 per tensor.
    tensor_scale: f32,
    input_scale: Option<f32>,
}

/// The rank tensors of one Linear (weight plus the scales its quant_algo wants).
fn linear_outputs(name: &str, scheme: Option<Scheme>, dtype: Dtype, p: Piece) -> Result<Vec<Out>> {
    let Piece {
        rows,
        cols,
        weight,
        channel_scales,
        tensor_scale,
        input_scale,
    } = p;
    let mut out = Vec::new();
    match scheme {
        None => out.push((format!("{name}.weight"), dtype, vec![rows, cols], weight)),
        Some(Scheme::Fp8Dynamic) => {
            out.push((
                format!("{name}.weight"),
                Dtype::F8_E4M3,
                vec![rows, cols],
                weight,
            ));
            out.push((
                format!("{name}.per_channel_scale"),
                Dtype::F32,
                vec![rows],
                f32_bytes(&channel_scales),
            ));
        }
        _ => {
            let input = input_scale.ok_or_else(|| {
                plan_error(format!(
                    "{name}: TensorRT-LLM's FP8 needs a calibrated activation scale and the \
                     checkpoint has no input_scale"
                ))
            })?;
            out.push((
                format!("{name}.weight"),
                Dtype::F8_E4M3,
                vec![rows, cols],
                weight,
            ));
            out.push((
                format!("{name}.weights_scaling_factor"),
                Dtype::F32,
                vec![1],
                f32_bytes(&[tensor_scale]),
            ));
            out.push((
                format!("{name}.activation_scaling_factor"),
                Dtype::F32,
                vec![1],
                f32_bytes(&[input]),
            ));
        }
    }
    Ok(out)
}

/// Rows of a Linear for a column-parallel split (its per-row scales follow).
fn column_parallel(
    name: &str,
    lin: &Linear,
    rows: Range<usize>,
    scheme: Option<Scheme>,
    dtype: Dtype,
) -> Result<Vec<Out>> {
    let channel = match (&lin.scales, scheme) {
        (Some(s), Some(Scheme::Fp8Dynamic)) => s[rows.clone()].to_vec(),
        _ => Vec::new(),
    };
    let piece = Piece {
        rows: rows.len(),
        cols: lin.cols(),
        weight: lin.rows(rows).to_vec(),
        channel_scales: channel,
        tensor_scale: lin.tensor_scale(),
        input_scale: lin.input_scale,
    };
    linear_outputs(name, scheme, dtype, piece)
}

/// Columns of a Linear for a row-parallel split (every output row, so all per-row scales).
fn row_parallel(
    name: &str,
    lin: &Linear,
    cols: Range<usize>,
    scheme: Option<Scheme>,
    dtype: Dtype,
) -> Result<Vec<Out>> {
    let channel = lin
        .scales
        .clone()
        .filter(|_| scheme == Some(Scheme::Fp8Dynamic));
    let piece = Piece {
        rows: lin.entry.shape[0],
        cols: cols.len(),
        weight: lin.cols_of(cols),
        channel_scales: channel.unwrap_or_default(),
        tensor_scale: lin.tensor_scale(),
        input_scale: lin.input_scale,
    };
    linear_outputs(name, scheme, dtype, piece)
}

/// This rank's fused qkv: q rows, k rows, v rows. Per-tensor FP8 scales are merged into
/// their maximum, each part's codes re-rounded to it (TensorRT-LLM's FP8Linear rule); the
/// activation scale is the largest of the three.
fn qkv(
    name: &str,
    parts: [(&Linear, Range<usize>); 3],
    scheme: Option<Scheme>,
    dtype: Dtype,
) -> Result<Vec<Out>> {
    let rows: usize = parts.iter().map(|(_, r)| r.len()).sum();
    let cols = parts[0].0.cols();
    let mut weight = Vec::new();
    let mut channel = Vec::new();
    let top = parts
        .iter()
        .map(|(l, _)| l.tensor_scale())
        .fold(0f32, f32::max);
    for (lin, range) in &parts {
        let bytes = lin.rows(range.clone());
        match scheme {
            Some(Scheme::Fp8Static) if lin.tensor_scale() != top => {
                let s = lin.tensor_scale();
                weight.extend(
                    bytes
                        .iter()
                        .map(|&c| f32_to_fp8_e4m3(fp8_e4m3_to_f32(c) * s / top)),
                );
            }
            _ => weight.extend_from_slice(bytes),
        }
        if let (Some(s), Some(Scheme::Fp8Dynamic)) = (&lin.scales, scheme) {
            channel.extend_from_slice(&s[range.clone()]);
        }
    }
    let input = parts
        .iter()
        .filter_map(|(l, _)| l.input_scale)
        .reduce(f32::max);
    let piece = Piece {
        rows,
        cols,
        weight,
        channel_scales: channel,
        tensor_scale: top,
        input_scale: input,
    };
    linear_outputs(name, scheme, dtype, piece)
}

pub(super) fn write(
    pass: &CompilePass,
    input: &Path,
    out: &Path,
    ctx: &mut PassContext,
) -> Result<(Vec<String>, Value, BTreeMap<String, String>)> {
    let ck = Checkpoint::open(input)?;
    let config = &ck.config;
    let d = Dims::of(config, pass.degree);
    let embed = ck
        .get("model.embed_tokens.weight")
        .ok_or_else(|| Error::Tensor {
            path: ck.dir.clone(),
            tensor: "model.embed_tokens.weight".into(),
            reason: "missing: a Llama checkpoint has its embedding here".into(),
        })?;
    let dtype = embed.dtype;
    let dtype_name = match dtype {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        Dtype::F32 => "float32",
        other => {
            return Err(plan_error(format!(
            "the embedding is {other}: TensorRT-LLM checkpoints are float16, bfloat16 or float32"
        )))
        }
    };
    let algo = quant_algo(pass.scheme).map_err(plan_error)?;
    let src = Input {
        ck: &ck,
        scheme: pass.scheme,
    };
    (ctx.sink)(Event::Phase("compile"));
    (ctx.sink)(Event::Started {
        tensors: ck.tensors().len(),
        bytes: ck.total_tensor_bytes(),
    });
    // Rank files are written one source layer at a time: the names and shapes of every
    // layer are layer 0's (read first to learn them), so the writers are created up front
    // and memory stays near one layer's tensors for all ranks.
    let whole = |name: &str| -> Result<Vec<u8>> { Ok(ck.bytes(src.entry(name)?).to_vec()) };
    let embed_bytes = ck.bytes(embed);
    let lm = match ck.get("lm_head.weight") {
        Some(e) => ck.bytes(e),
        None => embed_bytes,
    };
    let row = d.hidden * dtype_bytes(dtype);
    let outer = |r: usize| -> Result<Vec<Out>> {
        // lm_head padded with zero rows to a multiple of t; rank r's rows of that.
        let per = d.padded_vocab() / d.t;
        let mut head = vec![0u8; per * row];
        let (lo, hi) = (r * per, ((r + 1) * per).min(d.vocab));
        if lo < hi {
            head[..(hi - lo) * row].copy_from_slice(&lm[lo * row..hi * row]);
        }
        Ok(vec![
            (
                "transformer.vocab_embedding.weight".into(),
                dtype,
                vec![d.vocab, d.hidden],
                embed_bytes.to_vec(),
            ),
            ("lm_head.weight".into(), dtype, vec![per, d.hidden], head),
            (
                "transformer.ln_f.weight".into(),
                dtype,
                vec![d.hidden],
                whole("model.norm.weight")?,
            ),
        ])
    };
    let layer = |i: usize| -> Result<Vec<Vec<Out>>> {
        let hf = |m: &str| format!("model.layers.{i}.{m}");
        let (q, k, v) = (
            src.linear(&hf("self_attn.q_proj"))?,
            src.linear(&hf("self_attn.k_proj"))?,
            src.linear(&hf("self_attn.v_proj"))?,
        );
        let o = src.linear(&hf("self_attn.o_proj"))?;
        let (gate, up, down) = (
            src.linear(&hf("mlp.gate_proj"))?,
            src.linear(&hf("mlp.up_proj"))?,
            src.linear(&hf("mlp.down_proj"))?,
        );
        let attn = d.heads * d.head_dim / d.t;
        let mlp = d.inter / d.t;
        let t = |m: &str| format!("transformer.layers.{i}.{m}");
        (0..d.t)
            .map(|r| {
                let mut rank = qkv(
                    &t("attention.qkv"),
                    [(&q, d.q_rows(r)), (&k, d.kv_rows(r)), (&v, d.kv_rows(r))],
                    pass.scheme,
                    dtype,
                )?;
                let (a, m) = (r * attn..(r + 1) * attn, r * mlp..(r + 1) * mlp);
                rank.extend(row_parallel(
                    &t("attention.dense"),
                    &o,
                    a,
                    pass.scheme,
                    dtype,
                )?);
                rank.extend(column_parallel(
                    &t("mlp.fc"),
                    &gate,
                    m.clone(),
                    pass.scheme,
                    dtype,
                )?);
                rank.extend(column_parallel(
                    &t("mlp.gate"),
                    &up,
                    m.clone(),
                    pass.scheme,
                    dtype,
                )?);
                rank.extend(row_parallel(&t("mlp.proj"), &down, m, pass.scheme, dtype)?);
                for (from, to) in [
                    ("input_layernorm", "input_layernorm"),
                    ("post_attention_layernorm", "post_layernorm"),
                ] {
                    let w = whole(&hf(&format!("{from}.weight")))?;
                    rank.push((t(&format!("{to}.weight")), dtype, vec![d.hidden], w));
                }
                Ok(rank)
            })
            .collect()
    };
    let first = layer(0)?;
    let mut writers = Vec::new();
    for (r, layer0) in first.iter().enumerate() {
        // Built once per rank: it copies the embedding and the padded lm_head rows.
        let outer_tensors = outer(r)?;
        let mut specs: Vec<TensorSpec> = outer_tensors
            .iter()
            .map(|(n, dt, shape, _)| TensorSpec::new(n.clone(), *dt, shape.clone()))
            .collect();
        for i in 0..d.layers {
            specs.extend(layer0.iter().map(|(n, dt, shape, _)| {
                let name = n.replacen(
                    "transformer.layers.0.",
                    &format!("transformer.layers.{i}."),
                    1,
                );
                TensorSpec::new(name, *dt, shape.clone())
            }));
        }
        let file = format!("rank{r}.safetensors");
        writers.push(ShardedWriter::create_named(
            out,
            &specs,
            u64::MAX,
            &move |_, _| file.clone(),
            false,
        )?);
        for (n, _, _, bytes) in outer_tensors {
            writers[r].write(&n, &bytes)?;
        }
    }
    let mut pending = Some(first);
    for i in 0..d.layers {
        ctx.cancel.check()?;
        let ranks = match pending.take() {
            Some(l) => l,
            None => layer(i)?,
        };
        for (writer, tensors) in writers.iter().zip(ranks) {
            for (n, _, _, bytes) in tensors {
                writer.write(&n, &bytes)?;
            }
        }
        let prefix = format!("model.layers.{i}.");
        for e in ck.tensors().iter().filter(|e| e.name.starts_with(&prefix)) {
            ck.release(e);
            (ctx.sink)(Event::Tensor {
                name: &e.name,
                bytes: e.byte_len() as u64,
            });
        }
    }
    let mut files = Vec::new();
    let mut rank_bytes = Vec::new();
    for (r, writer) in writers.into_iter().enumerate() {
        writer.finish()?;
        let name = format!("rank{r}.safetensors");
        rank_bytes.push(
            std::fs::metadata(out.join(&name))
                .at(&out.join(&name))?
                .len(),
        );
        files.push(name);
    }
    let mut trt_config = json!({
        "architecture": "LlamaForCausalLM",
        "dtype": dtype_name,
        "logits_dtype": "float32",
        "vocab_size": d.vocab,
        "max_position_embeddings": config.raw.get("max_position_embeddings"),
        "hidden_size": d.hidden,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_size": d.head_dim,
        "intermediate_size": d.inter,
        "norm_epsilon": config.raw.get("rms_norm_eps").cloned().unwrap_or(json!(1e-5)),
        "position_embedding_type": "rope_gpt_neox",
        "hidden_act": "silu",
        "rotary_base": config.raw.get("rope_theta").cloned().unwrap_or(json!(10000.0)),
        "rotary_scaling": config.raw.get("rope_scaling").cloned().unwrap_or(Value::Null),
        "use_parallel_embedding": false,
        "embedding_sharding_dim": 0,
        "tie_word_embeddings": config.tie_word_embeddings,
        "mapping": {"world_size": d.t, "tp_size": d.t, "pp_size": 1},
        "quantization": {"quant_algo": algo, "kv_cache_quant_algo": null},
    });
    if let Some(w) = config.raw.get("sliding_window").filter(|w| !w.is_null()) {
        trt_config["sliding_window"] = w.clone();
    }
    let path = out.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&trt_config).expect("json") + "\n",
    )
    .at(&path)?;
    files.push("config.json".into());

    let o = &pass.options.trtllm;
    let mut command = vec![
        "trtllm-build".to_string(),
        "--checkpoint_dir".into(),
        ".".into(),
        "--output_dir".into(),
        "engines".into(),
        "--max_input_len".into(),
        o.max_input_len.to_string(),
        "--max_seq_len".into(),
        o.max_seq_len().to_string(),
        "--max_num_tokens".into(),
        o.max_num_tokens.to_string(),
        "--max_batch_size".into(),
        o.max_batch_size.to_string(),
        "--gemm_plugin".into(),
        "auto".into(),
    ];
    let cc = pass
        .instance
        .accelerator
        .compute_capability()
        .map(|(major, minor)| u32::from(major) * 10 + u32::from(minor));
    if algo == Some("FP8") && cc.is_some_and(|c| c >= 89) {
        command.extend(["--use_fp8_context_fmha".into(), "enable".into()]);
    }
    let build_tool = on_path("trtllm-build");
    let engines = match &build_tool {
        None => "not built: trtllm-build is not on this host's PATH (it needs TensorRT-LLM and a \
                 GPU of the target's architecture); the LMI TensorRT-LLM image builds the engine \
                 from this checkpoint once when it loads it, or run the command in \
                 trtllm-build.json on a GPU of the instance's kind"
            .to_string(),
        Some(tool) => {
            let status = std::process::Command::new(tool)
                .args(&command[1..])
                .current_dir(out)
                .status()
                .at(tool)?;
            if !status.success() {
                return Err(plan_error(format!(
                    "trtllm-build ({}) failed ({status}) building the engines; its output is above",
                    tool.display()
                )));
            }
            for e in std::fs::read_dir(out.join("engines"))
                .at(&out.join("engines"))?
                .flatten()
            {
                files.push(format!("engines/{}", e.file_name().to_string_lossy()));
            }
            format!("built with {} into engines/", tool.display())
        }
    };
    let settings = json!({
        "trtllm_version_followed": "0.21 (LMI 0.33.0-tensorrtllm0.21.0-cu128)",
        "compute_capability": cc.map(|c| format!("sm_{c}")),
        "command": command,
        "max_input_len": o.max_input_len,
        "max_output_len": o.max_output_len,
        "max_seq_len": o.max_seq_len(),
        "max_num_tokens": o.max_num_tokens,
        "max_batch_size": o.max_batch_size,
        "engines": engines,
    });
    let path = out.join("trtllm-build.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&settings).expect("json") + "\n",
    )
    .at(&path)?;
    files.push("trtllm-build.json".into());

    let mut props = BTreeMap::new();
    for (k, v) in [
        ("option.rolling_batch", "trtllm".to_string()),
        ("option.tensor_parallel_degree", d.t.to_string()),
        ("option.max_input_len", o.max_input_len.to_string()),
        // LMI 0.33 hands every option to trtllm-build, which has no max_output_len: the
        // sequence length carries it.
        ("option.max_seq_len", o.max_seq_len().to_string()),
        ("option.max_num_tokens", o.max_num_tokens.to_string()),
        (
            "option.max_rolling_batch_size",
            o.max_batch_size.to_string(),
        ),
    ] {
        props.insert(k.to_string(), v);
    }
    let report = json!({
        "engine": "TensorRT-LLM",
        "format": "TensorRT-LLM checkpoint (config.json + rank{r}.safetensors)",
        "quant_algo": algo,
        "dtype": dtype_name,
        "tensor_parallel_degree": d.t,
        "padded_vocab": d.padded_vocab(),
        "kv_rows_per_rank": d.kv_rows_per_rank(),
        "rank_bytes": rank_bytes,
        "build": settings,
    });
    Ok((files, report, props))
}
