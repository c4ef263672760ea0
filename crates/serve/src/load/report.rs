//! What a load test measured.

use serde::Serialize;

/// One request.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds after the test's start the request was sent.
    pub start: f64,
    /// Seconds to the last byte of the answer.
    pub latency: f64,
    /// Seconds to the first byte of the answer (the first token, for streamed answers).
    pub first_byte: f64,
    pub status: u16,
    /// Seconds between consecutive chunks of a streamed answer (about one token each: the
    /// inter-token latency as the client sees it).
    pub gaps: Vec<f64>,
    /// Generated tokens the answer reports (`usage.completion_tokens` or
    /// `details.generated_tokens`), when it does.
    pub tokens: Option<u64>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == 200
    }

    pub fn end(&self) -> f64 {
        self.start + self.latency
    }
}

/// Latency percentiles, milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Of `seconds` (any order); all zero when empty.
    pub fn of(seconds: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = seconds.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1] * 1000.0
        };
        Percentiles {
            p50: at(50.0),
            p90: at(90.0),
            p95: at(95.0),
            p99: at(99.0),
        }
    }

    /// The value of `name` (`P50`, `P90`, `P95`, `P99`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "P50" => Some(self.p50),
            "P90" => Some(self.p90),
            "P95" => Some(self.p95),
            "P99" => Some(self.p99),
            _ => None,
        }
    }
}

/// Requests that completed within one window of the test.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start: f64,
    pub seconds: f64,
    /// Users the pattern asked for at the window's start.
    pub users: u32,
    pub completed: usize,
    pub errors: usize,
    pub invocations_per_minute: f64,
    pub latency_ms: Percentiles,
}

/// A whole test.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub seconds: f64,
    pub requests: usize,
    pub errors: usize,
    /// Answers by status, e.g. `{200: 950, 429: 50}`.
    pub statuses: std::collections::BTreeMap<u16, usize>,
    pub invocations_per_minute: f64,
    pub latency_ms: Percentiles,
    pub first_byte_ms: Percentiles,
    /// Between chunks of streamed answers.
    pub inter_chunk_ms: Percentiles,
    /// Generated tokens per second over the test (answers that report their tokens).
    pub tokens_per_second: f64,
    /// User-seconds the pattern asks for and what the generator delivered.
    pub planned_user_seconds: f64,
    pub delivered_user_seconds: f64,
    pub windows: Vec<Window>,
    pub stopped: super::StopReason,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl LoadReport {
    /// Delivered over planned offered load: 1 is a perfect rendition of the pattern.
    pub fn offered_ratio(&self) -> f64 {
        if self.planned_user_seconds > 0.0 {
            self.delivered_user_seconds / self.planned_user_seconds
        } else {
            0.0
        }
    }
}

/// The requests that completed in `[start, start + seconds)`.
pub fn window(samples: &[Sample], start: f64, seconds: f64, users: u32) -> Window {
    let done: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end() >= start && s.end() < start + seconds)
        .collect();
    let ok: Vec<f64> = done.iter().filter(|s| s.ok()).map(|s| s.latency).collect();
    Window {
        start,
        seconds,
        users,
        completed: ok.len(),
        errors: done.len() - ok.len(),
        invocations_per_minute: ok.len() as f64 * 60.0 / seconds,
        latency_ms: Percentiles::of(&ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50, p.p90, p.p95, p.p99), (50.0, 90.0, 95.0, 99.0));
        assert_eq!(Percentiles::of(&[0.2]).p99, 200.0);
        assert_eq!(Percentiles::of(&[]).p50, 0.0);
        assert_eq!(p.get("P95"), Some(95.0));
        assert_eq!(p.get("P97"), None);
    }
}
