//! Command-line arguments. Quantization flags map onto the LMI `OPTION_*` names the job
//! API uses, so both paths share one option parser (temper-pipeline's `options`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "optimize",
    version,
    about = "Quantize a Hugging Face model into a checkpoint vLLM and SGLang load, for a SageMaker instance type",
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    after_help = "Examples:\n  optimize --model ./smollm2 --instance-type ml.g6.12xlarge --quantize fp8 --output ./smollm2-fp8\n  optimize --request job.json          (a CreateOptimizationJob request document)\n  optimize import-gguf model.gguf ./model-hf\n  optimize generate --model ./smollm2-fp8 --chat --prompt \"Name three rivers\"\n  optimize eval --model ./smollm2-fp8 --reference ./smollm2 --data hamlet.txt"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a GGUF file into a Hugging Face model directory (safetensors, config, tokenizer).
    ImportGguf(ImportArgs),
    /// Generate text with a model (original or optimized) on this machine's CPU.
    Generate(GenerateArgs),
    /// Perplexity of a model, and its KL divergence and top-1 agreement against a reference.
    Eval(EvalArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model directory: a Hugging Face model or an artifact written by `optimize`.
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt (plain text, or the user message with --chat).
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most new tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    /// Generate --max-tokens tokens even past the end-of-sequence token (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Keep activations in f32 for INT8/FP8 checkpoints that quantize them (what GPUs
    /// without native FP8 do).
    #[arg(long)]
    pub weight_only: bool,
    /// Decode speculatively with the EAGLE-3 head in the model's speculative/ directory
    /// (written by `optimize --speculative`); output is the same as without it.
    #[arg(long)]
    pub speculative: bool,
    /// Drafted tokens per round (default: the chain length the job measured as fastest, in
    /// its manifest; else 3).
    #[arg(long, requires = "speculative")]
    pub draft_depth: Option<usize>,
    /// Children per expanded node of an EAGLE-2 dynamic tree (1: a chain).
    #[arg(long, requires = "speculative", default_value_t = 1)]
    pub draft_top_k: usize,
    /// Nodes the target verifies per round, the root included (default: depth + 1 for a
    /// chain, else 1 + top_k + (depth - 1) * top_k).
    #[arg(long, requires = "speculative")]
    pub draft_nodes: Option<usize>,
    /// Print one JSON object (text and timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model to evaluate (e.g. an optimized artifact).
    #[arg(long)]
    pub model: PathBuf,
    /// The model to compare against (e.g. the original); adds KL divergence and top-1 agreement.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Evaluation text: plain text, ShareGPT JSON, or JSON lines (prompt/completion or messages).
    #[arg(long)]
    pub data: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Most windows to evaluate (the first ones of the data).
    #[arg(long, default_value_t = 8)]
    pub max_windows: usize,
    /// Keep activations in f32 for checkpoints that quantize them.
    #[arg(long)]
    pub weight_only: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The .gguf file.
    pub gguf: PathBuf,
    /// The model directory to create.
    pub output: PathBuf,
    /// Weight dtype of the written safetensors.
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: ImportDtype,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Print one JSON object instead of a progress bar and summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ImportDtype {
    Bf16,
    F32,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum QuantizeMethod {
    /// Activation-aware INT4 (W4A16 with zero points, group 128): SageMaker's default.
    Awq,
    /// GPTQ INT4 (W4A16 with zero points, group 128): error feedback through the inverse
    /// Hessian of calibration inputs.
    Gptq,
    /// SmoothQuant then INT8 W8A8 (OPTION_SMOOTHQUANT_ALPHA, default 0.5).
    Smoothquant,
    /// Round-to-nearest INT4 (W4A16), data-free: the baseline AWQ and GPTQ improve on.
    Int4,
    Fp8,
    Int8,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// A CreateOptimizationJob request (JSON). S3Uri/S3OutputLocation may be file:// URIs or plain paths.
    #[arg(long, conflicts_with_all = ["model", "instance_type", "quantize", "output", "tensor_parallel", "speculative"])]
    pub request: Option<PathBuf>,
    /// Hugging Face model directory (config.json + safetensors), or a Hub id `org/name[@revision]`
    /// downloaded to the Hugging Face cache (HF_TOKEN, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE).
    #[arg(long, required_unless_present = "request")]
    pub model: Option<PathBuf>,
    /// Deployment instance type, e.g. ml.g6.12xlarge.
    #[arg(long, required_unless_present = "request")]
    pub instance_type: Option<String>,
    /// Where the job runs: auto (the first CUDA GPU when this build has CUDA and the host
    /// a GPU, else the CPU), cpu, cpu:avx2, cpu:avx512, cuda or cuda:N. On a GPU the 8-bit
    /// round-to-nearest quantizers run there (same codes as the CPU, bit for bit).
    #[arg(long, default_value = "auto")]
    pub device: temper_cuda::DeviceRequest,
    /// Quantization method (OPTION_QUANTIZE).
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeMethod>,
    /// Pre-shard the (quantized) model for this many GPUs, vLLM's `sharded_state` layout
    /// (OPTION_TENSOR_PARALLEL_DEGREE; runs after quantization).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub tensor_parallel: Option<String>,
    /// Train an EAGLE-3 draft head for the (quantized) model and write it to speculative/
    /// (ModelSpeculativeDecodingConfig; OPTION_EAGLE_* tune the training).
    #[arg(long)]
    pub speculative: bool,
    /// Compile for the instance's engine (ModelCompilationConfig), last: a TensorRT-LLM
    /// checkpoint on GPU instances (OPTION_MAX_INPUT_LEN, OPTION_MAX_OUTPUT_LEN,
    /// OPTION_MAX_NUM_TOKENS, OPTION_MAX_ROLLING_BATCH_SIZE via --env), the Neuron settings
    /// on inf2/trn1 (OPTION_N_POSITIONS, OPTION_DTYPE, OPTION_NEURON_OPTIMIZE_LEVEL, and
    /// --tensor-parallel N NeuronCores). --tensor-parallel sets the compiled degree.
    #[arg(long)]
    pub compile: bool,
    /// The draft head's training data: ShareGPT, OpenAI chat or completions (a file, a
    /// directory or a path prefix; default: the ShareGPT V3 file scripts/fetch-assets.sh
    /// fetches).
    #[arg(long, requires = "speculative")]
    pub training_data: Option<PathBuf>,
    /// S3Prefix (default) or ManifestFile, as SageMaker's TrainingDataSource.S3DataType.
    #[arg(long, requires = "training_data", default_value = "S3Prefix")]
    pub training_data_type: String,
    /// Stop the job's training after this many seconds, keeping the best head
    /// (StoppingCondition.MaxRuntimeInSeconds).
    #[arg(long, value_name = "SECONDS")]
    pub max_runtime: Option<u64>,
    /// FP8_DYNAMIC (default for fp8), FP8_BLOCK, FP8 (per-tensor, static calibrated input
    /// scales), W8A16 (default for int8) or W8A8 (OPTION_FP8_SCHEME / OPTION_INT8_SCHEME).
    #[arg(long)]
    pub scheme: Option<String>,
    /// Group size: INT8 W8A16 (OPTION_QUANT_GROUP_SIZE; per channel when unset), INT4
    /// (default 128; OPTION_AWQ_BLOCK_SIZE for awq).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Comma-separated modules to keep dense: names or re: patterns (OPTION_FP8_IGNORE; default lm_head).
    #[arg(long)]
    pub ignore: Option<String>,
    /// Output directory (written atomically).
    #[arg(long, required_unless_present = "request")]
    pub output: Option<PathBuf>,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Extra OPTION_*=VALUE entries, as a job's OverrideEnvironment would carry.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Quantize Linear weights found by name and shape even for an unknown architecture.
    #[arg(long)]
    pub allow_unknown_architecture: bool,
    /// Job name recorded in the manifest.
    #[arg(long)]
    pub name: Option<String>,
    /// Text for calibration (static FP8) and the quality evaluation in the manifest
    /// (OPTION_CALIB_DATA; default: a sample built into temper).
    #[arg(long)]
    pub calib_data: Option<PathBuf>,
    /// Skip measuring the artifact's quality (OPTION_EVAL=false).
    #[arg(long)]
    pub no_eval: bool,
    /// Print one JSON object instead of a progress bar and summary.
    #[arg(long)]
    pub json: bool,
}

impl JobArgs {
    /// The flags as the `OPTION_*` map a job carries.
    pub fn environment(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for pair in &self.env {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--env `{pair}`: expected KEY=VALUE, e.g. OPTION_MAX_MODEL_LEN=4096"
                )
            })?;
            let key = k.trim();
            if !key.starts_with("OPTION_") {
                anyhow::bail!("--env `{pair}`: only OPTION_* variables are job options (e.g. OPTION_MAX_MODEL_LEN=4096)");
            }
            env.insert(key.to_string(), v.to_string());
        }
        if let Some(q) = self.quantize {
            let method = match q {
                QuantizeMethod::Awq => "awq",
                QuantizeMethod::Gptq => "gptq",
                QuantizeMethod::Smoothquant => "smoothquant",
                QuantizeMethod::Int4 => "int4",
                QuantizeMethod::Fp8 => "fp8",
                QuantizeMethod::Int8 => "int8",
            };
            env.insert("OPTION_QUANTIZE".into(), method.into());
        }
        if let Some(scheme) = &self.scheme {
            let key = match env.get("OPTION_QUANTIZE").map(|m| m.trim().to_ascii_lowercase()) {
                Some(m) if m == "fp8" => "OPTION_FP8_SCHEME",
                Some(m) if m == "int8" => "OPTION_INT8_SCHEME",
                _ => anyhow::bail!(
                    "--scheme {scheme} needs a quantization method: add --quantize fp8 or --quantize int8"
                ),
            };
            env.insert(key.into(), scheme.clone());
        }
        if let Some(n) = &self.tensor_parallel {
            // Parsed (and refused with the value named) by the same parser the job API uses.
            env.insert("OPTION_TENSOR_PARALLEL_DEGREE".into(), n.clone());
        }
        if let Some(g) = self.group_size {
            // AWQ names its group size after the LMI images' option.
            let key = match env
                .get("OPTION_QUANTIZE")
                .map(|m| m.trim().to_ascii_lowercase())
            {
                Some(m) if m == "awq" => "OPTION_AWQ_BLOCK_SIZE",
                _ => "OPTION_QUANT_GROUP_SIZE",
            };
            env.insert(key.into(), g.to_string());
        }
        if let Some(ignore) = &self.ignore {
            env.insert("OPTION_FP8_IGNORE".into(), ignore.clone());
        }
        if let Some(data) = &self.calib_data {
            env.insert("OPTION_CALIB_DATA".into(), data.display().to_string());
        }
        if self.no_eval {
            env.insert("OPTION_EVAL".into(), "false".into());
        }
        if self.allow_unknown_architecture {
            env.insert("OPTION_ALLOW_UNKNOWN_ARCHITECTURE".into(), "true".into());
        }
        Ok(env)
    }
}

/// Opens `--device`; `auto` that finds no GPU prints why (unless it is simply a build
/// without CUDA) and runs on the CPU.
pub fn open_device(request: temper_cuda::DeviceRequest) -> anyhow::Result<temper_cuda::Device> {
    let (device, note) = temper_cuda::Device::resolve(request)?;
    if let Some(note) = note.filter(|_| temper_cuda::BUILT_WITH_CUDA) {
        eprintln!("{note}");
    }
    Ok(device)
}
