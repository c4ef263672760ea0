//! The HTTP application: routes, shared state, errors, and turning a checked request into an
//! engine [`Job`].

use crate::engine::{EngineHandle, Event, Job, SubmitError};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temper_runtime::generate::GenerateOptions;
use temper_text::chat::ChatTemplate;
use temper_text::sampling::SamplingParams;
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// What the server knows of the model it serves.
pub struct Served {
    /// The name clients use (`model` in OpenAI requests).
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub eos_token_ids: Vec<u32>,
    /// The model's context window.
    pub max_positions: usize,
    /// Longest prompt accepted, in tokens.
    pub max_input_tokens: usize,
    /// e.g. "int8 per channel, f32 activations".
    pub format: String,
}

/// Limits and defaults of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// From arrival to the last token.
    pub request_timeout: Duration,
}

pub struct AppState {
    pub served: Served,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub http: HttpConfig,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let limit = state.http.max_body_bytes;
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(crate::lmi::invocations))
        .route("/v1/completions", post(crate::openai::completions))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/models", get(crate::openai::models))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// SageMaker's health check: 200 while the engine runs.
async fn ping(State(state): State<Shared>) -> Response {
    if state.engine.is_alive() {
        (StatusCode::OK, "Healthy\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the model engine has stopped; see the server's log\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// A request refused or failed, with the status it maps to.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_field(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..Self::bad_request(message)
        }
    }

    pub fn from_submit(e: SubmitError) -> Self {
        let status = match e {
            SubmitError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            SubmitError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            kind: "server_overloaded",
            message: e.to_string(),
            param: None,
        }
    }

    pub fn from_failure(f: crate::engine::Failure) -> Self {
        let status = match f {
            crate::engine::Failure::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            crate::engine::Failure::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            kind: "server_error",
            message: f.to_string(),
            param: None,
        }
    }

    /// A 429 asks the client to come back in a second.
    pub fn finish(&self, mut resp: Response) -> Response {
        *resp.status_mut() = self.status;
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Parses a JSON body into `T`, naming the problem and the field it is in.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("the request body is not valid: {inner}"))
        } else {
            ApiError::bad_request(format!("the request field `{path}` is not valid: {inner}"))
        }
    })
}

/// How a request wants its tokens chosen and when to stop.
pub struct Generation {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    /// The client asked for `max_new_tokens` (rather than getting a default): more than the
    /// context window leaves is then an error, as in vLLM, not silently cut.
    pub explicit_max: bool,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Generate `max_new_tokens` even past end-of-sequence.
    pub ignore_eos: bool,
}

/// A seed for requests that give none: different per request.
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

impl AppState {
    /// Tokenizes `text` (special tokens added unless the text is a rendered chat prompt,
    /// which holds them already).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, ApiError> {
        let encoding = self
            .served
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Checks `g` against the model and queues it; the receiver gets its events.
    pub fn submit(&self, g: Generation) -> Result<UnboundedReceiver<Event>, ApiError> {
        let served = &self.served;
        if g.prompt.is_empty() {
            return Err(ApiError::bad_field(
                "prompt",
                "the prompt is empty (no tokens after tokenization)",
            ));
        }
        if let Some(&t) = g
            .prompt
            .iter()
            .find(|&&t| t as usize >= served.tokenizer.get_vocab_size(true))
        {
            return Err(ApiError::bad_field(
                "prompt",
                format!(
                    "token id {t} is outside the vocabulary of {} tokens",
                    served.tokenizer.get_vocab_size(true)
                ),
            ));
        }
        if g.prompt.len() > served.max_input_tokens {
            return Err(ApiError::bad_field(
                "prompt",
                format!(
                    "the prompt is {} tokens; this server takes at most {} (the model's context \
                     window is {}): shorten it",
                    g.prompt.len(),
                    served.max_input_tokens,
                    served.max_positions
                ),
            ));
        }
        if g.max_new_tokens == 0 {
            return Err(ApiError::bad_field(
                "max_tokens",
                "at least one new token must be asked for",
            ));
        }
        g.sampling
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Whatever room the context window leaves after the prompt.
        let room = served.max_positions.saturating_sub(g.prompt.len());
        if room == 0 {
            return Err(ApiError::bad_field(
                "prompt",
                format!(
                    "the prompt fills the model's {}-token context window; shorten it",
                    served.max_positions
                ),
            ));
        }
        if g.explicit_max && g.max_new_tokens > room {
            return Err(ApiError::bad_field(
                "max_tokens",
                format!(
                    "the prompt ({} tokens) and {} new tokens exceed the model's context window \
                     of {} tokens; ask for at most {room} new tokens",
                    g.prompt.len(),
                    g.max_new_tokens,
                    served.max_positions
                ),
            ));
        }
        let max_new = g.max_new_tokens.min(room);
        let (events, receiver) = unbounded_channel();
        let received = Instant::now();
        let job = Job {
            prompt: g.prompt,
            options: GenerateOptions {
                max_new_tokens: max_new,
                sampling: g.sampling,
                stop_strings: g.stop,
                eos_token_ids: if g.ignore_eos {
                    vec![]
                } else {
                    served.eos_token_ids.clone()
                },
            },
            max_new,
            events,
            received,
            deadline: received + self.http.request_timeout,
        };
        self.engine.submit(job).map_err(ApiError::from_submit)?;
        Ok(receiver)
    }
}

/// Everything a non-streaming request gets: its tokens and how it ended.
pub struct Collected {
    pub tokens: Vec<(u32, String, f32)>,
    pub done: crate::engine::Finished,
}

/// Waits for a request's end.
pub async fn collect(mut events: UnboundedReceiver<Event>) -> Result<Collected, ApiError> {
    let mut tokens = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { id, text, logprob } => tokens.push((id, text, logprob)),
            Event::Done(done) => return Ok(Collected { tokens, done }),
            Event::Failed(f) => return Err(ApiError::from_failure(f)),
        }
    }
    Err(ApiError::from_failure(crate::engine::Failure::Model(
        "the engine dropped the request".into(),
    )))
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Seconds since the epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short unique id for responses.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fresh_seed())
}

/// The LMI flavour of an error body.
pub fn lmi_error(e: &ApiError) -> Response {
    e.finish(json_response(
        e.status,
        json!({"code": e.status.as_u16(), "error": e.kind, "message": e.message}),
    ))
}

/// The OpenAI flavour of an error body.
pub fn openai_error(e: &ApiError) -> Response {
    e.finish(json_response(
        e.status,
        json!({"error": {"message": e.message, "type": e.kind, "param": e.param,
                         "code": e.status.as_u16()}}),
    ))
}
