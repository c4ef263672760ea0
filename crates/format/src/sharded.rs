//! vLLM's pre-sharded tensor-parallel layout, read by `load_format=sharded_state`
//! (`ShardedStateLoader`): per rank `r`, files `model-rank-{r}-part-{p}.safetensors` holding
//! exactly the parameters of vLLM's model on that rank, under vLLM's own names.
//!
//! Followed from vLLM's source (version and files in ARCHITECTURE.md): Megatron-style
//! splits for Llama-family models with degree `N`:
//! - `q_proj`, `k_proj`, `v_proj` fuse into `qkv_proj` (rows: this rank's q heads, then its
//!   k heads, then its v heads); `gate_proj`, `up_proj` into `gate_up_proj` (gate rows, then
//!   up rows): column-parallel, split along the output rows;
//! - `o_proj`, `down_proj`: row-parallel, split along the input columns (the engine sums the
//!   ranks' partial outputs);
//! - `embed_tokens` and `lm_head`: vocab-parallel, the vocabulary padded to a multiple of 64
//!   and split in equal row ranges (padding rows are zeros); with tied embeddings the one
//!   table is stored as `lm_head.weight`, the name vLLM keeps of two that share storage;
//! - norms replicated;
//! - with more ranks than key/value heads, each kv head is replicated on `N / kv_heads`
//!   consecutive ranks (rank `r` holds kv head `r / (N / kv_heads)`);
//! - quantized weights shard with their scales: per-channel and group scales follow the rows
//!   of a column-parallel split, group and block scales follow the columns of a row-parallel
//!   one, per-channel and per-tensor scales of a row-parallel layer are replicated; per-tensor
//!   scales of fused members stack into one `[members]` tensor; `weight_shape` holds the
//!   rank's own `[rows, cols]`.

use serde::{Deserialize, Serialize};
use temper_core::config::ModelConfig;
use temper_core::writer::TensorSpec;

/// vLLM pads the vocabulary of its embedding and LM head to a multiple of this.
pub const VOCAB_PADDING: usize = 64;

/// The file of rank `rank`, part `part` (parts are numbered from 0).
pub fn rank_file_name(rank: usize, part: usize) -> String {
    format!("model-rank-{rank}-part-{part}.safetensors")
}

/// The rank and part of a rank file name, if it is one.
pub fn parse_rank_file_name(name: &str) -> Option<(usize, usize)> {
    let rest = name
        .strip_prefix("model-rank-")?
        .strip_suffix(".safetensors")?;
    let (rank, part) = rest.split_once("-part-")?;
    Some((rank.parse().ok()?, part.parse().ok()?))
}

/// The name the tied embedding table is stored under.
pub const TIED_EMBEDDING_NAME: &str = "lm_head.weight";

/// The model dimensions a split depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub tie_word_embeddings: bool,
    pub degree: usize,
}

impl Dims {
    pub fn new(config: &ModelConfig, degree: usize) -> Self {
        Dims {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
            tie_word_embeddings: config.tie_word_embeddings,
            degree,
        }
    }

    /// Query heads per rank.
    pub fn heads_per_rank(&self) -> usize {
        self.heads / self.degree
    }

    /// Key/value heads per rank (1 when replicated).
    pub fn kv_heads_per_rank(&self) -> usize {
        (self.kv_heads / self.degree).max(1)
    }

    /// The first key/value head rank `rank` holds.
    pub fn first_kv_head(&self, rank: usize) -> usize {
        if self.degree >= self.kv_heads {
            rank / (self.degree / self.kv_heads)
        } else {
            rank * self.kv_heads_per_rank()
        }
    }

    pub fn intermediate_per_rank(&self) -> usize {
        self.intermediate / self.degree
    }

    /// The padded vocabulary (a multiple of [`VOCAB_PADDING`]).
    pub fn padded_vocab(&self) -> usize {
        self.vocab.div_ceil(VOCAB_PADDING) * VOCAB_PADDING
    }

    /// Embedding rows per rank.
    pub fn vocab_per_rank(&self) -> usize {
        self.padded_vocab() / self.degree
    }

    /// Why this split cannot be made, if it cannot.
    pub fn problem(&self) -> Option<String> {
        degree_problem(
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            self.degree,
        )
    }
}

/// Why a model cannot be split `d` ways, if it cannot (vLLM's rules: heads divide; kv heads
/// divide the degree or are divisible by it, replicated when fewer than the ranks; the MLP's
/// intermediate size divides; the vocabulary padded to a multiple of 64 divides).
pub fn degree_problem(
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    vocab: usize,
    d: usize,
) -> Option<String> {
    if d == 0 {
        return Some("a degree of 0 splits the model over no device".into());
    }
    if !heads.is_multiple_of(d) {
        return Some(format!("the {heads} attention heads do not divide by {d}"));
    }
    if d > kv_heads && !d.is_multiple_of(kv_heads) {
        return Some(format!(
            "{d} ranks cannot share {kv_heads} key/value heads (each kv head is replicated on \
             degree / kv_heads ranks, so the degree must be a multiple of {kv_heads})"
        ));
    }
    if d <= kv_heads && !kv_heads.is_multiple_of(d) {
        return Some(format!(
            "the {kv_heads} key/value heads do not divide by {d}"
        ));
    }
    if !intermediate.is_multiple_of(d) {
        return Some(format!(
            "the MLP's intermediate size {intermediate} does not divide by {d}"
        ));
    }
    let padded = vocab.div_ceil(VOCAB_PADDING) * VOCAB_PADDING;
    if !padded.is_multiple_of(d) {
        return Some(format!(
            "the vocabulary of {vocab} tokens, padded to {padded} as vLLM pads it, does not \
             divide by {d}"
        ));
    }
    None
}

/// What a piece of a rank tensor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Bytes of the source tensor: the range `range` along `dim` (the whole tensor when
    /// `dim` is `None`), placed at `at` along the same dimension of the target (for a
    /// per-tensor scale of a fused member, `at` is the member's index).
    Copy {
        dim: Option<usize>,
        range: [usize; 2],
        at: usize,
    },
    /// A `weight_shape` tensor: the rank's own `[rows, cols]`, not the source's.
    Shape { rows: usize, cols: usize },
}

/// One source tensor's contribution to one rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub rank: usize,
    /// The rank tensor it goes into (vLLM's name).
    pub target: String,
    #[serde(flatten)]
    pub content: Content,
}

/// How one source tensor is split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSplit {
    pub source: String,
    pub pieces: Vec<Piece>,
}

/// The whole layout: every rank's tensors and where each source tensor goes.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dims: Dims,
    /// Per rank, its tensors in the order they are first met in the source.
    pub ranks: Vec<Vec<TensorSpec>>,
    /// In source order.
    pub sources: Vec<SourceSplit>,
}

/// A tensor the layout cannot place, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub tensor: String,
    pub reason: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Member `index` of a fused column-parallel layer.
    Column {
        index: usize,
        members: usize,
    },
    Row,
    Vocab,
    Replicated,
}

/// Where a module of a decoder layer goes: its fused name and kind.
fn module_kind(module: &str) -> Option<(String, Kind)> {
    let (parent, leaf) = module.rsplit_once('.')?;
    let column = |fused: &str, index, members| {
        Some((format!("{parent}.{fused}"), Kind::Column { index, members }))
    };
    match leaf {
        "q_proj" => column("qkv_proj", 0, 3),
        "k_proj" => column("qkv_proj", 1, 3),
        "v_proj" => column("qkv_proj", 2, 3),
        "gate_proj" => column("gate_up_proj", 0, 2),
        "up_proj" => column("gate_up_proj", 1, 2),
        "o_proj" | "down_proj" => Some((module.to_string(), Kind::Row)),
        _ => None,
    }
}

impl Dims {
    /// Source rows of member `index` of a fused layer on `rank`, and the row where they land.
    fn member_rows(&self, leaf_fused: &str, index: usize, rank: usize) -> ([usize; 2], usize) {
        let d = self.head_dim;
        if leaf_fused == "qkv_proj" {
            let (q, kv) = (self.heads_per_rank() * d, self.kv_heads_per_rank() * d);
            match index {
                0 => ([rank * q, (rank + 1) * q], 0),
                i => {
                    let start = self.first_kv_head(rank) * d;
                    ([start, start + kv], q + (i - 1) * kv)
                }
            }
        } else {
            let f = self.intermediate_per_rank();
            ([rank * f, (rank + 1) * f], index * f)
        }
    }

    /// Rows of a fused layer on one rank.
    fn fused_rows(&self, leaf_fused: &str) -> usize {
        if leaf_fused == "qkv_proj" {
            (self.heads_per_rank() + 2 * self.kv_heads_per_rank()) * self.head_dim
        } else {
            2 * self.intermediate_per_rank()
        }
    }

    /// Full rows of a column member, and input columns of a row-parallel layer.
    fn member_full_rows(&self, leaf_fused: &str, index: usize) -> usize {
        match (leaf_fused, index) {
            ("qkv_proj", 0) => self.heads * self.head_dim,
            ("qkv_proj", _) => self.kv_heads * self.head_dim,
            _ => self.intermediate,
        }
    }

    fn row_parallel_cols(&self, module: &str) -> usize {
        if module.ends_with("o_proj") {
            self.heads * self.head_dim
        } else {
            self.intermediate
        }
    }
}

/// Plans the split of `tensors` (a checkpoint's tensors, in storage order) over
/// `dims.degree` ranks.
pub fn plan(tensors: &[TensorSpec], dims: Dims) -> Result<Layout, SplitError> {
    if let Some(reason) = dims.problem() {
        return Err(SplitError {
            tensor: "(model)".into(),
            reason,
        });
    }
    let mut planner = Planner {
        dims,
        ranks: vec![Vec::new(); dims.degree],
        sources: Vec::new(),
    };
    for t in tensors {
        planner.place(t)?;
    }
    planner.check_fused_complete(tensors)?;
    Ok(Layout {
        dims,
        ranks: planner.ranks,
        sources: planner.sources,
    })
}

struct Planner {
    dims: Dims,
    ranks: Vec<Vec<TensorSpec>>,
    sources: Vec<SourceSplit>,
}

impl Planner {
    /// Declares `spec` on `rank` (once; later members of a fused tensor find it there).
    fn declare(&mut self, rank: usize, spec: TensorSpec) -> Result<(), SplitError> {
        match self.ranks[rank].iter().find(|t| t.name == spec.name) {
            Some(existing) if existing.dtype != spec.dtype => Err(SplitError {
                tensor: spec.name.clone(),
                reason: format!(
                    "its fused members have different dtypes ({} and {}); vLLM fuses them into \
                     one parameter and refuses mixed formats",
                    existing.dtype, spec.dtype
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.ranks[rank].push(spec);
                Ok(())
            }
        }
    }

    fn place(&mut self, t: &TensorSpec) -> Result<(), SplitError> {
        let err = |reason: String| SplitError {
            tensor: t.name.clone(),
            reason,
        };
        let (module, suffix) = t.name.rsplit_once('.').unwrap_or((&t.name, ""));
        let kind = if t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight" {
            (t.name.clone(), Kind::Vocab)
        } else if let Some(k) = module_kind(module) {
            k
        } else if t.shape.len() <= 1 && module.contains("norm") {
            (t.name.clone(), Kind::Replicated)
        } else {
            return Err(err(format!(
                "shape {:?}: temper does not know how vLLM shards this tensor (it shards the \
                 Llama, Mistral and Qwen2 layouts: attention, MLP, norms, embeddings)",
                t.shape
            )));
        };
        let (target_module, kind) = kind;
        let pieces = match kind {
            Kind::Vocab => self.vocab(t)?,
            Kind::Replicated => self.replicate(t, t.name.clone(), t.shape.clone())?,
            Kind::Column { index, members } => {
                self.column(t, &target_module, suffix, index, members)?
            }
            Kind::Row => self.row(t, module, suffix)?,
        };
        self.sources.push(SourceSplit {
            source: t.name.clone(),
            pieces,
        });
        Ok(())
    }

    fn replicate(
        &mut self,
        t: &TensorSpec,
        target: String,
        shape: Vec<usize>,
    ) -> Result<Vec<Piece>, SplitError> {
        let mut pieces = Vec::new();
        for rank in 0..self.dims.degree {
            self.declare(
                rank,
                TensorSpec::new(target.clone(), t.dtype, shape.clone()),
            )?;
            pieces.push(Piece {
                rank,
                target: target.clone(),
                content: Content::Copy {
                    dim: None,
                    range: [0, t.shape.first().copied().unwrap_or(1)],
                    at: 0,
                },
            });
        }
        Ok(pieces)
    }

    fn vocab(&mut self, t: &TensorSpec) -> Result<Vec<Piece>, SplitError> {
        let d = self.dims;
        if t.shape.len() != 2 || t.shape[0] != d.vocab {
            return Err(SplitError {
                tensor: t.name.clone(),
                reason: format!(
                    "has shape {:?}, but config.json says vocab_size {}",
                    t.shape, d.vocab
                ),
            });
        }
        let target = if t.name == "model.embed_tokens.weight" && d.tie_word_embeddings {
            TIED_EMBEDDING_NAME.to_string()
        } else {
            t.name.clone()
        };
        let per = d.vocab_per_rank();
        let mut pieces = Vec::new();
        for rank in 0..d.degree {
            self.declare(
                rank,
                TensorSpec::new(target.clone(), t.dtype, vec![per, t.shape[1]]),
            )?;
            let (start, end) = (rank * per, ((rank + 1) * per).min(d.vocab));
            pieces.push(Piece {
                rank,
                target: target.clone(),
                content: Content::Copy {
                    dim: Some(0),
                    range: [start.min(end), end],
                    at: 0,
                },
            });
        }
        Ok(pieces)
    }

    fn column(
        &mut self,
        t: &TensorSpec,
        fused_module: &str,
        suffix: &str,
        index: usize,
        members: usize,
    ) -> Result<Vec<Piece>, SplitError> {
        let d = self.dims;
        let fused_leaf = fused_module.rsplit('.').next().unwrap_or("");
        let full_rows = d.member_full_rows(fused_leaf, index);
        let target = format!("{fused_module}.{suffix}");
        let fused_rows = d.fused_rows(fused_leaf);
        let bad = |reason: String| SplitError {
            tensor: t.name.clone(),
            reason,
        };
        let mut pieces = Vec::new();
        for rank in 0..d.degree {
            let (rows, at) = d.member_rows(fused_leaf, index, rank);
            let (shape, content) = match suffix {
                "weight_shape" => {
                    if index != 0 {
                        continue; // the fused tensor's shape is written once, from member 0
                    }
                    (
                        vec![2],
                        Content::Shape {
                            rows: fused_rows,
                            cols: d.hidden,
                        },
                    )
                }
                "input_scale" => per_tensor(t, members, index).map_err(bad)?,
                "weight_scale" if t.shape.iter().product::<usize>() == 1 => {
                    per_tensor(t, members, index).map_err(bad)?
                }
                _ if t.shape.first() == Some(&full_rows) => {
                    let mut shape = t.shape.clone();
                    shape[0] = fused_rows;
                    (
                        shape,
                        Content::Copy {
                            dim: Some(0),
                            range: rows,
                            at,
                        },
                    )
                }
                // Block scales (one row per 128 weight rows) and INT4 zero points (eight weight
                // rows per int32 row): whole units per rank, or no split.
                "weight_scale" | "weight_zero_point"
                    if t.shape.len() == 2 && t.shape[0] == full_rows.div_ceil(unit(suffix)) =>
                {
                    let u = unit(suffix);
                    if !(rows[0].is_multiple_of(u)
                        && (rows[1] - rows[0]).is_multiple_of(u)
                        && at.is_multiple_of(u)
                        && fused_rows.is_multiple_of(u))
                    {
                        return Err(bad(format!(
                            "{} of shape {:?} cannot follow rows {}..{} on rank {rank}: each \
                             rank's rows must be whole {u}-row units; choose a tensor-parallel \
                             degree that keeps them whole",
                            if u == 8 {
                                "zero points packed eight rows per int32"
                            } else {
                                "block scales"
                            },
                            t.shape,
                            rows[0],
                            rows[1]
                        )));
                    }
                    (
                        vec![fused_rows / u, t.shape[1]],
                        Content::Copy {
                            dim: Some(0),
                            range: [rows[0] / u, rows[1] / u],
                            at: at / u,
                        },
                    )
                }
                _ => {
                    return Err(bad(format!(
                    "has shape {:?}; a column-parallel `{suffix}` of this layer needs {full_rows} \
                         rows (check config.json's head and intermediate sizes)",
                    t.shape
                )))
                }
            };
            self.declare(rank, TensorSpec::new(target.clone(), t.dtype, shape))?;
            pieces.push(Piece {
                rank,
                target: target.clone(),
                content,
            });
        }
        Ok(pieces)
    }

    fn row(
        &mut self,
        t: &TensorSpec,
        module: &str,
        suffix: &str,
    ) -> Result<Vec<Piece>, SplitError> {
        let d = self.dims;
        let cols = d.row_parallel_cols(module);
        let per = cols / d.degree;
        let target = t.name.clone();
        let bad = |reason: String| SplitError {
            tensor: t.name.clone(),
            reason,
        };
        // Columns of this tensor per weight column: 1 for weights, 1/4 or 1/8 packed, 1/g group
        // scales and zero points, 1/128 block scales; `None` for tensors replicated on every
        // rank.
        let split_cols = match suffix {
            "weight" | "weight_packed" | "weight_scale" | "weight_zero_point"
                if t.shape.len() == 2 && t.shape[1] > 1 =>
            {
                let stored = t.shape[1];
                if !cols.is_multiple_of(stored) {
                    return Err(bad(format!(
                        "has {stored} columns, which do not evenly cover the layer's {cols} inputs"
                    )));
                }
                let step = cols / stored;
                if !per.is_multiple_of(step) {
                    return Err(bad(format!(
                        "each rank gets {per} input columns, not a whole number of this tensor's \
                         {step}-column units (packing, scale group or block): choose a degree that \
                         keeps them whole"
                    )));
                }
                Some(per / step)
            }
            "weight_shape" => None,
            _ => None,
        };
        let mut pieces = Vec::new();
        for rank in 0..d.degree {
            let (shape, content) = match (suffix, split_cols) {
                ("weight_shape", _) => (
                    vec![2],
                    Content::Shape {
                        rows: d.hidden,
                        cols: per,
                    },
                ),
                (_, Some(c)) => (
                    vec![t.shape[0], c],
                    Content::Copy {
                        dim: Some(1),
                        range: [rank * c, (rank + 1) * c],
                        at: 0,
                    },
                ),
                (_, None) => (
                    t.shape.clone(),
                    Content::Copy {
                        dim: None,
                        range: [0, t.shape.first().copied().unwrap_or(1)],
                        at: 0,
                    },
                ),
            };
            self.declare(rank, TensorSpec::new(target.clone(), t.dtype, shape))?;
            pieces.push(Piece {
                rank,
                target: target.clone(),
                content,
            });
        }
        Ok(pieces)
    }

    /// Every fused tensor's rows are covered by its members (a missing `k_proj` would leave
    /// a hole vLLM would read as zeros).
    fn check_fused_complete(&self, tensors: &[TensorSpec]) -> Result<(), SplitError> {
        for t in tensors {
            let (module, suffix) = t.name.rsplit_once('.').unwrap_or((&t.name, ""));
            let Some((fused, Kind::Column { members, .. })) = module_kind(module) else {
                continue;
            };
            let parent = module.rsplit_once('.').map(|p| p.0).unwrap_or("");
            let leaves: &[&str] = if members == 3 {
                &["q_proj", "k_proj", "v_proj"]
            } else {
                &["gate_proj", "up_proj"]
            };
            for leaf in leaves {
                let name = format!("{parent}.{leaf}.{suffix}");
                if !tensors.iter().any(|o| o.name == name) {
                    return Err(SplitError {
                        tensor: t.name.clone(),
                        reason: format!(
                            "vLLM fuses it into `{fused}.{suffix}` with `{name}`, which the \
                             checkpoint lacks"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Weight rows per stored row of a column-parallel `suffix` stored in units: 128 for block
/// scales, 8 for INT4 zero points (packed eight per int32 along the output dimension).
fn unit(suffix: &str) -> usize {
    if suffix == "weight_zero_point" {
        8
    } else {
        128
    }
}

/// A per-tensor scale of fused member `index`: one element of a `[members]` tensor.
fn per_tensor(
    t: &TensorSpec,
    members: usize,
    index: usize,
) -> Result<(Vec<usize>, Content), String> {
    if t.shape.iter().product::<usize>() != 1 {
        return Err(format!(
            "has shape {:?}; a per-tensor scale holds one value",
            t.shape
        ));
    }
    Ok((
        vec![members],
        Content::Copy {
            dim: None,
            range: [0, 1],
            at: index,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn dims(degree: usize, kv_heads: usize) -> Dims {
        Dims {
            hidden: 8,
            heads: 4,
            kv_heads,
            head_dim: 2,
            intermediate: 12,
            vocab: 100,
            tie_word_embeddings: true,
            degree,
        }
    }

    fn layer(kv: usize) -> Vec<TensorSpec> {
        let f = |n: &str, s: Vec<usize>| TensorSpec::new(n, Dtype::F32, s);
        vec![
            f("model.embed_tokens.weight", vec![100, 8]),
            f("model.layers.0.input_layernorm.weight", vec![8]),
            f("model.layers.0.self_attn.q_proj.weight", vec![8, 8]),
            f("model.layers.0.self_attn.k_proj.weight", vec![kv * 2, 8]),
            f("model.layers.0.self_attn.v_proj.weight", vec![kv * 2, 8]),
            f("model.layers.0.self_attn.o_proj.weight", vec![8, 8]),
            f("model.layers.0.mlp.gate_proj.weight", vec![12, 8]),
            f("model.layers.0.mlp.up_proj.weight", vec![12, 8]),
            f("model.layers.0.mlp.down_proj.weight", vec![8, 12]),
            f("model.norm.weight", vec![8]),
        ]
    }

    #[test]
    fn names_shapes_and_ranges_follow_vllm() {
        let l = plan(&layer(2), dims(2, 2)).unwrap();
        let names: Vec<_> = l.ranks[1]
            .iter()
            .map(|t| (t.name.as_str(), t.shape.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("lm_head.weight", vec![64, 8]),
                ("model.layers.0.input_layernorm.weight", vec![8]),
                ("model.layers.0.self_attn.qkv_proj.weight", vec![8, 8]),
                ("model.layers.0.self_attn.o_proj.weight", vec![8, 4]),
                ("model.layers.0.mlp.gate_up_proj.weight", vec![12, 8]),
                ("model.layers.0.mlp.down_proj.weight", vec![8, 6]),
                ("model.norm.weight", vec![8]),
            ]
        );
        let v = &l.sources[4];
        assert_eq!(
            v.pieces[1].content,
            Content::Copy {
                dim: Some(0),
                range: [2, 4],
                at: 6
            }
        );
        // Rank 1 holds vocab rows 64..100 and zero padding after.
        assert_eq!(
            l.sources[0].pieces[1].content,
            Content::Copy {
                dim: Some(0),
                range: [64, 100],
                at: 0
            }
        );
        let up = &l.sources[7];
        assert_eq!(
            up.pieces[1].content,
            Content::Copy {
                dim: Some(0),
                range: [6, 12],
                at: 6
            }
        );
    }

    #[test]
    fn kv_heads_replicate_over_more_ranks() {
        let l = plan(&layer(1), dims(4, 1)).unwrap();
        for rank in 0..4 {
            let k = &l.sources[3].pieces[rank];
            assert_eq!(
                k.content,
                Content::Copy {
                    dim: Some(0),
                    range: [0, 2],
                    at: 2
                }
            );
        }
        let err = plan(&layer(2), dims(3, 2)).unwrap_err();
        assert!(err.reason.contains("attention heads"), "{err:?}");
    }

    #[test]
    fn missing_fused_member_is_named() {
        let mut t = layer(2);
        t.remove(4);
        let err = plan(&t, dims(2, 2)).unwrap_err();
        assert!(err.reason.contains("v_proj.weight"), "{err:?}");
    }

    #[test]
    fn rank_file_names_round_trip() {
        assert_eq!(rank_file_name(2, 0), "model-rank-2-part-0.safetensors");
        assert_eq!(
            parse_rank_file_name("model-rank-12-part-3.safetensors"),
            Some((12, 3))
        );
        assert_eq!(parse_rank_file_name("model.safetensors"), None);
    }
}
