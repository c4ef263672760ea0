//! `temper-load`: play a traffic pattern against a model server and report throughput,
//! latency percentiles and how faithfully the pattern was delivered.

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use temper_serve::load::{self, Pattern, Payload, Phase, Stairs, StopConditions};

/// Load-test a model server (temper-serve, vLLM, an LMI container) with closed-loop users.
#[derive(Debug, Parser)]
#[command(name = "temper-load", version)]
struct Args {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Constant users (with --duration).
    #[arg(long, default_value_t = 1)]
    users: u32,
    /// Seconds of a constant-users test.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// STAIRS traffic: STEP_SECONDS,STEPS,USERS_PER_STEP.
    #[arg(long, conflicts_with = "phases")]
    stairs: Option<String>,
    /// PHASES traffic: INITIAL_USERS:SPAWN_PER_MINUTE:SECONDS, comma separated.
    #[arg(long)]
    phases: Option<String>,
    /// Request bodies: JSON files, each sent to --route in turn.
    #[arg(long)]
    payload: Vec<PathBuf>,
    /// With no --payload: this prompt, sent as an OpenAI completion.
    #[arg(long, default_value = "Write a short story about a lighthouse keeper.")]
    prompt: String,
    /// With no --payload: tokens to generate per request (end-of-sequence ignored, so each
    /// request generates exactly this many).
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// With no --payload: stream the answers (server-sent events), which measures time to
    /// first token and inter-token gaps.
    #[arg(long)]
    stream: bool,
    /// Where payloads go.
    #[arg(long, default_value = "/v1/completions")]
    route: String,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
}

fn pattern(args: &Args) -> Result<Pattern> {
    let nums = |s: &str, sep: char| -> Result<Vec<u64>> {
        s.split(sep)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .with_context(|| format!("{v:?} in {s:?}"))
            })
            .collect()
    };
    if let Some(s) = &args.stairs {
        let v = nums(s, ',')?;
        anyhow::ensure!(
            v.len() == 3,
            "--stairs takes STEP_SECONDS,STEPS,USERS_PER_STEP"
        );
        return Ok(Pattern::Stairs(Stairs {
            step_duration: Duration::from_secs(v[0]),
            steps: v[1] as u32,
            users_per_step: v[2] as u32,
        }));
    }
    if let Some(s) = &args.phases {
        let phases = s
            .split(',')
            .map(|p| {
                let v = nums(p, ':')?;
                anyhow::ensure!(
                    v.len() == 3,
                    "each phase is INITIAL_USERS:SPAWN_PER_MINUTE:SECONDS"
                );
                Ok(Phase {
                    initial_users: v[0] as u32,
                    spawn_rate_per_minute: v[1] as u32,
                    duration: Duration::from_secs(v[2]),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Pattern::Phases(phases));
    }
    Ok(Pattern::Constant {
        users: args.users,
        duration: Duration::from_secs(args.duration),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pattern = pattern(&args)?;
    let payloads = if args.payload.is_empty() {
        let mut body = json!({"prompt": args.prompt, "max_tokens": args.max_tokens,
                              "temperature": 0, "stream": args.stream, "ignore_eos": true});
        // vLLM refuses stream_options on a request that does not stream.
        if args.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        vec![Payload {
            path: args.route.clone(),
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        }]
    } else {
        args.payload
            .iter()
            .map(|p| {
                Ok(Payload {
                    path: args.route.clone(),
                    content_type: "application/json".into(),
                    body: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(load::run(
        &args.url,
        &pattern,
        &payloads,
        &StopConditions::default(),
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} requests in {:.1} s ({} errors): {:.1} invocations/min, {:.1} tokens/s",
            report.requests,
            report.seconds,
            report.errors,
            report.invocations_per_minute,
            report.tokens_per_second
        );
        println!("answers by status: {:?}", report.statuses);
        let p = |name: &str, v: &load::Percentiles| {
            println!(
                "{name:>14}: p50 {:.1} ms, p90 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                v.p50, v.p90, v.p95, v.p99
            )
        };
        p("latency", &report.latency_ms);
        p("first byte", &report.first_byte_ms);
        p("between chunks", &report.inter_chunk_ms);
        println!(
            "offered load: {:.1} of {:.1} user-seconds planned ({:+.2}%)",
            report.delivered_user_seconds,
            report.planned_user_seconds,
            (report.offered_ratio() - 1.0) * 100.0
        );
    }
    Ok(())
}
