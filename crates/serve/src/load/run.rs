//! Playing a pattern against a server.

use super::pattern::Pattern;
use super::report::{window, LoadReport, Percentiles, Sample};
use futures::StreamExt;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request body and where to send it (`/invocations`, `/v1/completions`, ...).
#[derive(Debug, Clone)]
pub struct Payload {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// When to end a test before its pattern does.
#[derive(Debug, Clone, Default)]
pub struct StopConditions {
    /// Stop once a window completes this many invocations per minute.
    pub max_invocations_per_minute: Option<u32>,
    /// Stop once a window's latency percentile (`P50`..`P99`) passes its limit.
    pub latency_thresholds: Vec<(String, Duration)>,
    /// Stop when invocations per minute stop growing while users are added (the server is
    /// saturated): three windows in a row within 5% of their best, with more users than
    /// the first of them.
    pub stop_when_flat: bool,
    /// The window the conditions are checked over (default 10 s).
    pub window: Option<Duration>,
    /// A request without an answer by then counts as failed (status 0; default 600 s).
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "reason")]
pub enum StopReason {
    PatternEnded,
    MaxInvocations {
        invocations_per_minute: f64,
    },
    LatencyThreshold {
        percentile: String,
        milliseconds: f64,
        limit_milliseconds: f64,
    },
    Flattened {
        invocations_per_minute: f64,
    },
}

/// How often the controller adjusts the users and checks the conditions.
const TICK: Duration = Duration::from_millis(20);

/// Plays `pattern` against `base_url` (e.g. `http://127.0.0.1:8080`), each user sending the
/// payloads in turn (user `i` starts at payload `i`).
pub async fn run(
    base_url: &str,
    pattern: &Pattern,
    payloads: &[Payload],
    stop: &StopConditions,
) -> anyhow::Result<LoadReport> {
    pattern.validate()?;
    anyhow::ensure!(!payloads.is_empty(), "no payloads to send");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(pattern.peak_users() as usize)
        .timeout(stop.request_timeout.unwrap_or(Duration::from_secs(600)))
        .build()?;
    let payloads: Arc<Vec<Payload>> = Arc::new(payloads.to_vec());
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let target = Arc::new(AtomicU32::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let spans = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let end = pattern.duration().as_secs_f64();
    let window_len = stop.window.unwrap_or(Duration::from_secs(10)).as_secs_f64();
    let t0 = Instant::now();
    let mut users = Vec::new();
    let mut next_window = window_len;
    let mut windows = Vec::new();
    let mut stopped = StopReason::PatternEnded;
    loop {
        let t = t0.elapsed().as_secs_f64();
        if t >= end {
            break;
        }
        let want = pattern.users_at(t);
        target.store(want, Ordering::Release);
        // Slot `i` runs user `i` while the pattern wants more than `i` users; a user that
        // left when the count dropped is started again when it rises.
        for index in 0..want {
            let slot = index as usize;
            if slot == users.len() {
                users.push(None);
            }
            if users[slot]
                .as_ref()
                .is_some_and(|h: &tokio::task::JoinHandle<()>| !h.is_finished())
            {
                continue;
            }
            let user = User {
                index,
                client: client.clone(),
                base: base_url.trim_end_matches('/').to_string(),
                payloads: payloads.clone(),
                samples: samples.clone(),
                target: target.clone(),
                stopping: stopping.clone(),
                spans: spans.clone(),
                t0,
            };
            users[slot] = Some(tokio::spawn(user.run()));
        }
        if t >= next_window {
            let start = next_window - window_len;
            let w = window(
                &samples.lock().unwrap_or_else(|e| e.into_inner()),
                start,
                window_len,
                pattern.users_at(start),
            );
            windows.push(w);
            next_window += window_len;
            if let Some(reason) = check(stop, &windows) {
                stopped = reason;
                break;
            }
        }
        tokio::time::sleep(TICK).await;
    }
    let stopped_at = t0.elapsed().as_secs_f64().min(end);
    stopping.store(true, Ordering::Release);
    for u in users.into_iter().flatten() {
        let _ = u.await;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let spans = std::mem::take(&mut *spans.lock().unwrap_or_else(|e| e.into_inner()));
    let delivered: f64 = spans
        .iter()
        .map(|&(from, until)| (until.min(stopped_at) - from).max(0.0))
        .sum();
    // The pattern's offered load up to where the test stopped.
    let planned = Pattern::truncated_user_seconds(pattern, stopped_at);
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
    let mut statuses = std::collections::BTreeMap::new();
    for s in &samples {
        *statuses.entry(s.status).or_insert(0) += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let tokens: u64 = ok.iter().filter_map(|s| s.tokens).sum();
    Ok(LoadReport {
        seconds,
        requests: samples.len(),
        errors: samples.len() - ok.len(),
        statuses,
        invocations_per_minute: ok.len() as f64 * 60.0 / seconds,
        latency_ms: Percentiles::of(&ok.iter().map(|s| s.latency).collect::<Vec<_>>()),
        first_byte_ms: Percentiles::of(&ok.iter().map(|s| s.first_byte).collect::<Vec<_>>()),
        inter_chunk_ms: Percentiles::of(
            &ok.iter()
                .flat_map(|s| s.gaps.iter().copied())
                .collect::<Vec<_>>(),
        ),
        tokens_per_second: tokens as f64 / seconds,
        planned_user_seconds: planned,
        delivered_user_seconds: delivered,
        windows,
        stopped,
        samples,
    })
}

impl Pattern {
    /// User-seconds of the pattern's first `until` seconds.
    fn truncated_user_seconds(&self, until: f64) -> f64 {
        let points = self.change_points();
        points
            .iter()
            .enumerate()
            .filter(|(_, &t)| t < until)
            .map(|(i, &t)| {
                let next = points
                    .get(i + 1)
                    .copied()
                    .unwrap_or(f64::INFINITY)
                    .min(until);
                // The count at the interval's middle: exactly at a change point, float
                // rounding can land on either side of it.
                f64::from(self.users_at((t + next) / 2.0)) * (next - t)
            })
            .sum()
    }
}

/// Whether the windows so far meet a stopping condition.
fn check(stop: &StopConditions, windows: &[super::Window]) -> Option<StopReason> {
    let last = windows.last()?;
    if let Some(max) = stop.max_invocations_per_minute {
        if last.invocations_per_minute >= f64::from(max) {
            return Some(StopReason::MaxInvocations {
                invocations_per_minute: last.invocations_per_minute,
            });
        }
    }
    for (name, limit) in &stop.latency_thresholds {
        let limit_ms = limit.as_secs_f64() * 1000.0;
        if let Some(v) = last.latency_ms.get(name) {
            if last.completed > 0 && v > limit_ms {
                return Some(StopReason::LatencyThreshold {
                    percentile: name.clone(),
                    milliseconds: v,
                    limit_milliseconds: limit_ms,
                });
            }
        }
    }
    if stop.stop_when_flat && windows.len() >= 3 {
        let recent = &windows[windows.len() - 3..];
        let best = recent
            .iter()
            .map(|w| w.invocations_per_minute)
            .fold(0.0, f64::max);
        let flat = best > 0.0
            && recent
                .iter()
                .all(|w| w.invocations_per_minute >= 0.95 * best);
        if flat && recent[2].users > recent[0].users {
            return Some(StopReason::Flattened {
                invocations_per_minute: last.invocations_per_minute,
            });
        }
    }
    None
}

struct User {
    index: u32,
    client: reqwest::Client,
    base: String,
    payloads: Arc<Vec<Payload>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    target: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
    /// (from, until) seconds each user was active.
    spans: Arc<Mutex<Vec<(f64, f64)>>>,
    t0: Instant,
}

impl User {
    async fn run(self) {
        let from = self.t0.elapsed().as_secs_f64();
        let mut next = self.index as usize;
        while !self.stopping.load(Ordering::Acquire)
            && self.index < self.target.load(Ordering::Acquire)
        {
            let p = &self.payloads[next % self.payloads.len()];
            next += 1;
            let (sample, retry_after) = self.send(p).await;
            let failed = !sample.ok();
            self.samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sample);
            if failed {
                // A refused or failed request is not retried at once: that would flood the
                // server with errors instead of playing the pattern.
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(100))).await;
            }
        }
        let until = self.t0.elapsed().as_secs_f64();
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((from, until));
    }

    /// One request; with the `Retry-After` the server asked for, if any.
    async fn send(&self, p: &Payload) -> (Sample, Option<Duration>) {
        let sent = Instant::now();
        let start = (sent - self.t0).as_secs_f64();
        let resp = self
            .client
            .post(format!("{}{}", self.base, p.path))
            .header("content-type", &p.content_type)
            .body(p.body.clone())
            .send()
            .await;
        let mut first_byte = None;
        let mut gaps = Vec::new();
        let mut retry_after = None;
        let (status, body) = match resp {
            Ok(resp) => {
                let status = resp.status().as_u16();
                retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(60.0)));
                let mut body = Vec::new();
                let mut last_chunk: Option<f64> = None;
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => {
                            let now = sent.elapsed().as_secs_f64();
                            if let Some(prev) = last_chunk.replace(now) {
                                gaps.push(now - prev);
                            }
                            first_byte.get_or_insert(now);
                            body.extend_from_slice(&c);
                        }
                        Err(_) => break,
                    }
                }
                (status, body)
            }
            // No answer at all (refused, reset): status 0.
            Err(_) => (0, Vec::new()),
        };
        let latency = sent.elapsed().as_secs_f64();
        let sample = Sample {
            start,
            latency,
            first_byte: first_byte.unwrap_or(latency),
            status,
            gaps,
            tokens: reported_tokens(&body),
        };
        (sample, retry_after)
    }
}

/// The generated token count an answer reports: OpenAI's `usage.completion_tokens` or LMI's
/// `details.generated_tokens` (in the body, or in the last line or event of a stream).
fn reported_tokens(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let from = |v: &serde_json::Value| {
        v["usage"]["completion_tokens"]
            .as_u64()
            .or_else(|| v["details"]["generated_tokens"].as_u64())
    };
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return from(&v);
    }
    text.lines().rev().find_map(|l| {
        let l = l.strip_prefix("data: ").unwrap_or(l);
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| from(&v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern whose users drop and come back is played faithfully against a real server
    /// on loopback (answers after 20 ms; 429 with Retry-After for one request in ten).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn users_that_leave_come_back_when_the_pattern_rises_again() {
        use axum::http::StatusCode;
        use std::sync::atomic::AtomicUsize;
        let count = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().route(
            "/x",
            axum::routing::post(move || {
                let n = count.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if n % 10 == 9 {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "0.05")],
                            "{}",
                        )
                    } else {
                        (
                            StatusCode::OK,
                            [("retry-after", "0")],
                            "{\"usage\": {\"completion_tokens\": 4}}",
                        )
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let phase = |users, secs| super::super::Phase {
            initial_users: users,
            spawn_rate_per_minute: 0,
            duration: Duration::from_secs(secs),
        };
        let pattern = Pattern::Phases(vec![phase(4, 1), phase(1, 1), phase(4, 1)]);
        let payload = Payload {
            path: "/x".into(),
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        };
        let report = run(&url, &pattern, &[payload], &StopConditions::default())
            .await
            .unwrap();
        assert_eq!(report.planned_user_seconds, 9.0);
        let ratio = report.offered_ratio();
        assert!((ratio - 1.0).abs() < 0.05, "offered {ratio}: {report:?}");
        // The third phase ran four users again: requests started in it.
        let third = report.samples.iter().filter(|s| s.start >= 2.0).count();
        assert!(third > 3 * 40, "{third} requests in the last phase");
        assert!(report.statuses.get(&429).is_some_and(|&n| n > 0));
        assert_eq!(report.stopped, StopReason::PatternEnded);
    }

    #[test]
    fn tokens_are_read_from_either_flavour() {
        assert_eq!(
            reported_tokens(br#"{"usage": {"completion_tokens": 7}}"#),
            Some(7)
        );
        assert_eq!(
            reported_tokens(b"{\"token\": {}}\n{\"details\": {\"generated_tokens\": 3}}\n"),
            Some(3)
        );
        assert_eq!(
            reported_tokens(b"data: {\"choices\": []}\n\ndata: {\"usage\": {\"completion_tokens\": 5}}\n\ndata: [DONE]\n"),
            Some(5)
        );
        assert_eq!(reported_tokens(b"{\"generated_text\": \"x\"}"), None);
    }

    #[test]
    fn flat_invocations_stop_only_while_users_grow() {
        let w = |users, ipm| super::super::Window {
            start: 0.0,
            seconds: 10.0,
            users,
            completed: 1,
            errors: 0,
            invocations_per_minute: ipm,
            latency_ms: Percentiles::default(),
        };
        let stop = StopConditions {
            stop_when_flat: true,
            ..Default::default()
        };
        assert!(check(&stop, &[w(1, 100.0), w(2, 190.0), w(3, 250.0)]).is_none());
        assert!(matches!(
            check(&stop, &[w(2, 200.0), w(3, 205.0), w(4, 198.0)]),
            Some(StopReason::Flattened { .. })
        ));
        // Flat because the users are flat is not saturation.
        assert!(check(&stop, &[w(2, 200.0), w(2, 205.0), w(2, 198.0)]).is_none());
        let stop = StopConditions {
            latency_thresholds: vec![("P95".into(), Duration::from_millis(100))],
            max_invocations_per_minute: Some(500),
            ..Default::default()
        };
        let mut slow = w(1, 10.0);
        slow.latency_ms.p95 = 150.0;
        assert!(matches!(
            check(&stop, &[slow]),
            Some(StopReason::LatencyThreshold { .. })
        ));
        assert!(matches!(
            check(&stop, &[w(1, 600.0)]),
            Some(StopReason::MaxInvocations { .. })
        ));
    }
}
