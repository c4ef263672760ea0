//! Loading a model directory and starting the engine and the HTTP application over it.

use crate::app::{AppState, HttpConfig, Served, Shared};
use crate::engine::{self, EngineConfig};
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use temper_runtime::tp::ShardedModel;
use temper_runtime::{LoadOptions, Model};
use temper_text::chat::ChatTemplate;

/// How to serve a model.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub name: Option<String>,
    pub engine: EngineConfig,
    pub http: HttpConfig,
    /// Longest prompt accepted; `None`: the context window less one.
    pub max_input_tokens: Option<usize>,
    pub load: LoadOptions,
}

/// Loads `dir` (a pre-sharded artifact runs one thread per rank) and starts the engine.
pub fn load(dir: &Path, opts: &ServeOptions) -> Result<Shared> {
    let metrics = Arc::new(Metrics::new());
    let tokenizer = Arc::new(temper_text::tokenizer::load_tokenizer(
        &dir.join("tokenizer.json"),
    )?);
    let (params, format, engine) = if temper_runtime::tp::is_sharded(dir) {
        let m = ShardedModel::load(dir, &opts.load)
            .with_context(|| format!("loading the sharded artifact {}", dir.display()))?;
        let params = m.params().clone();
        let format = format!("tensor-parallel degree {}", m.degree());
        let e = engine::start(m, tokenizer.clone(), opts.engine, metrics.clone())?;
        (params, format, e)
    } else {
        let m = Model::load(dir, &opts.load)
            .with_context(|| format!("loading the model {}", dir.display()))?;
        let params = m.params().clone();
        let format = m.format().to_string();
        let e = engine::start(m, tokenizer.clone(), opts.engine, metrics.clone())?;
        (params, format, e)
    };
    let defaults = temper_text::config::GenerationDefaults::from_model_dir(dir, &tokenizer)?;
    let template = ChatTemplate::from_model_dir(dir)?;
    let context = params.max_positions;
    let max_input_tokens = match opts.max_input_tokens {
        Some(n) if n >= context => anyhow::bail!(
            "--max-input-len {n} leaves no room to generate: the model's context window ({}) is \
             {context} tokens; use at most {}",
            params.max_positions_field,
            context - 1
        ),
        Some(0) => anyhow::bail!("--max-input-len must be at least 1"),
        Some(n) => n,
        None => context - 1,
    };
    let name = opts.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    });
    Ok(Arc::new(AppState {
        served: Served {
            name,
            tokenizer,
            template,
            eos_token_ids: defaults.eos_token_ids,
            max_positions: context,
            max_input_tokens,
            format,
        },
        engine,
        metrics,
        http: opts.http,
    }))
}
