//! SageMaker's container contract as the LMI (DJL Serving) images answer it: `POST /invocations`
//! with `{"inputs": "...", "parameters": {...}, "stream": bool}`, answered with
//! `{"generated_text": "..."}` (plus `details` when asked), or, streaming, JSON lines of one
//! token each and a last line with the whole text.

use crate::app::{lmi_error, parse_json, ApiError, Generation, Shared};
use crate::engine::Event;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use temper_runtime::generate::FinishReason;
use temper_text::sampling::SamplingParams;

/// LMI's default when a request gives no `max_new_tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub inputs: String,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub stream: bool,
}

/// LMI's generation parameters that temper implements; any other is refused by name rather
/// than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    pub max_new_tokens: Option<usize>,
    /// Without it (or false) decoding is greedy, as in LMI.
    #[serde(default)]
    pub do_sample: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Adds `details` (finish reason, token count, tokens) to the response.
    #[serde(default)]
    pub details: bool,
    /// Puts the prompt before the generated text.
    #[serde(default)]
    pub return_full_text: bool,
}

/// LMI's names for why generation ended.
fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos => "eos_token",
        FinishReason::Stop => "stop_sequence",
        FinishReason::Length => "length",
    }
}

impl Parameters {
    fn sampling(&self) -> SamplingParams {
        if !self.do_sample {
            return SamplingParams::greedy();
        }
        SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed.unwrap_or_else(crate::app::fresh_seed),
        }
    }
}

pub async fn invocations(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let resp = match handle(&state, body).await {
        Ok(resp) => resp,
        Err(e) => lmi_error(&e),
    };
    state
        .metrics
        .count_request("/invocations", resp.status().as_u16());
    resp
}

async fn handle(state: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError {
        status: r.status(),
        kind: "invalid_request_error",
        message: format!(
            "{} (this server takes bodies of up to {} bytes)",
            r.body_text(),
            state.http.max_body_bytes
        ),
        param: None,
    })?;
    let req: Request = parse_json(&body)?;
    let p = &req.parameters;
    let prompt = state.tokenize(&req.inputs, true)?;
    let events = state.submit(Generation {
        prompt,
        max_new_tokens: p.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        sampling: p.sampling(),
        stop: p.stop.clone(),
        ignore_eos: false,
    })?;
    let prefix = if p.return_full_text {
        req.inputs.clone()
    } else {
        String::new()
    };
    if req.stream {
        return Ok(stream(events, prefix, req.parameters.details));
    }
    let c = crate::app::collect(events).await?;
    let mut out = json!({"generated_text": format!("{prefix}{}", c.done.text)});
    if p.details {
        let tokens: Vec<Value> = c
            .tokens
            .iter()
            .map(|(id, text, lp)| json!({"id": id, "text": text, "log_prob": lp, "special": false}))
            .collect();
        out["details"] = json!({
            "finish_reason": finish_name(c.done.reason),
            "generated_tokens": c.done.generated_tokens,
            "inputs": req.inputs,
            "tokens": tokens,
        });
    }
    Ok(crate::app::json_response(StatusCode::OK, out))
}

/// JSON lines: `{"token": {...}}` per token, then `{"token": null, "generated_text": ...}`
/// (with `details` when asked); a failure after the first line is sent as a last
/// `{"error": ..., "code": ...}` line.
fn stream(
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prefix: String,
    details: bool,
) -> Response {
    let lines = futures::stream::unfold(Some(events), move |events| {
        let prefix = prefix.clone();
        async move {
            let mut events = events?;
            let line = match events.recv().await? {
                Event::Token { id, text, logprob } => {
                    json!({"token": {"id": id, "text": text, "log_prob": logprob, "special": false}})
                }
                Event::Done(done) => {
                    let mut last = json!({
                        "token": null,
                        "generated_text": format!("{prefix}{}", done.text),
                    });
                    if !done.tail.is_empty() {
                        last["token"] = json!({"id": null, "text": done.tail, "special": false});
                    }
                    if details {
                        last["details"] = json!({
                            "finish_reason": finish_name(done.reason),
                            "generated_tokens": done.generated_tokens,
                        });
                    }
                    let mut bytes = serde_json::to_vec(&last).unwrap_or_default();
                    bytes.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), None));
                }
                Event::Failed(f) => {
                    let e = ApiError::from_failure(f);
                    let mut bytes =
                        serde_json::to_vec(&json!({"error": e.message, "code": e.status.as_u16()}))
                            .unwrap_or_default();
                    bytes.push(b'\n');
                    return Some((Ok(Bytes::from(bytes)), None));
                }
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            Some((Ok(Bytes::from(bytes)), Some(events)))
        }
    });
    let mut resp = Body::from_stream(lines).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonlines"),
    );
    resp
}
