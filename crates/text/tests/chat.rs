//! Chat templates rendered as Hugging Face transformers renders them. Expected strings
//! were produced with jinja2 3.1 configured like transformers' `_compile_jinja_template`.

mod common;

use serde_json::json;
use temper_text::{render_plain, ChatTemplate, Message, TextError};

fn load(dir: &std::path::Path) -> ChatTemplate {
    match ChatTemplate::from_model_dir(dir) {
        Ok(Some(t)) => t,
        Ok(None) => panic!("{} has no chat template", dir.display()),
        Err(e) => panic!("{e}"),
    }
}

const SMOL_SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

#[test]
fn smollm2_user_message_gets_default_system_prompt() {
    let template = load(&common::smollm2_dir());
    let messages = [Message::new("user", "What is 2+2?")];
    let prompt = template.render(&messages, true).unwrap();
    assert_eq!(
        prompt,
        format!("{SMOL_SYSTEM}<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    );
    let no_prompt = template.render(&messages, false).unwrap();
    assert_eq!(
        no_prompt,
        format!("{SMOL_SYSTEM}<|im_start|>user\nWhat is 2+2?<|im_end|>\n")
    );
    assert_eq!(template.special_token("eos_token"), Some("<|im_end|>"));
}

#[test]
fn smollm2_with_system_message() {
    let template = load(&common::smollm2_dir());
    let messages = [
        Message::new("system", "Answer in French."),
        Message::new("user", "Hello"),
        Message::new("assistant", "Bonjour !"),
        Message::new("user", "Ça va ? 🙂"),
    ];
    let prompt = template.render(&messages, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n\
         <|im_start|>assistant\nBonjour !<|im_end|>\n<|im_start|>user\nÇa va ? 🙂<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

/// A Llama-3-style template using bos_token, trim/lstrip blocks, strftime_now,
/// namespace, tojson, Python string methods and loop controls.
#[test]
fn llama3_style_template() {
    let source = include_str!("llama3_style.jinja");
    let dir = common::model_dir_with_config(&json!({
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
        "chat_template": source,
    }));
    let template = load(dir.path());
    let messages = [
        Message::new("system", "  Be brief.  "),
        Message::new("user", "Hi there"),
        Message::new("assistant", "   "),
        Message::new("assistant", "Hello! ¿Qué tal? 👋"),
        Message::new("user", "STOP now"),
        Message::new("user", "never shown"),
    ];
    let prompt = template.render(&messages, true).unwrap();

    // The date comes from strftime_now("%d %b %Y"), e.g. "22 Nov 2026".
    let (head, rest) = prompt.split_once("Today Date: ").expect("date line");
    let (date, tail) = rest.split_once('\n').expect("end of date line");
    let parts: Vec<&str> = date.split(' ').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() == 2
            && parts[0].chars().all(|c| c.is_ascii_digit())
            && parts[1].len() == 3
            && parts[2].len() == 4
            && parts[2].chars().all(|c| c.is_ascii_digit()),
        "date {date:?}"
    );
    assert_eq!(
        head,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\n"
    );
    assert_eq!(
        tail,
        "Meta: {\"model\": \"llama\", \"sizes\": [1, 2.5, \"é\"], \"ok\": true, \"none\": null}\n\
         \nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello! ¿Qué tal? 👋<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nSTOP now<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n(3 turns)"
    );
}

#[test]
fn raise_exception_carries_the_message() {
    let dir = common::model_dir_with_config(&json!({
        "chat_template": "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
            {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
            {% endif %}[{{ m['content'] }}]{% endfor %}",
    }));
    let template = load(dir.path());
    let ok = template
        .render(
            &[Message::new("user", "a"), Message::new("assistant", "b")],
            false,
        )
        .unwrap();
    assert_eq!(ok, "[a][b]");
    let err = template
        .render(&[Message::new("assistant", "a")], false)
        .unwrap_err();
    match &err {
        TextError::TemplateRaised { message, .. } => assert_eq!(
            message,
            "Conversation roles must alternate user/assistant/user/assistant/..."
        ),
        other => panic!("expected TemplateRaised, got {other:?}"),
    }
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let dir = common::model_dir_with_config(&json!({
        "chat_template": "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|\
            {{ {'b': 1, 'a': [], 'c': {}} | tojson(sort_keys=true) }}|{{ 'x\"<\\n' | tojson }}|\
            {{ {'k': 'é'} | tojson(ensure_ascii=true) }}",
    }));
    let template = load(dir.path());
    let out = template
        .render(&[Message::new("user", "hi")], false)
        .unwrap();
    // json.dumps output for the same values.
    assert_eq!(
        out,
        "{\"role\": \"user\", \"content\": \"hi\"}|{\n  \"role\": \"user\",\n  \"content\": \"hi\"\n}|\
         {\"a\": [], \"b\": 1, \"c\": {}}|\"x\\\"<\\n\"|{\"k\": \"\\u00e9\"}"
    );
}

#[test]
fn named_templates_use_default_and_chat_template_jinja_wins() {
    let dir = common::model_dir_with_config(&json!({
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "default:{{ messages | length }}"},
        ],
    }));
    assert_eq!(load(dir.path()).render(&[], false).unwrap(), "default:0");

    std::fs::write(dir.path().join("chat_template.jinja"), "jinja file\n").unwrap();
    // Like Jinja2, a single trailing newline of the template is dropped.
    assert_eq!(load(dir.path()).render(&[], false).unwrap(), "jinja file");

    let no_default = common::model_dir_with_config(&json!({
        "chat_template": [{"name": "tool_use", "template": "tools"}],
    }));
    let err = ChatTemplate::from_model_dir(no_default.path()).unwrap_err();
    assert!(err.to_string().contains("default"), "{err}");
}

#[test]
fn missing_template_is_none() {
    let dir = common::model_dir_with_config(&json!({"eos_token": "</s>"}));
    assert!(ChatTemplate::from_model_dir(dir.path()).unwrap().is_none());
    let empty = tempfile::tempdir().unwrap();
    assert!(ChatTemplate::from_model_dir(empty.path())
        .unwrap()
        .is_none());
}

#[test]
fn syntax_error_names_tokenizer_config() {
    let dir = common::model_dir_with_config(&json!({
        "chat_template": "{% for m in messages %}{{ m.content }",
    }));
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TextError::TemplateSyntax { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("tokenizer_config.json"), "{msg}");
}

#[test]
fn malformed_config_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        "{\"chat_template\": ",
    )
    .unwrap();
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");

    let dir = common::model_dir_with_config(&json!({"chat_template": 42}));
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("`chat_template`"), "{err}");
}

#[test]
fn plain_fallback() {
    let messages = [
        Message::new("system", "Be kind."),
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello"),
    ];
    assert_eq!(
        render_plain(&messages),
        "System: Be kind.\nUser: Hi\nAssistant: Hello"
    );
}

#[test]
fn special_tokens_fall_back_to_special_tokens_map() {
    let dir = tempfile::tempdir().unwrap();
    let template =
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}";
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"chat_template": template, "eos_token": "</s>"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("special_tokens_map.json"),
        json!({"bos_token": {"content": "<s>"}, "eos_token": "<ignored>"}).to_string(),
    )
    .unwrap();
    let t = load(dir.path());
    // bos from the map; eos from tokenizer_config.json, which wins where both name one.
    assert_eq!(
        t.render(&[Message::new("user", "hi")], false).unwrap(),
        "<s>hi</s>"
    );
}
