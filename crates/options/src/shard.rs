//! The sharding pass's options (`ModelShardingConfig`).

use crate::env::Env;
use crate::error::{invalid, Result};
use serde::Serialize;

pub const OPTION_TENSOR_PARALLEL_DEGREE: &str = "OPTION_TENSOR_PARALLEL_DEGREE";

/// The options this pass reads.
pub const KEYS: &[&str] = &[OPTION_TENSOR_PARALLEL_DEGREE];

/// Largest degree accepted: no instance of the catalog has more GPUs than this.
pub const MAX_DEGREE: u32 = 64;

/// Parses `OPTION_TENSOR_PARALLEL_DEGREE` when set: a whole number from 1 to 64.
pub fn parse_degree(env: &Env) -> Result<Option<u32>> {
    let Some(v) = env.get(OPTION_TENSOR_PARALLEL_DEGREE) else {
        return Ok(None);
    };
    match v.parse::<u32>() {
        Ok(d) if (1..=MAX_DEGREE).contains(&d) => Ok(Some(d)),
        _ => Err(invalid(
            OPTION_TENSOR_PARALLEL_DEGREE,
            v,
            "a whole number of devices from 1 to 64 (one rank per GPU), e.g. 4",
        )),
    }
}

/// What the sharding pass needs: the degree comes from the target (which also checks it
/// against the model), so only whether the user asked for one is kept here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardOptions {
    /// `OPTION_TENSOR_PARALLEL_DEGREE`, when given.
    pub requested_degree: Option<u32>,
}

impl ShardOptions {
    pub fn parse(env: &Env) -> Result<Self> {
        Ok(ShardOptions {
            requested_degree: parse_degree(env)?,
        })
    }
}
