//! Planning the shard pass from the tensors the previous pass will write (or the source's),
//! so a split vLLM would refuse fails before any pass runs.

use crate::{Error, Result};
use temper_core::config::ModelConfig;
use temper_core::writer::TensorSpec;
use temper_format::sharded::{self, Dims, Layout};
use temper_options::Target;

/// A checked split of a checkpoint over the target's ranks.
pub struct ShardPlan {
    pub layout: Layout,
    /// The tensors the input checkpoint must hold (checked again when the pass runs).
    pub inputs: Vec<TensorSpec>,
    pub max_file_bytes: u64,
}

impl ShardPlan {
    pub fn new(
        inputs: Vec<TensorSpec>,
        config: &ModelConfig,
        target: &Target,
        max_file_bytes: u64,
    ) -> Result<Self> {
        let dims = Dims::new(config, target.tensor_parallel_degree as usize);
        let layout = sharded::plan(&inputs, dims).map_err(|e| Error::Tensor {
            path: config.path.clone(),
            tensor: e.tensor,
            reason: format!(
                "cannot be split for tensor-parallel degree {}: {}",
                dims.degree, e.reason
            ),
        })?;
        Ok(ShardPlan {
            layout,
            inputs,
            max_file_bytes,
        })
    }

    /// Tensor bytes of the largest rank.
    pub fn max_rank_bytes(&self) -> u64 {
        self.layout
            .ranks
            .iter()
            .map(|r| r.iter().map(TensorSpec::byte_len).sum::<u64>())
            .max()
            .unwrap_or(0)
    }
}
