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
        explicit_max: p.max_new_tokens.is_some(),
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

/// JSON lines as LMI streams them: `{"token": {...}}` per token, the last token's line also
/// carrying `generated_text` (and `details` when asked). Text released only at the end is
/// added to that last token's text, so the tokens' texts always add up to `generated_text`.
/// A failure is sent as a last `{"error": ..., "code": ...}` line.
fn stream(
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prefix: String,
    details: bool,
) -> Response {
    /// The stream's state: the token line held back until the next event says whether it
    /// is the last.
    struct S {
        events: tokio::sync::mpsc::UnboundedReceiver<Event>,
        held: Option<Value>,
        /// A line to send after the held one (an error), then the end.
        trailer: Option<Value>,
        prefix: String,
        details: bool,
        done: bool,
    }
    fn line(v: &Value) -> Bytes {
        let mut bytes = serde_json::to_vec(v).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
    let state = S {
        events,
        held: None,
        trailer: None,
        prefix,
        details,
        done: false,
    };
    let lines = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(t) = s.trailer.take() {
                return Some((Ok::<_, std::convert::Infallible>(line(&t)), s));
            }
            if s.done {
                return None;
            }
            let event = s.events.recv().await;
            let out = match event {
                Some(Event::Token { id, text, logprob }) => {
                    let token = json!({"token": {"id": id, "text": text, "log_prob": logprob,
                                                 "special": false}});
                    match s.held.replace(token) {
                        Some(previous) => line(&previous),
                        None => continue,
                    }
                }
                Some(Event::Done(done)) => {
                    let mut last = s.held.take().unwrap_or_else(|| {
                        // Nothing was generated (end of sequence at once).
                        json!({"token": {"id": null, "text": "", "log_prob": null,
                                         "special": false}})
                    });
                    let text = last["token"]["text"].as_str().unwrap_or("").to_string();
                    last["token"]["text"] = json!(format!("{text}{}", done.tail));
                    last["generated_text"] = json!(format!("{}{}", s.prefix, done.text));
                    if s.details {
                        last["details"] = json!({
                            "finish_reason": finish_name(done.reason),
                            "generated_tokens": done.generated_tokens,
                        });
                    }
                    s.done = true;
                    line(&last)
                }
                Some(Event::Failed(f)) => {
                    let e = ApiError::from_failure(f);
                    s.done = true;
                    let error = json!({"error": e.message, "code": e.status.as_u16()});
                    match s.held.take() {
                        Some(previous) => {
                            s.trailer = Some(error);
                            line(&previous)
                        }
                        None => line(&error),
                    }
                }
                None => {
                    s.done = true;
                    let error = json!({"error": "the model engine stopped before this request \
                        finished; see the server's log", "code": 500});
                    match s.held.take() {
                        Some(previous) => {
                            s.trailer = Some(error);
                            line(&previous)
                        }
                        None => line(&error),
                    }
                }
            };
            return Some((Ok::<_, std::convert::Infallible>(out), s));
        }
    });
    let mut resp = Body::from_stream(lines).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonlines"),
    );
    resp
}
