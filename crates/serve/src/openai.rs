//! OpenAI-compatible `/v1/completions`, `/v1/chat/completions` (both with server-sent-event
//! streaming) and `/v1/models`, as vLLM and SGLang serve them.

use crate::app::{openai_error, parse_json, response_id, unix_now, ApiError, Generation, Shared};
use crate::engine::Event;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use temper_runtime::generate::FinishReason;
use temper_text::chat::Message;
use temper_text::sampling::SamplingParams;

/// OpenAI's default `max_tokens` for completions.
const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;
/// temper's default for chat when the request gives no limit (OpenAI's is the context left;
/// on a CPU that can take minutes).
const CHAT_DEFAULT_MAX_TOKENS: usize = 256;

/// A prompt as text, one text in a list, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and stopping fields both endpoints share. Fields temper does not implement
/// (`logprobs`, `echo`, penalties, `n` > 1, ...) are refused by name, not ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's extension.
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<usize>,
    pub user: Option<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// vLLM's extension: generate `max_tokens` even past end-of-sequence (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Every field neither this nor the request names, refused by name unless sent with its
    /// "off" value (filled by [`parse_request`]).
    #[serde(skip)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub max_tokens: Option<usize>,
    #[serde(skip)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    #[serde(skip)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
}

/// Message content: a string, or parts of which only text is understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// The members of [`Common`], as on the wire.
const COMMON_FIELDS: [&str; 13] = [
    "model",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
];

/// A request body read in two passes over the same JSON, so that an error names its field
/// (serde cannot track paths through `flatten`): the endpoint's own members (`own`), then
/// the shared ones ([`Common`]); every other member goes to `Common::other`.
fn parse_request<R: serde::de::DeserializeOwned>(
    body: &Bytes,
    own: &[&str],
    attach: impl FnOnce(&mut R, Common),
) -> Result<R, ApiError> {
    let value: Value = parse_json(body)?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let named = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        ApiError::bad_request(format!(
            "the request field `{path}` is not valid: {}",
            e.into_inner()
        ))
    };
    let mut req: R = serde_path_to_error::deserialize(&value).map_err(named)?;
    let mut common: Common = serde_path_to_error::deserialize(&value).map_err(named)?;
    common.other = map
        .iter()
        .filter(|(k, _)| !own.contains(&k.as_str()) && !COMMON_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attach(&mut req, common);
    Ok(req)
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

impl Common {
    /// Checks the shared fields; returns the sampling parameters and stop strings.
    fn check(&mut self, served_name: &str) -> Result<(SamplingParams, Vec<String>), ApiError> {
        // Fields some SDKs send with their "off" value are accepted as such.
        let off = |name: &str, v: &Value| match (name, v) {
            (_, Value::Null) => true,
            ("echo" | "logprobs", Value::Bool(false)) => true,
            ("best_of", v) => v.as_u64() == Some(1),
            ("top_logprobs", v) => v.as_u64() == Some(0),
            ("logit_bias", Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        self.other.retain(|name, v| !off(name, v));
        if !self.other.is_empty() {
            let names: Vec<&str> = self.other.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!(
                "unsupported field(s) {names:?}: this server implements model, prompt/messages, \
                 max_tokens, max_completion_tokens, temperature, top_p, top_k, seed, stop, \
                 stream, stream_options, n (1), user, ignore_eos; leave the others out"
            )));
        }
        if let Some(m) = &self.model {
            if m != served_name {
                return Err(ApiError {
                    status: StatusCode::NOT_FOUND,
                    kind: "model_not_found",
                    message: format!(
                        "this server serves the model {served_name:?}, not {m:?}; leave out \
                         `model` or use that name"
                    ),
                    param: Some("model"),
                });
            }
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_field(
                "n",
                "only n = 1 is supported: send one request per completion",
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::bad_field(
                    name,
                    format!("{name} is not supported; leave it out or set it to 0"),
                ));
            }
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::bad_field(
                    "top_k",
                    format!("top_k must be -1 (off) or at least 1, not {k}"),
                ))
            }
        };
        let sampling = SamplingParams {
            // OpenAI's default temperature is 1.
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.filter(|&p| p != 1.0),
            seed: self.seed.unwrap_or_else(crate::app::fresh_seed),
        };
        let stop = self.stop.take().map(Stop::into_vec).unwrap_or_default();
        Ok((sampling, stop))
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

fn body_or_error(state: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError {
        status: r.status(),
        kind: "invalid_request_error",
        message: format!(
            "{} (this server takes bodies of up to {} bytes)",
            r.body_text(),
            state.http.max_body_bytes
        ),
        param: None,
    })
}

fn counted(state: &Shared, route: &str, r: Result<Response, ApiError>) -> Response {
    let resp = match r {
        Ok(resp) => resp,
        Err(e) => openai_error(&e),
    };
    state.metrics.count_request(route, resp.status().as_u16());
    resp
}

pub async fn completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = completion(&state, body).await;
    counted(&state, "/v1/completions", r)
}

async fn completion(
    state: &Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut req: CompletionRequest = parse_request(
        &body_or_error(state, body)?,
        &["prompt", "max_tokens"],
        |r: &mut CompletionRequest, c| r.common = c,
    )?;
    let (sampling, stop) = req.common.check(&state.served.name)?;
    let prompt = match req.prompt {
        Prompt::Text(t) => state.tokenize(&t, true)?,
        Prompt::Texts(v) if v.len() == 1 => state.tokenize(&v[0], true)?,
        Prompt::Texts(v) => {
            return Err(ApiError::bad_field(
                "prompt",
                format!(
                    "{} prompts in one request; send one prompt per request",
                    v.len()
                ),
            ))
        }
        Prompt::Tokens(ids) => ids,
    };
    let events = state.submit(Generation {
        prompt,
        max_new_tokens: req.max_tokens.unwrap_or(COMPLETION_DEFAULT_MAX_TOKENS),
        explicit_max: req.max_tokens.is_some(),
        sampling,
        stop,
        ignore_eos: req.common.ignore_eos,
    })?;
    let frame = Frame {
        id: response_id("cmpl"),
        created: unix_now(),
        model: state.served.name.clone(),
        chat: false,
        include_usage: req.common.include_usage(),
    };
    answer(
        events,
        frame,
        req.common.stream,
        |text| json!({"index": 0, "text": text, "logprobs": null}),
    )
    .await
}

/// A request's answer: server-sent events, or one JSON body whose choice `choice(text)`
/// builds (the finish reason is added).
async fn answer(
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    frame: Frame,
    stream: bool,
    choice: impl FnOnce(String) -> Value,
) -> Result<Response, ApiError> {
    if stream {
        return Ok(sse(events, frame));
    }
    let c = crate::app::collect(events).await?;
    let mut choice = choice(c.done.text);
    choice["finish_reason"] = json!(finish_name(c.done.reason));
    Ok(crate::app::json_response(
        StatusCode::OK,
        json!({
            "id": frame.id,
            "object": if frame.chat { "chat.completion" } else { "text_completion" },
            "created": frame.created, "model": frame.model,
            "choices": [choice],
            "usage": usage(c.done.prompt_tokens, c.done.generated_tokens),
        }),
    ))
}

pub async fn chat_completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = chat(&state, body).await;
    counted(&state, "/v1/chat/completions", r)
}

async fn chat(state: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_request(
        &body_or_error(state, body)?,
        &["messages", "max_tokens", "max_completion_tokens"],
        |r: &mut ChatRequest, c| r.common = c,
    )?;
    let (sampling, stop) = req.common.check(&state.served.name)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_field("messages", "messages is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let content = match &m.content {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::bad_field(
                                "messages",
                                format!(
                                    "messages[{i}] has a {kind:?} part; this model takes text \
                                     parts only"
                                ),
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(Message::new(m.role.clone(), content));
    }
    let Some(template) = &state.served.template else {
        return Err(ApiError::bad_request(
            "this model has no chat template (tokenizer_config.json has no chat_template); use \
             /v1/completions with a plain prompt",
        ));
    };
    let text = template
        .render(&messages, true)
        .map_err(|e| ApiError::bad_field("messages", e.to_string()))?;
    // The rendered prompt holds its special tokens as text already.
    let prompt = state.tokenize(&text, false)?;
    let events = state.submit(Generation {
        prompt,
        max_new_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(CHAT_DEFAULT_MAX_TOKENS),
        explicit_max: req.max_completion_tokens.or(req.max_tokens).is_some(),
        sampling,
        stop,
        ignore_eos: req.common.ignore_eos,
    })?;
    let frame = Frame {
        id: response_id("chatcmpl"),
        created: unix_now(),
        model: state.served.name.clone(),
        chat: true,
        include_usage: req.common.include_usage(),
    };
    answer(events, frame, req.common.stream, |text| {
        json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null})
    })
    .await
}

pub async fn models(State(state): State<Shared>) -> Response {
    let served = &state.served;
    let resp = crate::app::json_response(
        StatusCode::OK,
        json!({"object": "list", "data": [{
            "id": served.name, "object": "model", "created": unix_now(), "owned_by": "temper",
            "max_model_len": served.max_positions,
        }]}),
    );
    state.metrics.count_request("/v1/models", 200);
    resp
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

/// What every chunk of one streamed response repeats.
#[derive(Clone)]
struct Frame {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    include_usage: bool,
}

impl Frame {
    /// A chunk carrying `text` (and the role, first, for chat) or the finish reason.
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = if self.chat {
            let mut delta = json!({});
            if first {
                delta["role"] = json!("assistant");
            }
            if let Some(t) = text {
                delta["content"] = json!(t);
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                   "finish_reason": finish})
        };
        let mut v = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created, "model": self.model, "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn usage_chunk(&self, prompt: usize, completion: usize) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created, "model": self.model, "choices": [],
            "usage": usage(prompt, completion),
        })
    }
}

/// Server-sent events: a chunk per token that released text, a last chunk with the finish
/// reason, the usage chunk when asked, then `data: [DONE]`. A failure after the stream began
/// is sent as an `{"error": ...}` event before `[DONE]`.
fn sse(events: tokio::sync::mpsc::UnboundedReceiver<Event>, frame: Frame) -> Response {
    struct S {
        events: tokio::sync::mpsc::UnboundedReceiver<Event>,
        frame: Frame,
        first: bool,
        /// Events still to send before [DONE] (after the engine finished).
        pending: std::collections::VecDeque<String>,
        done: bool,
    }
    let state = S {
        events,
        frame,
        first: true,
        pending: Default::default(),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((
                    Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)),
                    s,
                ));
            }
            if s.done {
                return None;
            }
            match s.events.recv().await {
                Some(Event::Token { text, .. }) => {
                    // Tokens that released no text (an incomplete UTF-8 sequence, text held
                    // back for a possible stop string) send nothing, except the chat role.
                    if text.is_empty() && !(s.frame.chat && s.first) {
                        continue;
                    }
                    let chunk = s.frame.chunk(Some(&text), s.first, None);
                    s.first = false;
                    s.pending.push_back(chunk.to_string());
                }
                Some(Event::Done(done)) => {
                    if !done.tail.is_empty() {
                        let chunk = s.frame.chunk(Some(&done.tail), s.first, None);
                        s.first = false;
                        s.pending.push_back(chunk.to_string());
                    }
                    let last = s.frame.chunk(None, s.first, Some(finish_name(done.reason)));
                    s.pending.push_back(last.to_string());
                    if s.frame.include_usage {
                        let u = s
                            .frame
                            .usage_chunk(done.prompt_tokens, done.generated_tokens);
                        s.pending.push_back(u.to_string());
                    }
                    s.pending.push_back("[DONE]".into());
                    s.done = true;
                }
                Some(Event::Failed(f)) => {
                    let e = ApiError::from_failure(f);
                    let body = json!({"error": {"message": e.message, "type": e.kind,
                                               "param": null, "code": e.status.as_u16()}});
                    s.pending.push_back(body.to_string());
                    s.pending.push_back("[DONE]".into());
                    s.done = true;
                }
                // The engine went away without ending the request: say so, never end the
                // stream as if the text were complete.
                None => {
                    let body = json!({"error": {"message": "the model engine stopped before \
                        this request finished; see the server's log", "type": "server_error",
                        "param": null, "code": 500}});
                    s.pending.push_back(body.to_string());
                    s.pending.push_back("[DONE]".into());
                    s.done = true;
                }
            }
        }
    });
    Sse::new(stream).into_response()
}
