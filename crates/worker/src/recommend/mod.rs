//! An inference-recommendations job in the worker.
//!
//! - `Default`: measure the model on this host ([`measure`]), fit the roofline projection to
//!   it, and recommend, for each candidate instance, the configuration temper would deploy
//!   with its projected metrics. Every figure is a projection: its endpoint's `VariantName`
//!   is `projected` and its recommendation id starts with `projected-`.
//! - `Advanced`: prepare each endpoint configuration's model (quantized, sharded), serve it
//!   with `temper-serve` on this host and load-test it ([`load_test`]) with the job's
//!   traffic pattern and stopping conditions. Every figure is measured on this host, not on
//!   the instance type the configuration names: `VariantName` `measured-here`, and no cost
//!   figures (this host's throughput at another instance's price would be neither).
//!
//! Each finished step is written to `steps.json` at once; the report (recommendations best
//! first, steps, and why the first is best) is the job's result.

mod load_test;
mod measure;
mod payloads;

use crate::run::{
    cancellable, fetch_prefix, fresh_dir, s3_options, transfer_runtime, JobError, Reporter,
    WorkerArgs,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use temper_api::recommendation::{
    EndpointOutputConfiguration, EnvironmentParameter, FlatInvocations, InferenceMetrics,
    InferenceRecommendation, InferenceRecommendationsJobStep, ModelConfiguration,
    RecommendationJobInferenceBenchmark, RecommendationJobStatus, RecommendationJobType,
    RecommendationMetrics, TrafficPattern, TrafficType,
};
use temper_api::EpochSeconds;
use temper_catalog::Instance;
use temper_core::spec::Location;
use temper_jobdir::files::WorkerResult;
use temper_jobdir::recommendation::{
    write_steps, RecommendationReport, RecommendationSpec, TestConfiguration,
};
use temper_pipeline::progress::{Cancel, Event};
use temper_recommend::{recommend, LatencyLimit, Workload};
use temper_serve::load::{self, Pattern, Payload, StopConditions};

/// Where an `Advanced` job's prepared models are written, in its job directory.
pub const VARIANTS_DIR: &str = "variants";
/// Where an S3 sample payload archive is fetched, in the job directory.
pub const PAYLOADS_DIR: &str = "payloads";

/// The request sent when the job gives no sample payload.
const STOCK_PROMPT: &str = "Write a short story about a lighthouse keeper.";
const STOCK_NEW_TOKENS: u32 = 64;
/// The request shape projected when there are no payloads to read it from.
const DEFAULT_WORKLOAD: Workload = Workload {
    prompt_tokens: 512.0,
    output_tokens: 256.0,
};
/// A Default recommendation's batch keeps each request within this many times its latency
/// alone: more throughput than one at a time, without unbounded waits.
const LATENCY_TIMES_ALONE: f64 = 2.0;

fn failed(reason: impl Into<String>) -> JobError {
    JobError::Request(reason.into())
}

/// An endpoint name from the job's name and the step's number (letters, digits, hyphens).
fn endpoint_name(job: &str, n: usize) -> String {
    let clean: String = job
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let suffix = format!("-{n}");
    let keep = 63 - suffix.len();
    let mut name: String = clean.chars().take(keep).collect();
    name = name.trim_matches('-').to_string();
    if name.is_empty() {
        name = "temper".into();
    }
    format!("{name}{suffix}")
}

fn environment(env: &BTreeMap<String, String>) -> Option<Vec<EnvironmentParameter>> {
    (!env.is_empty()).then(|| {
        env.iter()
            .map(|(k, v)| EnvironmentParameter {
                key: k.clone(),
                value_type: "String".into(),
                value: v.clone(),
            })
            .collect()
    })
}

fn describe(config: &TestConfiguration) -> String {
    let env: Vec<String> = config
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if env.is_empty() {
        config.instance_type.clone()
    } else {
        format!("{} with {}", config.instance_type, env.join(", "))
    }
}

/// Runs the job and reports its recommendations.
pub fn run(
    args: &WorkerArgs,
    spec: &RecommendationSpec,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<WorkerResult, JobError> {
    temper_jobdir::access::check_recommendation(spec, &args.local_roots)
        .map_err(|e| failed(e.message()))?;
    eprintln!(
        "recommendations job {} ({:?}) for model {} at {}",
        spec.name, spec.job_type, spec.model_name, spec.model
    );
    let runtime = transfer_runtime(&args.job_dir)?;
    let s3 = s3_options(args);
    let model = match &spec.model {
        Location::Local(dir) => dir.clone(),
        Location::S3 { bucket, key } => fetch_prefix(
            &s3,
            bucket,
            key,
            &args.job_dir.join("input"),
            "download model",
            &runtime,
            cancel,
            reporter,
        )?,
    };
    let samples = match &spec.sample_payload {
        None => Vec::new(),
        Some(Location::Local(path)) => payloads::read_archive(path).map_err(failed)?,
        Some(Location::S3 { bucket, key }) => {
            let dest = fresh_dir(&args.job_dir.join(PAYLOADS_DIR))?;
            let store = crate::objects::bucket_store(bucket, &s3)?;
            let mut step = |_, _| {};
            cancellable(
                &runtime,
                cancel,
                crate::objects::download_training_prefix(
                    store.as_ref(),
                    bucket,
                    key,
                    &dest,
                    &mut step,
                ),
            )??;
            let file = dest.join(key.rsplit('/').next().unwrap_or(key));
            payloads::read_archive(&file).map_err(failed)?
        }
    };
    if !samples.is_empty() {
        eprintln!("{} sample payloads", samples.len());
    }
    let report = match spec.job_type {
        RecommendationJobType::Default => default_job(spec, &model, &samples, reporter)?,
        RecommendationJobType::Advanced => {
            advanced_job(args, spec, &model, &samples, cancel, reporter)?
        }
    };
    write_steps(&args.job_dir, &report.steps).map_err(|source| JobError::Io {
        what: "writing the steps in",
        path: args.job_dir.clone(),
        source,
    })?;
    eprintln!("{}", report.explanation);
    if report.recommendations.is_empty() {
        return Err(failed(report.explanation));
    }
    reporter.lock().unwrap().phase("done", "", 0);
    Ok(WorkerResult::Completed {
        recommended_image: None,
        output: spec.model.to_string(),
        summary: serde_json::to_value(&report).map_err(|e| failed(e.to_string()))?,
    })
}

/// The mean request of the sample payloads (LMI `inputs` / `parameters.max_new_tokens`, or
/// OpenAI `prompt` / `max_tokens`), in the model's tokens; the default without any.
fn workload(model: &Path, samples: &[payloads::SamplePayload]) -> Workload {
    let Ok(tokenizer) = temper_text::tokenizer::load_tokenizer(&model.join("tokenizer.json"))
    else {
        return DEFAULT_WORKLOAD;
    };
    let mut shapes = Vec::new();
    for s in samples {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s.body) else {
            continue;
        };
        let prompt = v
            .get("inputs")
            .or_else(|| v.get("prompt"))
            .and_then(|p| p.as_str());
        let output = v
            .pointer("/parameters/max_new_tokens")
            .or_else(|| v.get("max_tokens"))
            .and_then(|n| n.as_f64())
            .unwrap_or(DEFAULT_WORKLOAD.output_tokens);
        if let Some(Ok(enc)) = prompt.map(|p| tokenizer.encode(p, false)) {
            shapes.push((enc.len() as f64, output));
        }
    }
    if shapes.is_empty() {
        return DEFAULT_WORKLOAD;
    }
    let n = shapes.len() as f64;
    Workload {
        prompt_tokens: (shapes.iter().map(|s| s.0).sum::<f64>() / n).max(1.0),
        output_tokens: (shapes.iter().map(|s| s.1).sum::<f64>() / n).max(1.0),
    }
}

fn default_job(
    spec: &RecommendationSpec,
    model: &Path,
    samples: &[payloads::SamplePayload],
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<RecommendationReport, JobError> {
    reporter.lock().unwrap().phase("measure", "", 0);
    let m = measure::measure(model).map_err(failed)?;
    let work = workload(model, samples);
    eprintln!(
        "measured here: {:.1} GB/s, {:.1} G multiply-adds/s; decode steps {}; the runtime \
         reaches {:.2} of this host's roofline. Projecting requests of {:.0} prompt and {:.0} \
         output tokens",
        m.host.host.bandwidth / 1e9,
        m.host.host.macs_per_second / 1e9,
        m.host
            .steps
            .iter()
            .map(|(b, s)| format!("{b} seq {:.2} ms", s * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        m.fit.efficiency,
        work.prompt_tokens,
        work.output_tokens
    );
    reporter
        .lock()
        .unwrap()
        .phase("project", "instances", spec.candidates.len() as u64);
    let mut steps = Vec::new();
    let mut recommendations = Vec::new();
    for (i, name) in spec.candidates.iter().enumerate() {
        let instance = Instance::lookup(name).map_err(|e| failed(e.to_string()))?;
        let endpoint = EndpointOutputConfiguration {
            endpoint_name: endpoint_name(&spec.name, i + 1),
            variant_name: "projected".into(),
            instance_type: Some(name.clone()),
            initial_instance_count: Some(1),
        };
        let limit = LatencyLimit::TimesAlone(LATENCY_TIMES_ALONE);
        let (status, metrics, model_config, reason) =
            match recommend(instance, &m.cost, m.heads, m.compute, &m.fit, &work, limit) {
                Ok(r) => {
                    let p = &r.projection;
                    let price = spec.prices.get(name).copied();
                    let metrics = RecommendationMetrics {
                        cost_per_hour: price.map(|c| c as f32),
                        cost_per_inference: price
                            .map(|c| (c / (60.0 * p.invocations_per_minute)) as f32),
                        max_invocations: Some(p.invocations_per_minute.round() as i32),
                        model_latency: Some((p.latency_seconds * 1000.0).round() as i32),
                        cpu_utilization: None,
                        memory_utilization: Some(r.memory_utilization as f32),
                        model_setup_time: None,
                    };
                    let env = BTreeMap::from([
                        (
                            "OPTION_TENSOR_PARALLEL_DEGREE".to_string(),
                            r.tensor_parallel_degree.to_string(),
                        ),
                        (
                            "OPTION_MAX_ROLLING_BATCH_SIZE".to_string(),
                            r.batch.to_string(),
                        ),
                    ]);
                    let config = ModelConfiguration {
                        environment_parameters: environment(&env),
                        ..Default::default()
                    };
                    (
                        RecommendationJobStatus::Completed,
                        Some(metrics),
                        config,
                        None,
                    )
                }
                Err(e) => (
                    RecommendationJobStatus::Failed,
                    None,
                    ModelConfiguration::default(),
                    Some(e.to_string()),
                ),
            };
        if let Some(metrics) = &metrics {
            recommendations.push(InferenceRecommendation {
                recommendation_id: Some(format!("projected-{}", endpoint.endpoint_name)),
                metrics: Some(metrics.clone()),
                endpoint_configuration: endpoint.clone(),
                model_configuration: model_config.clone(),
                invocation_end_time: None,
                invocation_start_time: None,
            });
        }
        steps.push(InferenceRecommendationsJobStep {
            step_type: "BENCHMARK".into(),
            job_name: spec.name.clone(),
            status,
            inference_benchmark: Some(RecommendationJobInferenceBenchmark {
                endpoint_metrics: metrics.as_ref().map(|m| InferenceMetrics {
                    max_invocations: m.max_invocations.unwrap_or_default(),
                    model_latency: m.model_latency.unwrap_or_default(),
                }),
                metrics,
                endpoint_configuration: Some(endpoint),
                model_configuration: model_config,
                failure_reason: reason,
                invocation_end_time: None,
                invocation_start_time: None,
            }),
        });
        reporter
            .lock()
            .unwrap()
            .step(i as u64 + 1, spec.candidates.len() as u64);
    }
    // Cheapest per inference first where prices are known, then the most invocations.
    recommendations.sort_by(|a, b| {
        let cost = |r: &InferenceRecommendation| {
            r.metrics
                .as_ref()
                .and_then(|m| m.cost_per_inference)
                .map_or(f32::INFINITY, |c| c)
        };
        let rate = |r: &InferenceRecommendation| {
            r.metrics
                .as_ref()
                .and_then(|m| m.max_invocations)
                .unwrap_or(0)
        };
        cost(a)
            .total_cmp(&cost(b))
            .then_with(|| rate(b).cmp(&rate(a)))
    });
    let explanation = match recommendations.first() {
        None => format!(
            "None of the {} candidate instances can serve the model: {}",
            steps.len(),
            steps
                .iter()
                .filter_map(|s| s.inference_benchmark.as_ref()?.failure_reason.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Some(best) => {
            let metrics = best.metrics.clone().unwrap_or_default();
            let why = match metrics.cost_per_inference {
                Some(c) => format!("the lowest cost per inference (${c:.6})"),
                None => "the most invocations per minute (no instance price is known)".into(),
            };
            format!(
                "Recommended {} (projected): {} invocations per minute at {} ms per request, \
                 {why} of {} instances that can serve the model ({} cannot). Projected from \
                 this host's measured decode steps (the runtime reaches {:.2} of this host's \
                 roofline) onto each instance's memory bandwidth and peak, for requests of \
                 {:.0} prompt and {:.0} output tokens, with batches that keep a request within \
                 {LATENCY_TIMES_ALONE}x its latency alone",
                best.endpoint_configuration
                    .instance_type
                    .clone()
                    .unwrap_or_default(),
                metrics.max_invocations.unwrap_or_default(),
                metrics.model_latency.unwrap_or_default(),
                recommendations.len(),
                steps.len() - recommendations.len(),
                m.fit.efficiency,
                work.prompt_tokens,
                work.output_tokens
            )
        }
    };
    Ok(RecommendationReport {
        recommendations,
        steps,
        explanation,
    })
}

/// The traffic of a test: the job's pattern, else one user joined by one more a minute for
/// two minutes.
fn pattern(traffic: Option<&TrafficPattern>) -> Pattern {
    let secs = |s: Option<i32>| Duration::from_secs(s.unwrap_or(0).max(0) as u64);
    let count = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
    match traffic {
        Some(t) if t.traffic_type == Some(TrafficType::Stairs) => {
            let s = t.stairs.clone().unwrap_or_default();
            Pattern::Stairs(load::Stairs {
                step_duration: secs(s.duration_in_seconds),
                steps: count(s.number_of_steps),
                users_per_step: count(s.users_per_step),
            })
        }
        Some(t) if t.phases.as_ref().is_some_and(|p| !p.is_empty()) => Pattern::Phases(
            t.phases
                .iter()
                .flatten()
                .map(|p| load::Phase {
                    initial_users: count(p.initial_number_of_users),
                    spawn_rate_per_minute: count(p.spawn_rate),
                    duration: secs(p.duration_in_seconds),
                })
                .collect(),
        ),
        _ => Pattern::Phases(vec![load::Phase {
            initial_users: 1,
            spawn_rate_per_minute: 1,
            duration: Duration::from_secs(120),
        }]),
    }
}

/// The latency thresholds, milliseconds by percentile name.
fn thresholds(spec: &RecommendationSpec) -> Vec<(String, f64)> {
    spec.stopping
        .iter()
        .flat_map(|s| s.model_latency_thresholds.iter().flatten())
        .filter_map(|t| Some((t.percentile.clone()?, f64::from(t.value_in_milliseconds?))))
        .collect()
}

fn stop_conditions(spec: &RecommendationSpec, pattern: &Pattern) -> StopConditions {
    let stopping = spec.stopping.clone().unwrap_or_default();
    // Windows of a sixth of the test, 2 to 10 s: a short test still has several.
    let window = (pattern.duration() / 6).clamp(Duration::from_secs(2), Duration::from_secs(10));
    StopConditions {
        max_invocations_per_minute: stopping.max_invocations.map(|n| n.max(1) as u32),
        latency_thresholds: thresholds(spec)
            .into_iter()
            .map(|(p, ms)| (p, Duration::from_secs_f64(ms / 1000.0)))
            .collect(),
        stop_when_flat: stopping.flat_invocations == Some(FlatInvocations::Stop),
        window: Some(window),
        request_timeout: Some(Duration::from_secs(300)),
    }
}

/// The requests of a test: the sample payloads to `/invocations`, else a stock LMI request.
fn requests(spec: &RecommendationSpec, samples: &[payloads::SamplePayload]) -> Vec<Payload> {
    if samples.is_empty() {
        let body = serde_json::json!({
            "inputs": STOCK_PROMPT,
            "parameters": {"max_new_tokens": STOCK_NEW_TOKENS},
        });
        return vec![Payload {
            path: "/invocations".into(),
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        }];
    }
    samples
        .iter()
        .map(|s| Payload {
            path: "/invocations".into(),
            content_type: spec.content_type.clone(),
            body: s.body.clone(),
        })
        .collect()
}

/// The most invocations per minute a test sustained with its latency within every
/// threshold: over its windows, and over the whole test (for tests shorter than a window).
/// `(invocations per minute, P50 latency ms)`, or `None` if no part of it qualified.
fn best_rate(report: &load::LoadReport, limits: &[(String, f64)]) -> Option<(f64, f64)> {
    let whole = (report.invocations_per_minute, report.latency_ms);
    report
        .windows
        .iter()
        .filter(|w| w.completed > 0)
        .map(|w| (w.invocations_per_minute, w.latency_ms))
        .chain((report.requests > report.errors).then_some(whole))
        .filter(|(_, p)| {
            limits
                .iter()
                .all(|(name, ms)| p.get(name).is_some_and(|v| v <= *ms))
        })
        .map(|(rate, p)| (rate, p.p50))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// Prepares the model of every configuration (each distinct preparation once), in order.
fn prepare(
    args: &WorkerArgs,
    spec: &RecommendationSpec,
    model: &Path,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<Vec<Result<PathBuf, String>>, JobError> {
    let mut done: BTreeMap<String, Result<PathBuf, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, config) in spec.configurations.iter().enumerate() {
        let key = config.preparation_key();
        if let Some(prepared) = done.get(&key) {
            out.push(prepared.clone());
            continue;
        }
        let dir = args.job_dir.join(VARIANTS_DIR).join(format!("{}", i + 1));
        let prepared = match config.preparation(
            &format!("{}-prepare-{}", spec.name, i + 1),
            Location::Local(model.to_path_buf()),
            Location::Local(dir.clone()),
        ) {
            None => Ok(model.to_path_buf()),
            Some(job) => {
                reporter
                    .lock()
                    .unwrap()
                    .phase(&format!("prepare {}", describe(config)), "", 0);
                let mut sink = |e: Event| reporter.lock().unwrap().on_event(e);
                // The variants are served by temper-serve on this host's CPU, so they are
                // prepared with the worker's device only for the quantizers' speed.
                let device = crate::run::open_device(args.device)?;
                match temper_pipeline::run_job(&job, &device, &mut sink, cancel) {
                    Ok(outcome) => Ok(outcome.output),
                    Err(temper_pipeline::Error::Cancelled) => return Err(JobError::Stopped),
                    Err(e) => Err(format!(
                        "preparing the model for {} failed: {e}",
                        describe(config)
                    )),
                }
            }
        };
        done.insert(key, prepared.clone());
        out.push(prepared);
    }
    Ok(out)
}

fn advanced_job(
    args: &WorkerArgs,
    spec: &RecommendationSpec,
    model: &Path,
    samples: &[payloads::SamplePayload],
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<RecommendationReport, JobError> {
    let prepared = prepare(args, spec, model, cancel, reporter)?;
    let pattern = pattern(spec.traffic.as_ref());
    pattern.validate().map_err(|e| failed(e.to_string()))?;
    let stop = stop_conditions(spec, &pattern);
    let payloads = requests(spec, samples);
    let limits = thresholds(spec);
    let exe = load_test::serve_exe();
    let host_memory = measure::host_memory();
    let total = spec.configurations.len();
    let mut steps: Vec<Option<InferenceRecommendationsJobStep>> = vec![None; total];
    let mut rates: Vec<Option<(f64, f64)>> = vec![None; total];
    let parallel = spec.max_parallel_tests.max(1) as usize;
    let indices: Vec<usize> = (0..total).collect();
    for chunk in indices.chunks(parallel) {
        if cancel.is_cancelled() {
            return Err(JobError::Stopped);
        }
        reporter.lock().unwrap().phase(
            &format!("load test {} of {total}", chunk[0] + 1),
            "tests",
            total as u64,
        );
        let runs: Vec<(usize, Result<load_test::TestRun, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (config, prepared) = (&spec.configurations[i], &prepared[i]);
                    let (exe, pattern, payloads, stop) = (&exe, &pattern, &payloads, &stop);
                    let log = args.job_dir.join(format!("serve-{}.log", i + 1));
                    s.spawn(move || {
                        let run = prepared.clone().and_then(|dir| {
                            load_test::run(
                                exe,
                                &dir,
                                &config.environment,
                                &log,
                                pattern,
                                payloads,
                                stop,
                                cancel,
                                host_memory,
                            )
                        });
                        (i, run)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a load test thread panicked"))
                .collect()
        });
        if cancel.is_cancelled() {
            return Err(JobError::Stopped);
        }
        for (i, run) in runs {
            let (step, rate) = step_of(spec, i, run, &limits);
            steps[i] = Some(step);
            rates[i] = rate;
        }
        let finished: Vec<_> = steps.iter().flatten().cloned().collect();
        write_steps(&args.job_dir, &finished).map_err(|source| JobError::Io {
            what: "writing the steps in",
            path: args.job_dir.clone(),
            source,
        })?;
        reporter
            .lock()
            .unwrap()
            .step(finished.len() as u64, total as u64);
    }
    let steps: Vec<InferenceRecommendationsJobStep> = steps.into_iter().flatten().collect();
    let mut ranked: Vec<(usize, f64, f64)> = rates
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|(rate, p50)| (i, rate, p50)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let recommendations: Vec<InferenceRecommendation> = ranked
        .iter()
        .filter_map(|&(i, _, _)| {
            let b = steps[i].inference_benchmark.clone()?;
            Some(InferenceRecommendation {
                recommendation_id: Some(format!("measured-{}", endpoint_name(&spec.name, i + 1))),
                metrics: b.metrics,
                endpoint_configuration: b.endpoint_configuration?,
                model_configuration: b.model_configuration,
                invocation_end_time: b.invocation_end_time,
                invocation_start_time: b.invocation_start_time,
            })
        })
        .collect();
    let within = if limits.is_empty() {
        String::new()
    } else {
        format!(
            " within the latency thresholds ({})",
            limits
                .iter()
                .map(|(p, ms)| format!("{p} <= {ms:.0} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let skipped = if spec.skipped_configurations > 0 {
        format!(
            "; {} more configurations of the sweep were left out by MaxNumberOfTests",
            spec.skipped_configurations
        )
    } else {
        String::new()
    };
    let others: Vec<String> = ranked
        .iter()
        .skip(1)
        .map(|&(i, rate, p50)| {
            format!(
                "{}: {rate:.0}/min at P50 {p50:.0} ms",
                describe(&spec.configurations[i])
            )
        })
        .collect();
    let unqualified: Vec<String> = (0..total)
        .filter(|i| rates[*i].is_none())
        .map(|i| {
            let reason = steps[i]
                .inference_benchmark
                .as_ref()
                .and_then(|b| b.failure_reason.clone())
                .unwrap_or_else(|| format!("no part of its test stayed{within}"));
            format!("{}: {reason}", describe(&spec.configurations[i]))
        })
        .collect();
    let explanation = match ranked.first() {
        None => format!(
            "No configuration served the traffic{within}: {}{skipped}",
            unqualified.join("; ")
        ),
        Some(&(i, rate, p50)) => format!(
            "Recommended {}: {rate:.0} invocations per minute at P50 {p50:.0} ms, measured on \
             this host with temper-serve, the most of the {total} configurations tested{within}. \
             Others: {}{}{skipped}",
            describe(&spec.configurations[i]),
            if others.is_empty() {
                "none".to_string()
            } else {
                others.join("; ")
            },
            if unqualified.is_empty() {
                String::new()
            } else {
                format!(". Not qualified: {}", unqualified.join("; "))
            }
        ),
    };
    Ok(RecommendationReport {
        recommendations,
        steps,
        explanation,
    })
}

/// The step of test `i`, and its qualifying rate (if any part of it stayed within the
/// thresholds).
fn step_of(
    spec: &RecommendationSpec,
    i: usize,
    run: Result<load_test::TestRun, String>,
    limits: &[(String, f64)],
) -> (InferenceRecommendationsJobStep, Option<(f64, f64)>) {
    let config = &spec.configurations[i];
    let endpoint = EndpointOutputConfiguration {
        endpoint_name: endpoint_name(&spec.name, i + 1),
        variant_name: "measured-here".into(),
        instance_type: Some(config.instance_type.clone()),
        initial_instance_count: Some(1),
    };
    let model_configuration = ModelConfiguration {
        environment_parameters: environment(&config.environment),
        ..Default::default()
    };
    let mut benchmark = RecommendationJobInferenceBenchmark {
        metrics: None,
        endpoint_metrics: None,
        endpoint_configuration: Some(endpoint),
        model_configuration,
        failure_reason: None,
        invocation_end_time: None,
        invocation_start_time: None,
    };
    let (status, rate) = match run {
        Err(reason) => {
            benchmark.failure_reason = Some(reason);
            (RecommendationJobStatus::Failed, None)
        }
        Ok(run) if run.report.requests == run.report.errors => {
            benchmark.failure_reason = Some(format!(
                "no request succeeded: {} requests, answered {:?} (status 0: no answer)",
                run.report.requests, run.report.statuses
            ));
            benchmark.invocation_start_time = Some(EpochSeconds(run.started));
            benchmark.invocation_end_time = Some(EpochSeconds(run.ended));
            (RecommendationJobStatus::Failed, None)
        }
        Ok(run) => {
            let rate = best_rate(&run.report, limits);
            let (ipm, p50) =
                rate.unwrap_or((run.report.invocations_per_minute, run.report.latency_ms.p50));
            let metrics = RecommendationMetrics {
                cost_per_hour: None,
                cost_per_inference: None,
                max_invocations: Some(ipm.round() as i32),
                model_latency: Some(p50.round() as i32),
                cpu_utilization: run.cpu_utilization.map(|c| c as f32),
                memory_utilization: run.memory_utilization.map(|m| m as f32),
                model_setup_time: Some(run.setup_seconds.ceil() as i32),
            };
            eprintln!(
                "test {}: {}: {} requests ({} errors) in {:.1} s, best {:.1}/min at P50 {:.0} ms{}; \
                 stopped: {:?}",
                i + 1,
                describe(config),
                run.report.requests,
                run.report.errors,
                run.report.seconds,
                ipm,
                p50,
                if rate.is_some() { "" } else { " (over the thresholds)" },
                run.report.stopped
            );
            benchmark.endpoint_metrics = Some(InferenceMetrics {
                max_invocations: metrics.max_invocations.unwrap_or_default(),
                model_latency: metrics.model_latency.unwrap_or_default(),
            });
            benchmark.metrics = Some(metrics);
            benchmark.invocation_start_time = Some(EpochSeconds(run.started));
            benchmark.invocation_end_time = Some(EpochSeconds(run.ended));
            (RecommendationJobStatus::Completed, rate)
        }
    };
    let step = InferenceRecommendationsJobStep {
        step_type: "BENCHMARK".into(),
        job_name: spec.name.clone(),
        status,
        inference_benchmark: Some(benchmark),
    };
    (step, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_hold_to_the_pattern() {
        assert_eq!(endpoint_name("rec_job.1", 2), "rec-job-1-2");
        let long = endpoint_name(&"x".repeat(100), 12);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-12"));
        assert_eq!(endpoint_name("__", 1), "temper-1");
    }

    #[test]
    fn patterns_default_and_follow_the_request() {
        let stairs = TrafficPattern {
            traffic_type: Some(TrafficType::Stairs),
            phases: None,
            stairs: Some(temper_api::recommendation::Stairs {
                duration_in_seconds: Some(10),
                number_of_steps: Some(3),
                users_per_step: Some(2),
            }),
        };
        assert_eq!(pattern(Some(&stairs)).peak_users(), 6);
        assert_eq!(pattern(None).duration(), Duration::from_secs(120));
    }
}
