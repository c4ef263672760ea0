//! One JSON record of a dataset file to a [`Document`].

use serde_json::Value;

use super::{DataFormat, Document};
use crate::chat::Message;
use crate::config::json_kind;

/// The document in `record` and the format it is in, or why it is not usable.
pub(super) fn interpret(record: &Value) -> Result<(Document, DataFormat), String> {
    let Value::Object(obj) = record else {
        return Err(format!("expected an object, got {}", json_kind(record)));
    };
    if let Some(turns) = obj.get("conversations") {
        return sharegpt(turns).map(|m| (Document::Chat(m), DataFormat::ShareGpt));
    }
    if let Some(messages) = obj.get("messages") {
        return openai_chat(messages).map(|m| (Document::Chat(m), DataFormat::OpenAiChat));
    }
    if let (Some(prompt), Some(completion)) = (obj.get("prompt"), obj.get("completion")) {
        let (Some(prompt), Some(completion)) = (prompt.as_str(), completion.as_str()) else {
            return Err("`prompt` and `completion` must be strings".into());
        };
        let doc = Document::Completion {
            prompt: prompt.to_string(),
            completion: completion.to_string(),
        };
        return Ok((doc, DataFormat::OpenAiCompletions));
    }
    if let Some(text) = obj.get("text") {
        let Some(text) = text.as_str() else {
            return Err("`text` must be a string".into());
        };
        return Ok((Document::Text(text.to_string()), DataFormat::TextRecords));
    }
    Err(
        "expected a field `conversations` (ShareGPT), `messages` (OpenAI chat), \
         `prompt` and `completion` (OpenAI completions) or `text`"
            .into(),
    )
}

/// ShareGPT turns: `[{"from": "human" | "gpt" | "system", "value": "..."}]`.
fn sharegpt(turns: &Value) -> Result<Vec<Message>, String> {
    let Value::Array(turns) = turns else {
        return Err(format!(
            "`conversations` must be a list, got {}",
            json_kind(turns)
        ));
    };
    let mut messages = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let from = turn.get("from").and_then(Value::as_str);
        let value = turn.get("value").and_then(Value::as_str);
        let (Some(from), Some(value)) = (from, value) else {
            return Err(format!(
                "`conversations[{i}]` must have string fields `from` and `value`"
            ));
        };
        messages.push(Message::new(sharegpt_role(from), value));
    }
    non_empty(messages, "conversations")
}

/// ShareGPT speaker names to chat-template roles; unknown names are kept as they are.
fn sharegpt_role(from: &str) -> &str {
    match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "chatgpt" | "bard" | "bing" | "model" => "assistant",
        "system" => "system",
        other => other,
    }
}

/// OpenAI chat messages: `[{"role": "...", "content": "..." | [{"type": "text", ...}]}]`.
fn openai_chat(messages: &Value) -> Result<Vec<Message>, String> {
    let Value::Array(list) = messages else {
        return Err(format!(
            "`messages` must be a list, got {}",
            json_kind(messages)
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(format!("`messages[{i}]` has no string field `role`"));
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // An assistant turn that only calls tools.
            None | Some(Value::Null) => String::new(),
            // Content parts: the text parts, in order.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            Some(other) => {
                return Err(format!(
                    "`messages[{i}].content` must be a string or a list of parts, got {}",
                    json_kind(other)
                ))
            }
        };
        out.push(Message::new(role, content));
    }
    non_empty(out, "messages")
}

fn non_empty(messages: Vec<Message>, field: &str) -> Result<Vec<Message>, String> {
    if messages.is_empty() {
        Err(format!("`{field}` is empty"))
    } else {
        Ok(messages)
    }
}
