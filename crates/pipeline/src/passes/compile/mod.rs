//! The compilation pass (`ModelCompilationConfig`): the job's last (unsharded) checkpoint
//! turned into what the instance's engine compiles.
//!
//! - GPU instances: a TensorRT-LLM checkpoint (`config.json` with the mapping and the
//!   quantization, `rank{N}.safetensors`; trtllm.rs) plus the `trtllm-build` settings
//!   (`trtllm-build.json`; the same limits as `option.*` in `serving.properties`). When
//!   `trtllm-build` is on PATH the engines are built into `engines/`; it never is here (no
//!   GPU), and the job says so. The LMI TensorRT-LLM image loads the checkpoint directory
//!   and builds its engine once at load.
//! - Neuron instances: the checkpoint unchanged plus the Neuron settings, checked against
//!   the instance's NeuronCores and memory (neuron.rs); the NEFF build needs neuronx-cc,
//!   which only AWS's Neuron pip repository has, and the job says whether it was found.

mod neuron;
mod trtllm;

use super::{Pass, PassContext, PassOutput};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use temper_core::config::ModelConfig;
use temper_core::manifest::PassRecord;
use temper_format::Scheme;
use temper_options::compile::CompileOptions;
use temper_options::Target;

/// Which engine the instance compiles for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    TensorRtLlm,
    Neuron,
}

pub struct CompilePass {
    pub options: CompileOptions,
    pub engine: Engine,
    pub degree: usize,
    /// The quantize pass's scheme, when the job quantizes first.
    pub scheme: Option<Scheme>,
    /// What `serving.properties` says for this engine (set when the pass has run).
    pub properties: BTreeMap<String, String>,
    pub instance: &'static temper_catalog::Instance,
}

impl CompilePass {
    /// Checks everything that can be checked before any work: the engine's options for the
    /// instance, the model's family and context, the quantization the engine can take.
    pub fn plan(
        options: &CompileOptions,
        config: &ModelConfig,
        target: &Target,
        scheme: Option<Scheme>,
        params: u64,
    ) -> Result<CompilePass> {
        let instance = target.instance;
        let context = config
            .raw
            .get("max_position_embeddings")
            .and_then(|v| v.as_u64());
        options.check_for(instance, context)?;
        let engine = if instance.accelerator.is_neuron() {
            Engine::Neuron
        } else {
            Engine::TensorRtLlm
        };
        let degree = target.tensor_parallel_degree as usize;
        match engine {
            Engine::TensorRtLlm => trtllm::check(config, scheme, degree)?,
            Engine::Neuron => neuron::check(config, options, target, scheme, params)?,
        }
        Ok(CompilePass {
            options: options.clone(),
            engine,
            degree,
            scheme,
            properties: BTreeMap::new(),
            instance,
        })
    }
}

impl Pass for CompilePass {
    fn name(&self) -> &'static str {
        "compile"
    }

    fn run(&mut self, input: &Path, out: &Path, ctx: &mut PassContext) -> Result<PassOutput> {
        let started = std::time::Instant::now();
        let (files, report, properties) = match self.engine {
            Engine::TensorRtLlm => trtllm::write(self, input, out, ctx)?,
            Engine::Neuron => neuron::write(self, input, out, ctx)?,
        };
        self.properties = properties;
        let mut report = report;
        report["seconds"] = started.elapsed().as_secs_f64().into();
        Ok(PassOutput {
            files,
            record: PassRecord {
                name: "compile".into(),
                options: serde_json::to_value(&self.options).expect("options serialise"),
                report: report.clone(),
            },
            summary: report,
        })
    }
}

/// A tool on PATH, if any (trtllm-build, neuronx-cc).
fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn plan_error(msg: impl Into<String>) -> Error {
    Error::Plan(msg.into())
}
