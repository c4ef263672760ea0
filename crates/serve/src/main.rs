//! `temper-serve`: serve a model directory over HTTP (SageMaker container contract and
//! OpenAI-compatible completions).

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use temper_serve::app::HttpConfig;
use temper_serve::engine::EngineConfig;
use temper_serve::start::{load, ServeOptions};

/// Serve an original or temper-optimized model (sharded or not) with continuous batching.
///
/// SageMaker's contract: GET /ping, POST /invocations (LMI JSON) on port 8080, the model in
/// /opt/ml/model. Also OpenAI-compatible POST /v1/completions and /v1/chat/completions (with
/// "stream": true for server-sent events), GET /v1/models and Prometheus GET /metrics.
#[derive(Debug, Parser)]
#[command(name = "temper-serve", version)]
struct Args {
    /// SageMaker starts a container as `<image> serve`: the word is accepted and changes
    /// nothing.
    #[arg(value_parser = ["serve"], hide = true)]
    command: Option<String>,
    /// The model directory (config.json, safetensors, tokenizer.json).
    #[arg(long, env = "SM_MODEL_DIR", default_value = "/opt/ml/model")]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: std::net::IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    port: u16,
    /// The model name OpenAI clients use (default: the directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Most sequences decoded together (the continuous batch).
    #[arg(long, env = "OPTION_MAX_ROLLING_BATCH_SIZE", default_value_t = 16)]
    max_batch: usize,
    /// Most tokens one step runs: the running sequences' next tokens, then new prompts (long
    /// ones in chunks over several steps).
    #[arg(
        long,
        env = "OPTION_MAX_ROLLING_BATCH_PREFILL_TOKENS",
        default_value_t = 512
    )]
    max_step_tokens: usize,
    /// GiB the running sequences' KV caches may reserve together; requests beyond it wait in
    /// the queue until others finish.
    #[arg(long, default_value_t = 8.0)]
    kv_cache_gib: f64,
    /// Most requests waiting for a place in the batch; more get 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Longest prompt accepted, in tokens (default: the context window less one).
    #[arg(long, env = "OPTION_MAX_INPUT_LEN")]
    max_input_len: Option<usize>,
    /// Seconds from a request's arrival to its last token before it fails with 504.
    #[arg(long, default_value_t = 300)]
    request_timeout_secs: u64,
    /// Seconds a client may take to send its request line and headers.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Keep activations in f32 where the checkpoint asks for INT8/FP8 activations.
    #[arg(long)]
    weight_only: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("temper-serve: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !args.model.join("config.json").is_file() {
        anyhow::bail!(
            "{} has no config.json: pass --model with a model directory (an original Hugging \
             Face model or a temper artifact)",
            args.model.display()
        );
    }
    let options = ServeOptions {
        name: args.served_model_name.clone(),
        engine: EngineConfig {
            max_batch: args.max_batch,
            max_queue: args.max_queue,
            max_step_tokens: args.max_step_tokens,
            max_kv_bytes: (args.kv_cache_gib.max(0.0) * (1u64 << 30) as f64) as u64,
        },
        http: HttpConfig {
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        },
        max_input_tokens: args.max_input_len,
        load: temper_runtime::LoadOptions {
            weight_only: args.weight_only,
            ..Default::default()
        },
    };
    let started = std::time::Instant::now();
    let state = load(&args.model, &options)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        eprintln!(
            "temper-serve listening on http://{} (model {:?}: {}, loaded in {:.1} s; batch up \
             to {}, queue {})",
            listener.local_addr()?,
            state.served.name,
            state.served.format,
            started.elapsed().as_secs_f64(),
            state.engine.config().max_batch,
            state.engine.config().max_queue,
        );
        let limits = temper_http::Limits {
            header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            ..temper_http::Limits::default()
        };
        temper_http::serve(
            listener,
            temper_serve::app::router(state),
            limits,
            shutdown_signal(),
        )
        .await?;
        eprintln!("temper-serve stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
