//! Dataset files: every format, damaged files, and token windows.

mod common;

use std::path::{Path, PathBuf};

use temper_text::{
    load_documents, split_held_out, token_windows, ChatTemplate, DataFormat, Document, Message,
    RecordLocation, TextError, WindowOptions,
};

fn smollm2_template() -> ChatTemplate {
    ChatTemplate::from_model_dir(&common::smollm2_dir())
        .unwrap()
        .unwrap()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn plain_text_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "notes.txt",
        "[not json] {\n second line é\n".as_bytes(),
    );
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.format, DataFormat::PlainText);
    assert_eq!(
        docs.documents,
        vec![Document::Text("[not json] {\n second line é\n".into())]
    );
    assert!(docs.skipped.is_none());

    // Unknown extension, text that only happens to start with a bracket.
    let path = write(dir.path(), "notes", b"[Chapter 1] It was a dark night.");
    assert_eq!(load_documents(&path).unwrap().format, DataFormat::PlainText);

    let docs = load_documents(&common::hamlet()).unwrap();
    assert_eq!(docs.documents.len(), 1);
}

#[test]
fn sharegpt_array_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let array = r#"[
  {"id": "a", "conversations": [
    {"from": "system", "value": "Be short."},
    {"from": "human", "value": "Hi"},
    {"from": "gpt", "value": "Hello!"}]},
  {"id": "b", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}
]"#;
    let path = write(dir.path(), "sharegpt.json", array.as_bytes());
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.format, DataFormat::ShareGpt);
    assert!(docs.skipped.is_none());
    assert_eq!((docs.len(), docs.skipped_count()), (2, 0));
    assert_eq!(
        docs.documents,
        vec![
            Document::Chat(vec![
                Message::new("system", "Be short."),
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello!"),
            ]),
            Document::Chat(vec![
                Message::new("user", "2+2?"),
                Message::new("assistant", "4")
            ]),
        ]
    );

    let lines = "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}]}\n\n\
                 {\"conversations\": [{\"from\": \"gpt\", \"value\": \"Yo\"}]}\n";
    let path = write(dir.path(), "sharegpt.jsonl", lines.as_bytes());
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.format, DataFormat::ShareGpt);
    assert_eq!(docs.documents.len(), 2);
}

/// The ShareGPT file users download is cut off in the middle of a record.
#[test]
fn truncated_sharegpt_array_keeps_the_good_records() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"[{"id": "1", "conversations": [{"from": "human", "value": "one"}]}, "#;
    let bad = r#"{"id": "2", "conversations": [{"from": "human", "value": "tw"#;
    let path = write(
        dir.path(),
        "ShareGPT_V3.json",
        format!("{good}{bad}").as_bytes(),
    );
    let docs = load_documents(&path).unwrap();
    assert_eq!(
        docs.documents,
        vec![Document::Chat(vec![Message::new("user", "one")])]
    );
    let skipped = docs.skipped.expect("the truncated record is reported");
    assert_eq!(skipped.count, 1);
    assert_eq!(skipped.first_at, RecordLocation::Byte(good.len()));
    assert!(skipped.stopped_reading);
    let msg = skipped.to_string();
    assert!(
        msg.contains(&format!("byte offset {}", good.len())) && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn malformed_records_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Wrong shapes inside a valid array: skipped, reading goes on.
    let array = r#"[{"conversations": "nope"}, {"other": 1},
        {"conversations": [{"from": "human", "value": "ok"}]}]"#;
    let path = write(dir.path(), "mixed.json", array.as_bytes());
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.documents.len(), 1);
    let skipped = docs.skipped.unwrap();
    assert_eq!(
        (skipped.count, skipped.first_at),
        (2, RecordLocation::Byte(1))
    );
    assert!(
        skipped.first_reason.contains("conversations"),
        "{}",
        skipped.first_reason
    );
    assert!(!skipped.stopped_reading);

    // JSON lines: a broken line, a wrong shape, and a truncated last line.
    let lines = "{\"prompt\": \"Q: 1+1\\nA:\", \"completion\": \" 2\"}\n\
                 {\"prompt\": broken}\n\
                 {\"prompt\": 3, \"completion\": \"x\"}\n\
                 {\"prompt\": \"Q: 2+2\\nA:\", \"completion\": \" 4\"}\n\
                 {\"prompt\": \"Q: 3+";
    let path = write(dir.path(), "completions.jsonl", lines.as_bytes());
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.format, DataFormat::OpenAiCompletions);
    let completion = |prompt: &str, completion: &str| Document::Completion {
        prompt: prompt.into(),
        completion: completion.into(),
    };
    assert_eq!(
        docs.documents,
        vec![
            completion("Q: 1+1\nA:", " 2"),
            completion("Q: 2+2\nA:", " 4")
        ]
    );
    // As model input (perplexity, calibration) a pair is the text prompt + completion,
    // tokenized with the tokenizer's special tokens, as before the boundary was kept.
    for template in [None, Some(&smollm2_template())] {
        assert_eq!(
            docs.documents[0].render(template).unwrap(),
            ("Q: 1+1\nA: 2".to_string(), true)
        );
    }
    let skipped = docs.skipped.unwrap();
    assert_eq!(
        (skipped.count, skipped.first_at),
        (3, RecordLocation::Line(2))
    );
}

#[test]
fn openai_chat_lines() {
    let dir = tempfile::tempdir().unwrap();
    let lines = r#"{"messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
{"messages": [{"role": "user", "content": [{"type": "text", "text": "part 1"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "part 2"}]}, {"role": "assistant", "content": null}]}
"#;
    let path = write(dir.path(), "chat.jsonl", lines.as_bytes());
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.format, DataFormat::OpenAiChat);
    assert_eq!(
        docs.documents[1],
        Document::Chat(vec![
            Message::new("user", "part 1\npart 2"),
            Message::new("assistant", "")
        ])
    );
    assert_eq!(
        docs.documents[0].render(None).unwrap(),
        ("System: Sys\nUser: Q\nAssistant: A".to_string(), true)
    );
    let template = ChatTemplate::from_model_dir(&common::smollm2_dir())
        .unwrap()
        .unwrap();
    let (text, add_special) = docs.documents[0].render(Some(&template)).unwrap();
    assert!(!add_special);
    assert_eq!(
        text,
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    );
}

#[test]
fn empty_and_unusable_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("empty.txt", ""), ("blank.json", " \n\t\n")] {
        let path = write(dir.path(), name, content.as_bytes());
        let err = load_documents(&path).unwrap_err();
        assert!(matches!(err, TextError::EmptyData { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("ShareGPT"), "{msg}");
    }

    let path = write(dir.path(), "bad.jsonl", b"{\"foo\": 1}\n{\"bar\": 2}\n");
    let err = load_documents(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TextError::NoRecords { .. }), "{err:?}");
    assert!(
        msg.contains("bad.jsonl") && msg.contains("line 1") && msg.contains("2 record"),
        "{msg}"
    );

    let path = write(dir.path(), "empty_array.json", b"[]");
    assert!(matches!(
        load_documents(&path),
        Err(TextError::NoRecords { .. })
    ));

    let path = write(dir.path(), "prose.json", b"Once upon a time");
    assert!(matches!(
        load_documents(&path),
        Err(TextError::NoRecords { .. })
    ));

    let missing = dir.path().join("missing.txt");
    let err = load_documents(&missing).unwrap_err();
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn invalid_utf8_names_the_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "latin1.txt", b"caf\xe9 au lait");
    let err = load_documents(&path).unwrap_err();
    assert!(
        matches!(err, TextError::InvalidUtf8 { offset: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("byte offset 3"), "{err}");
}

#[test]
fn hamlet_windows() {
    let tokenizer = common::smollm2_tokenizer();
    let docs = load_documents(&common::hamlet()).unwrap();
    let all = tokenizer
        .encode(std::fs::read_to_string(common::hamlet()).unwrap(), true)
        .unwrap()
        .get_ids()
        .to_vec();

    let windows = token_windows(&tokenizer, &docs, None, &WindowOptions::new(512)).unwrap();
    assert_eq!(windows.len(), all.len() / 512);
    assert!(windows.iter().all(|w| w.len() == 512));
    // Non-overlapping, in order: the concatenation is a prefix of the whole encoding.
    assert_eq!(windows.concat(), all[..windows.len() * 512]);

    let options = WindowOptions {
        window_len: 256,
        max_windows: 10,
    };
    let ten = token_windows(&tokenizer, &docs, None, &options).unwrap();
    assert_eq!(ten.len(), 10);
    assert_eq!(ten.concat(), all[..2560]);

    let held = split_held_out(ten.clone(), 3).unwrap();
    assert_eq!((held.calibration.len(), held.evaluation.len()), (7, 3));
    // Evenly spread evaluation windows: indices 1, 5, 8.
    assert_eq!(
        held.evaluation,
        vec![ten[1].clone(), ten[5].clone(), ten[8].clone()]
    );
    for w in &held.evaluation {
        assert!(!held.calibration.contains(w));
    }
    assert_eq!(split_held_out(ten.clone(), 3).unwrap(), held);
    assert_eq!(split_held_out(ten.clone(), 10).unwrap().evaluation, ten);
    assert!(matches!(
        split_held_out(ten, 11),
        Err(TextError::WindowOptions { .. })
    ));

    let err =
        token_windows(&tokenizer, &docs, None, &WindowOptions::new(all.len() + 1)).unwrap_err();
    assert!(
        matches!(err, TextError::TooFewTokens { have, needed } if have == all.len() && needed == all.len() + 1)
    );
    assert!(err.to_string().contains(&all.len().to_string()), "{err}");
}

#[test]
fn chat_documents_in_windows_use_the_template() {
    let tokenizer = common::smollm2_tokenizer();
    let template = ChatTemplate::from_model_dir(&common::smollm2_dir())
        .unwrap()
        .unwrap();
    let docs = vec![
        Document::Chat(vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
        ]),
        Document::Text("Plain text.".into()),
    ];
    let windows =
        token_windows(&tokenizer, &docs, Some(&template), &WindowOptions::new(4)).unwrap();
    let rendered = template
        .render(
            &[
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello"),
            ],
            false,
        )
        .unwrap();
    // Each document is tokenized on its own: the rendered chat (with the separator)
    // without post-processing, the text with it.
    let mut want = tokenizer
        .encode(format!("{rendered}\n\n"), false)
        .unwrap()
        .get_ids()
        .to_vec();
    want.extend(tokenizer.encode("Plain text.", true).unwrap().get_ids());
    // The chat template's <|im_start|> is a single special token.
    assert_eq!(
        windows[0][0],
        tokenizer.token_to_id("<|im_start|>").unwrap()
    );
    assert_eq!(windows.concat(), want[..windows.len() * 4]);

    let err = token_windows(&tokenizer, &docs, None, &WindowOptions::new(0)).unwrap_err();
    assert!(matches!(
        err,
        TextError::WindowOptions {
            field: "window_len",
            ..
        }
    ));
    let zero = WindowOptions {
        window_len: 4,
        max_windows: 0,
    };
    let err = token_windows(&tokenizer, &docs, None, &zero).unwrap_err();
    assert!(matches!(
        err,
        TextError::WindowOptions {
            field: "max_windows",
            ..
        }
    ));
}

#[test]
fn unicode_space_before_an_array_and_text_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let record = r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}"#;
    // A no-break space before the array used to slice inside the character and panic.
    let path = write(
        dir.path(),
        "nbsp.json",
        format!("\u{a0}[{record}]").as_bytes(),
    );
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.documents.len(), 1);
    assert!(docs.skipped.is_none());
    // Content after the closing bracket is reported, not silently dropped.
    let path = write(
        dir.path(),
        "two.json",
        format!("[{record}]\n[{record}]").as_bytes(),
    );
    let docs = load_documents(&path).unwrap();
    assert_eq!(docs.documents.len(), 1);
    let skipped = docs.skipped.expect("the trailing array is reported");
    assert!(skipped.stopped_reading);
    assert!(skipped.to_string().contains("closing `]`"), "{skipped}");
}

#[test]
fn a_large_text_is_tokenized_in_pieces_with_the_same_tokens() {
    // ~2.3 MB: more than two pieces. For SmolLM2's byte-level BPE the windows must equal
    // those of tokenizing the whole text at once.
    let tokenizer = common::smollm2_tokenizer();
    let hamlet = std::fs::read_to_string(common::hamlet()).unwrap();
    let text = hamlet.repeat(12);
    let docs = [Document::Text(text.clone())];
    let whole = tokenizer
        .encode(text.as_str(), true)
        .unwrap()
        .get_ids()
        .to_vec();
    let windows = token_windows(&tokenizer, &docs, None, &WindowOptions::new(4096)).unwrap();
    assert_eq!(windows.len(), whole.len() / 4096);
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w[..], whole[i * 4096..(i + 1) * 4096], "window {i}");
    }
    // A few windows need only the first piece.
    let few = WindowOptions {
        window_len: 256,
        max_windows: 2,
    };
    let two = token_windows(&tokenizer, &docs, None, &few).unwrap();
    assert_eq!(two.concat(), whole[..512]);
}

#[test]
fn completion_windows_are_the_text_they_always_were() {
    let tokenizer = common::smollm2_tokenizer();
    let pair = [Document::Completion {
        prompt: "The capital of France is".into(),
        completion: " Paris, on the Seine.".into(),
    }];
    let text = [Document::Text(
        "The capital of France is Paris, on the Seine.".into(),
    )];
    let options = WindowOptions::new(3);
    assert_eq!(
        token_windows(&tokenizer, &pair, None, &options).unwrap(),
        token_windows(&tokenizer, &text, None, &options).unwrap()
    );
}
