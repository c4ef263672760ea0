//! Loading a pre-sharded artifact (vLLM's `sharded_state` layout, as temper's shard pass
//! writes it): the rank files are checked against `manifest.json` (present, SHA-256 equal,
//! no stray rank files), and each rank reads only its own files.

use super::{Rank, RankHead};
use crate::error::{Result, RuntimeError};
use crate::layer::Layer;
use crate::linear::ActQuant;
use crate::load::{self, LoadedLinear};
use crate::model::{norm, projection, LoadOptions};
use crate::params::ModelParams;
use std::path::{Path, PathBuf};
use temper_core::checkpoint::Checkpoint;
use temper_format::quant_config::{InputActivations, LinearScheme, QuantConfig};
use temper_format::sharded::{self, Dims};
use temper_kernels::matmul::{Matrix, Weights};

/// The rank files of a sharded artifact, from its manifest.
pub struct RankFiles {
    pub degree: usize,
    /// Per rank: `(file name, sha256)`.
    pub files: Vec<Vec<(String, String)>>,
}

/// Whether `dir` holds a pre-sharded artifact (any rank file).
pub fn is_sharded(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| sharded::parse_rank_file_name(&e.file_name().to_string_lossy()).is_some())
    })
}

fn layout_error(dir: &Path, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Format(temper_format::FormatError::Layout {
        path: dir.to_path_buf(),
        detail: detail.into(),
    })
}

/// Reads the manifest's `sharding` section and checks every rank file against it.
pub fn check_rank_files(dir: &Path) -> Result<RankFiles> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        layout_error(
            dir,
            format!("holds rank files but manifest.json cannot be read ({e}); the manifest lists each rank's files and their SHA-256, copy the complete artifact"),
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| layout_error(&manifest_path, format!("is not valid JSON: {e}")))?;
    let sharding = &manifest["sharding"];
    let degree = sharding["tensor_parallel_degree"]
        .as_u64()
        .filter(|&d| d > 0)
        .ok_or_else(|| {
            layout_error(
                &manifest_path,
                "has no sharding.tensor_parallel_degree; it was not written for a sharded artifact",
            )
        })? as usize;
    let mut files = vec![Vec::new(); degree];
    for r in sharding["ranks"].as_array().into_iter().flatten() {
        let rank = r["rank"].as_u64().unwrap_or(u64::MAX) as usize;
        for f in r["files"].as_array().into_iter().flatten() {
            let (Some(path), Some(sha)) = (f["path"].as_str(), f["sha256"].as_str()) else {
                return Err(layout_error(
                    &manifest_path,
                    "a rank file entry lacks path or sha256",
                ));
            };
            let slot = files.get_mut(rank).ok_or_else(|| {
                layout_error(
                    &manifest_path,
                    format!("lists {path} for rank {rank} of a degree-{degree} artifact"),
                )
            })?;
            slot.push((path.to_string(), sha.to_string()));
        }
    }
    let listed: Vec<&str> = files.iter().flatten().map(|(p, _)| p.as_str()).collect();
    for entry in std::fs::read_dir(dir).map_err(|e| layout_error(dir, e.to_string()))? {
        let name = entry
            .map_err(|e| layout_error(dir, e.to_string()))?
            .file_name();
        let name = name.to_string_lossy();
        if sharded::parse_rank_file_name(&name).is_some() && !listed.contains(&name.as_ref()) {
            return Err(layout_error(
                dir,
                format!("{name} is not listed in manifest.json: rank files of different jobs are mixed; copy the artifact again from one job"),
            ));
        }
    }
    let checks: Vec<(PathBuf, String)> = files
        .iter()
        .flatten()
        .map(|(p, sha)| (dir.join(p), sha.clone()))
        .collect();
    use rayon::prelude::*;
    checks.par_iter().try_for_each(|(path, want)| -> Result<()> {
        if !path.is_file() {
            return Err(layout_error(
                dir,
                format!("{} is missing; every rank's files are needed (copy the complete artifact)", path.display()),
            ));
        }
        let (got, _) = temper_core::hash::sha256_file_unless(path, &|| false)?
            .expect("never stopped");
        if &got != want {
            return Err(layout_error(
                dir,
                format!(
                    "{} has SHA-256 {got}, but manifest.json says {want}: the file is corrupt or comes from another job; copy the artifact again",
                    path.display()
                ),
            ));
        }
        Ok(())
    })?;
    Ok(RankFiles { degree, files })
}

/// The parameters one rank runs with: its share of the heads and of the MLP.
pub fn rank_params(full: &ModelParams, dims: &Dims) -> ModelParams {
    let mut p = full.clone();
    p.num_heads = dims.heads_per_rank();
    p.num_kv_heads = dims.kv_heads_per_rank();
    p.intermediate_size = dims.intermediate_per_rank();
    p
}

/// Loads rank `rank` from its own files only.
pub fn load_rank(
    dir: &Path,
    rank: usize,
    files: &[(String, String)],
    full: &ModelParams,
    dims: &Dims,
    opts: &LoadOptions,
) -> Result<Rank> {
    let names: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let ckpt = Checkpoint::open_files(dir, &names)?;
    let quant = QuantConfig::from_config(&ckpt.config)?;
    let p = rank_params(full, dims);
    let (h, d) = (p.hidden_size, p.head_dim);
    let scheme = |member: &str| -> LinearScheme {
        quant
            .as_ref()
            .map_or(LinearScheme::DENSE, |q| q.scheme_for(member))
    };
    // `members`: the rows of each fused member on this rank (their per-tensor scales are
    // stacked one per member). Row-parallel biases are added once, after the sum: only
    // rank 0 keeps them.
    let linear = |name: String,
                  member: String,
                  members: &[usize],
                  cols: usize,
                  row_parallel: bool|
     -> Result<(String, LoadedLinear)> {
        let rows = members.iter().sum();
        let s = scheme(&member);
        let mut l = if s.inputs == InputActivations::Fp8Static {
            static_fp8(&ckpt, &name, members, cols)?
        } else {
            load::load_linear(&ckpt, &name, rows, cols, s)?
        };
        if row_parallel && rank > 0 {
            l.bias = None;
        }
        Ok((name, l))
    };
    let mut layers = Vec::with_capacity(p.num_layers);
    for i in 0..p.num_layers {
        let at = |m: &str| format!("model.layers.{i}.self_attn.{m}");
        let mlp = |m: &str| format!("model.layers.{i}.mlp.{m}");
        let (q, kv, f) = (p.num_heads * d, p.num_kv_heads * d, p.intermediate_size);
        layers.push(Layer {
            input_norm: norm(
                &ckpt,
                &format!("model.layers.{i}.input_layernorm.weight"),
                h,
            )?,
            post_attention_norm: norm(
                &ckpt,
                &format!("model.layers.{i}.post_attention_layernorm.weight"),
                h,
            )?,
            qkv: projection(
                vec![linear(
                    at("qkv_proj"),
                    at("q_proj"),
                    &[q, kv, kv],
                    h,
                    false,
                )?],
                opts,
            )?,
            o: projection(
                vec![linear(at("o_proj"), at("o_proj"), &[h], q, true)?],
                opts,
            )?,
            gate_up: projection(
                vec![linear(
                    mlp("gate_up_proj"),
                    mlp("gate_proj"),
                    &[f, f],
                    h,
                    false,
                )?],
                opts,
            )?,
            down: projection(
                vec![linear(mlp("down_proj"), mlp("down_proj"), &[h], f, true)?],
                opts,
            )?,
        });
    }
    let per = dims.vocab_per_rank();
    let head_table = load::dense_matrix(&ckpt, sharded::TIED_EMBEDDING_NAME, per, h)?;
    let (embed, lm_head) = if p.tie_word_embeddings {
        let tied = LoadedLinear {
            matrix: head_table,
            bias: None,
            act: ActQuant::None,
        };
        (None, projection(vec![("lm_head".into(), tied)], opts)?)
    } else {
        let embed = load::dense_matrix(&ckpt, "model.embed_tokens.weight", per, h)?;
        let l = LoadedLinear {
            matrix: head_table,
            bias: None,
            act: ActQuant::None,
        };
        (Some(embed), projection(vec![("lm_head".into(), l)], opts)?)
    };
    let head = RankHead {
        embed,
        norm: norm(&ckpt, "model.norm.weight", h)?,
        lm_head,
        vocab_start: rank * per,
    };
    let bytes_read = ckpt.bytes_read();
    let file_bytes = ckpt.total_tensor_bytes();
    Ok(Rank {
        params: p,
        layers,
        head,
        bytes_read,
        tensor_bytes: file_bytes,
    })
}

/// A static-FP8 Linear of a sharded artifact: FP8 weights with one weight scale and one input
/// scale per fused member (`[members]`, as vLLM's per-tensor parameters hold them before
/// processing). Each member's rows keep their own weight scale, and the input is quantized
/// with the largest input scale, as the unsharded runtime does when it fuses the members.
fn static_fp8(
    ckpt: &Checkpoint,
    prefix: &str,
    members: &[usize],
    cols: usize,
) -> Result<LoadedLinear> {
    let rows: usize = members.iter().sum();
    let name = format!("{prefix}.weight");
    let e = ckpt.get(&name).ok_or_else(|| RuntimeError::Tensor {
        path: ckpt.dir.clone(),
        tensor: name.clone(),
        reason: "is missing from this rank's files".into(),
    })?;
    if e.dtype != safetensors::Dtype::F8_E4M3 || e.shape != [rows, cols] {
        return Err(RuntimeError::Tensor {
            path: ckpt.file_of(e).to_path_buf(),
            tensor: name,
            reason: format!(
                "is {} {:?}; static FP8 needs F8_E4M3 [{rows}, {cols}]",
                e.dtype, e.shape
            ),
        });
    }
    let codes = ckpt.bytes(e).to_vec();
    if let Some(i) = codes.iter().position(|&c| c & 0x7F == 0x7F) {
        return Err(RuntimeError::Tensor {
            path: ckpt.file_of(e).to_path_buf(),
            tensor: name,
            reason: format!(
                "row {}, column {} holds the FP8 NaN code; the checkpoint is corrupt",
                i / cols,
                i % cols
            ),
        });
    }
    let m = members.len();
    let weight_scales = load::float_tensor(ckpt, &format!("{prefix}.weight_scale"), &[m])?;
    let input_scales = load::float_tensor(ckpt, &format!("{prefix}.input_scale"), &[m])?;
    let input = input_scales.iter().copied().fold(0f32, f32::max);
    if !(input.is_finite() && input > 0.0)
        || weight_scales.iter().any(|s| !(s.is_finite() && *s >= 0.0))
    {
        return Err(RuntimeError::Tensor {
            path: ckpt.dir.clone(),
            tensor: format!("{prefix}.weight_scale / input_scale"),
            reason: format!(
                "scales {weight_scales:?} / {input_scales:?} must be finite and positive"
            ),
        });
    }
    let scales: Vec<f32> = members
        .iter()
        .zip(&weight_scales)
        .flat_map(|(&n, &s)| std::iter::repeat_n(s, n))
        .collect();
    let matrix = Matrix::new(
        rows,
        cols,
        Weights::Fp8 {
            codes,
            scales,
            group: cols,
        },
    )?;
    let bias = match ckpt.get(&format!("{prefix}.bias")) {
        Some(_) => Some(load::float_tensor(
            ckpt,
            &format!("{prefix}.bias"),
            &[rows],
        )?),
        None => None,
    };
    Ok(LoadedLinear {
        matrix,
        bias,
        act: ActQuant::Fp8Static { scale: input },
    })
}
