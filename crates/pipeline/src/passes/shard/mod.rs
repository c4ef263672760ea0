//! The shard pass: a checkpoint (dense or compressed-tensors) split into vLLM's pre-sharded
//! tensor-parallel layout (`temper_format::sharded`), streamed tensor by tensor: each source
//! tensor is read once, its pieces are written straight to their places in every rank's files,
//! and its pages are released, so memory stays near one tensor whatever the model's size.

mod plan;

pub use plan::ShardPlan;

use super::{Pass, PassContext, PassOutput};
use crate::progress::Event;
use crate::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use temper_core::checkpoint::{Checkpoint, TensorEntry};
use temper_core::manifest::PassRecord;
use temper_core::writer::{dtype_bytes, ShardedWriter};
use temper_core::IoContext;
use temper_format::sharded::{self, Content, Piece, SourceSplit};

/// The `load_format` vLLM needs for this layout.
pub const LOAD_FORMAT: &str = "sharded_state";

/// One rank's files (SHA-256 filled in by the job once every output is hashed).
#[derive(Debug, Clone, Serialize)]
pub struct RankFiles {
    pub rank: usize,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// What the shard pass reports into the manifest's `sharding` section.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub tensor_parallel_degree: usize,
    pub load_format: &'static str,
    pub file_pattern: &'static str,
    pub padded_vocab: usize,
    pub ranks: Vec<RankFiles>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    /// Per source tensor: where each rank's piece comes from and goes.
    pub tensors: Vec<SourceSplit>,
}

pub struct ShardPass {
    pub plan: ShardPlan,
}

impl Pass for ShardPass {
    fn name(&self) -> &'static str {
        "shard"
    }

    fn run(&mut self, input: &Path, out: &Path, ctx: &mut PassContext) -> Result<PassOutput> {
        let started = std::time::Instant::now();
        let checkpoint = Checkpoint::open(input)?;
        self.check_input(&checkpoint)?;
        let layout = &self.plan.layout;
        let writers = layout
            .ranks
            .iter()
            .enumerate()
            .map(|(rank, tensors)| {
                ShardedWriter::create_named(
                    out,
                    tensors,
                    self.plan.max_file_bytes,
                    &|part, _| sharded::rank_file_name(rank, part),
                    false,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        (ctx.sink)(Event::Phase("shard"));
        (ctx.sink)(Event::Started {
            tensors: checkpoint.tensors().len(),
            bytes: checkpoint.total_tensor_bytes(),
        });
        let splits: HashMap<&str, &SourceSplit> = layout
            .sources
            .iter()
            .map(|s| (s.source.as_str(), s))
            .collect();
        for entry in checkpoint.tensors() {
            ctx.cancel.check()?;
            let split = splits[entry.name.as_str()];
            let bytes = checkpoint.bytes(entry);
            split.pieces.par_iter().try_for_each(|p| {
                write_piece(&checkpoint, entry, bytes, p, layout, &writers[p.rank])
            })?;
            checkpoint.release(entry);
            (ctx.sink)(Event::Tensor {
                name: &entry.name,
                bytes: entry.byte_len() as u64,
            });
        }
        let mut files = Vec::new();
        let mut ranks = Vec::new();
        for (rank, writer) in writers.into_iter().enumerate() {
            let names = writer.finish()?;
            let bytes = names
                .iter()
                .map(|n| {
                    std::fs::metadata(out.join(n))
                        .map(|m| m.len())
                        .at(&out.join(n))
                })
                .sum::<Result<u64, _>>()?;
            files.extend(names.iter().cloned());
            ranks.push(RankFiles {
                rank,
                files: names,
                bytes,
            });
        }
        let config = input.join("config.json");
        std::fs::copy(&config, out.join("config.json")).at(&config)?;
        files.push("config.json".into());
        // A draft head trained by an earlier pass travels with the model, unsharded.
        let head = input.join(crate::passes::speculative::HEAD_DIR);
        if head.is_dir() {
            for name in ["config.json", "model.safetensors"] {
                let dir = out.join(crate::passes::speculative::HEAD_DIR);
                std::fs::create_dir_all(&dir).at(&dir)?;
                std::fs::copy(head.join(name), dir.join(name)).at(&head.join(name))?;
                files.push(format!("{}/{name}", crate::passes::speculative::HEAD_DIR));
            }
        }
        let report = ShardReport {
            tensor_parallel_degree: layout.dims.degree,
            load_format: LOAD_FORMAT,
            file_pattern: "model-rank-{rank}-part-{part}.safetensors",
            padded_vocab: layout.dims.padded_vocab(),
            input_bytes: checkpoint.total_tensor_bytes(),
            output_bytes: ranks.iter().map(|r| r.bytes).sum(),
            ranks,
            seconds: started.elapsed().as_secs_f64(),
            tensors: layout.sources.clone(),
        };
        let summary = serde_json::json!({
            "tensor_parallel_degree": report.tensor_parallel_degree,
            "load_format": LOAD_FORMAT,
            "input_bytes": report.input_bytes,
            "output_bytes": report.output_bytes,
            "seconds": report.seconds,
            "rank_bytes": report.ranks.iter().map(|r| r.bytes).collect::<Vec<_>>(),
        });
        Ok(PassOutput {
            files,
            record: PassRecord {
                name: "shard".into(),
                options: serde_json::json!({
                    "tensor_parallel_degree": layout.dims.degree,
                    "max_file_bytes": self.plan.max_file_bytes,
                }),
                report: serde_json::to_value(&report).expect("report serialises"),
            },
            summary,
        })
    }
}

impl ShardPass {
    /// The checkpoint holds exactly the tensors the plan was made for.
    fn check_input(&self, checkpoint: &Checkpoint) -> Result<()> {
        for planned in &self.plan.inputs {
            let found = checkpoint.get(&planned.name);
            let ok = found.is_some_and(|e| e.dtype == planned.dtype && e.shape == planned.shape);
            if !ok {
                return Err(Error::Tensor {
                    path: checkpoint.dir.clone(),
                    tensor: planned.name.clone(),
                    reason: format!(
                        "the shard pass was planned for {} {:?}, but its input holds {}",
                        planned.dtype,
                        planned.shape,
                        found.map_or("nothing".to_string(), |e| format!(
                            "{} {:?}",
                            e.dtype, e.shape
                        ))
                    ),
                });
            }
        }
        if checkpoint.tensors().len() != self.plan.inputs.len() {
            return Err(Error::Plan(format!(
                "{} holds {} tensors but the shard pass was planned for {}",
                checkpoint.dir.display(),
                checkpoint.tensors().len(),
                self.plan.inputs.len()
            )));
        }
        Ok(())
    }
}

/// Writes one piece of a source tensor into its rank tensor.
fn write_piece(
    checkpoint: &Checkpoint,
    entry: &TensorEntry,
    bytes: &[u8],
    piece: &Piece,
    layout: &sharded::Layout,
    writer: &ShardedWriter,
) -> Result<()> {
    let elem = dtype_bytes(entry.dtype);
    match piece.content {
        Content::Shape { rows, cols } => {
            if entry.dtype != safetensors::Dtype::I64 {
                return Err(Error::Tensor {
                    path: checkpoint.file_of(entry).to_path_buf(),
                    tensor: entry.name.clone(),
                    reason: format!(
                        "weight_shape has dtype {}; compressed-tensors writes I64",
                        entry.dtype
                    ),
                });
            }
            writer.write_at(
                &piece.target,
                0,
                &temper_format::pack::weight_shape_bytes(rows, cols),
            )?;
        }
        Content::Copy { dim: None, at, .. } => {
            writer.write_at(&piece.target, (at * bytes.len()) as u64, bytes)?;
        }
        Content::Copy {
            dim: Some(0),
            range,
            at,
        } => {
            let row = entry.shape[1..].iter().product::<usize>() * elem;
            let src = &bytes[range[0] * row..range[1] * row];
            writer.write_at(&piece.target, (at * row) as u64, src)?;
            // Vocab padding rows (and a rank wholly in the padding) are zeros.
            let target_rows = layout.dims.vocab_per_rank();
            let is_vocab =
                piece.target == "lm_head.weight" || piece.target == "model.embed_tokens.weight";
            let filled = at + range[1] - range[0];
            if is_vocab && filled < target_rows {
                let zeros = vec![0u8; (target_rows - filled) * row];
                writer.write_at(&piece.target, (filled * row) as u64, &zeros)?;
            }
        }
        Content::Copy {
            dim: Some(_),
            range,
            ..
        } => {
            // Columns of a 2-D tensor: gather each row's slice.
            let cols = entry.shape[1] * elem;
            let (start, end) = (range[0] * elem, range[1] * elem);
            let mut out = Vec::with_capacity(entry.shape[0] * (end - start));
            for row in bytes.chunks_exact(cols) {
                out.extend_from_slice(&row[start..end]);
            }
            writer.write_at(&piece.target, 0, &out)?;
        }
    }
    Ok(())
}
