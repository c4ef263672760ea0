//! The server's Prometheus metrics (OpenMetrics text at `GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Requests by route and HTTP status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    /// Requests waiting for a place in the batch.
    pub queued: Gauge,
    /// Sequences in the running batch.
    pub running: Gauge,
    /// Requests whose client went away before they finished.
    pub cancelled: Counter,
    pub timed_out: Counter,
    pub failed: Counter,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_seconds: Histogram,
    pub batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("temper");
        let requests = Family::<RequestLabels, Counter>::default();
        let prompt_tokens = Counter::default();
        let generation_tokens = Counter::default();
        let queued = Gauge::default();
        let running = Gauge::default();
        let cancelled = Counter::default();
        let timed_out = Counter::default();
        let failed = Counter::default();
        // 1 ms to about 65 s.
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let time_to_first_token = seconds();
        let inter_token_latency = seconds();
        let request_seconds = seconds();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens prefilled",
            prompt_tokens.clone(),
        );
        registry.register(
            "generation_tokens",
            "Tokens generated",
            generation_tokens.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a place in the batch",
            queued.clone(),
        );
        registry.register(
            "running_sequences",
            "Sequences in the running batch",
            running.clone(),
        );
        registry.register(
            "cancelled_requests",
            "Requests whose client disconnected before the end",
            cancelled.clone(),
        );
        registry.register(
            "timed_out_requests",
            "Requests that ran past their timeout",
            timed_out.clone(),
        );
        registry.register(
            "failed_requests",
            "Requests the model failed on",
            failed.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From arrival to the first generated token",
            time_to_first_token.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Between consecutive tokens of one request",
            inter_token_latency.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "From arrival to the last token",
            request_seconds.clone(),
        );
        registry.register(
            "batch_size",
            "Sequences per decode step",
            batch_size.clone(),
        );
        Metrics {
            registry,
            requests,
            prompt_tokens,
            generation_tokens,
            queued,
            running,
            cancelled,
            timed_out,
            failed,
            time_to_first_token,
            inter_token_latency,
            request_seconds,
            batch_size,
        }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
