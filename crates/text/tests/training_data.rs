//! Training data for a speculative-decoding draft model: the files a source names, and
//! loss-masked samples made of them with the real SmolLM2 tokenizer and chat template.

mod common;

use std::path::{Path, PathBuf};

use temper_text::{
    chat_samples, load_records, training_files, ChatSample, ChatSampleOptions, ChatTemplate,
    DataFormat, RecordLocation, SourceKind, TextError, Tokenizer,
};

fn write(path: &Path, content: &str) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}

fn smollm2_template() -> ChatTemplate {
    ChatTemplate::from_model_dir(&common::smollm2_dir())
        .unwrap()
        .unwrap()
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> String {
    tokenizer.decode(ids, false).unwrap()
}

/// The text of each run of masked tokens, in order.
fn masked_runs(tokenizer: &Tokenizer, sample: &ChatSample) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for (&token, &masked) in sample.tokens.iter().zip(&sample.loss_mask) {
        if masked {
            current.push(token);
        } else if !current.is_empty() {
            runs.push(decode(tokenizer, &current));
            current.clear();
        }
    }
    if !current.is_empty() {
        runs.push(decode(tokenizer, &current));
    }
    runs
}

/// The text of the tokens outside the mask.
fn unmasked_text(tokenizer: &Tokenizer, sample: &ChatSample) -> String {
    let ids: Vec<u32> = sample
        .tokens
        .iter()
        .zip(&sample.loss_mask)
        .filter(|(_, &m)| !m)
        .map(|(&t, _)| t)
        .collect();
    decode(tokenizer, &ids)
}

fn opts(max_len: usize) -> ChatSampleOptions {
    ChatSampleOptions {
        max_len,
        max_samples: None,
    }
}

const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// ---------------------------------------------------------------------------------------
// Sources

#[test]
fn a_prefix_is_a_file_a_directory_or_a_path_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = write(&d.join("data/train.jsonl"), "{}");
    write(&d.join("data/train/part-2.json"), "[]");
    write(&d.join("data/train/part-1.json"), "[]");
    write(&d.join("data/train/sub/part-0.jsonl"), "{}");
    write(&d.join("data/train/_SUCCESS"), "");
    write(&d.join("data/train/.part-1.json.crc"), "x");
    write(&d.join("data/train/_temporary/0/part-9.json"), "[]");
    write(&d.join("data/train/.hidden/part-8.json"), "[]");
    write(&d.join("data/training-extra.jsonl"), "{}");
    write(&d.join("data/test.jsonl"), "{}");

    assert_eq!(
        training_files(&train, SourceKind::Prefix).unwrap(),
        vec![train.clone()]
    );
    // A directory: every file under it, sorted, hidden files and markers skipped.
    let under = |rel: &str| d.join("data/train").join(rel);
    let want_dir = vec![
        under("part-1.json"),
        under("part-2.json"),
        under("sub/part-0.jsonl"),
    ];
    assert_eq!(
        training_files(&d.join("data/train"), SourceKind::Prefix).unwrap(),
        want_dir
    );
    assert_eq!(
        training_files(&d.join("data/train/"), SourceKind::Prefix).unwrap(),
        want_dir
    );
    // A prefix that names no file: every file whose path starts with it, as S3 reads it.
    let mut want = want_dir.clone();
    want.push(train.clone());
    want.push(d.join("data/training-extra.jsonl"));
    want.sort();
    assert_eq!(
        training_files(&d.join("data/tr"), SourceKind::Prefix).unwrap(),
        want
    );
    assert_eq!(
        training_files(&d.join("data/te"), SourceKind::Prefix).unwrap(),
        vec![d.join("data/test.jsonl")]
    );
    assert_eq!(SourceKind::parse("S3Prefix"), Some(SourceKind::Prefix));
    assert_eq!(
        SourceKind::parse("ManifestFile"),
        Some(SourceKind::Manifest)
    );
    assert_eq!(SourceKind::parse("s3prefix"), None);
}

#[test]
fn an_empty_source_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("empty/_SUCCESS"), "");
    write(&d.join("empty/.keep"), "");
    let cases = [
        (d.join("empty"), "holds no files"),
        (d.join("nothing"), "no file in"),
        (d.join("missing/dir/train"), "does not exist"),
        (d.join("gone/"), "no such directory"),
    ];
    for (path, says) in cases {
        let err = training_files(&path, SourceKind::Prefix).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TextError::NoTrainingFiles { .. }), "{err:?}");
        assert!(
            msg.contains(&format!("no training data files under {}", path.display()))
                && msg.contains(says),
            "{msg}"
        );
    }
}

#[test]
fn a_manifest_lists_files_under_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = write(&d.join("data/a.jsonl"), "{}");
    let b = write(&d.join("data/sub/b.json"), "[]");
    let manifest = |name: &str, json: serde_json::Value| {
        write(&d.join(name), &serde_json::to_string(&json).unwrap())
    };
    let abs = format!("{}/data/", d.display());
    for prefix in [abs.clone(), format!("file://{abs}"), "data/".to_string()] {
        let m = manifest(
            "m.json",
            serde_json::json!([{ "prefix": prefix }, "sub/b.json", "a.jsonl"]),
        );
        // In the manifest's order.
        let files = training_files(&m, SourceKind::Manifest).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].canonicalize().unwrap(), b.canonicalize().unwrap());
        assert_eq!(files[1].canonicalize().unwrap(), a.canonicalize().unwrap());
    }

    // A missing key: the manifest, the key and its entry index.
    let m = manifest(
        "missing.json",
        serde_json::json!([{ "prefix": abs }, "a.jsonl", "nope.jsonl"]),
    );
    let err = training_files(&m, SourceKind::Manifest).unwrap_err();
    assert!(
        matches!(&err, TextError::ManifestKey { index: 2, key, .. } if key == "nope.jsonl"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&m.display().to_string())
            && msg.contains("entry [2]")
            && msg.contains("`nope.jsonl`")
            && msg.contains("no such file"),
        "{msg}"
    );
    // A prefix without the slash: keys are appended as they are, and the error says so.
    let m = manifest(
        "noslash.json",
        serde_json::json!([{ "prefix": format!("{}/data", d.display()) }, "a.jsonl"]),
    );
    let msg = training_files(&m, SourceKind::Manifest)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("dataa.jsonl") && msg.contains("does not end with `/`"),
        "{msg}"
    );
    let m = manifest("dirkey.json", serde_json::json!([{ "prefix": abs }, "sub"]));
    let msg = training_files(&m, SourceKind::Manifest)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("entry [1]") && msg.contains("directory"),
        "{msg}"
    );

    // S3 data in a local manifest.
    let m = manifest(
        "s3.json",
        serde_json::json!([{ "prefix": "s3://bucket/train/" }, "a.jsonl"]),
    );
    let err = training_files(&m, SourceKind::Manifest).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TextError::Manifest { .. }), "{err:?}");
    assert!(
        msg.contains("s3://bucket/train/")
            && msg.contains("downloads S3 data before the job runs")
            && msg.contains("s3.json"),
        "{msg}"
    );

    // Malformed manifests.
    let cases = [
        (
            "notlist.json",
            "{\"prefix\": \"/x/\"}",
            "expected a JSON list",
        ),
        ("empty.json", "[]", "the list is empty"),
        (
            "noprefix.json",
            "[\"a.jsonl\"]",
            "entry [0] must be an object",
        ),
        ("nokeys.json", "[{\"prefix\": \"/x/\"}]", "no keys"),
        (
            "badkey.json",
            "[{\"prefix\": \"/x/\"}, 3]",
            "entry [1] must be a string",
        ),
        ("broken.json", "[{\"prefix\": ", "not valid JSON"),
        (
            "https.json",
            "[{\"prefix\": \"https://x/\"}, \"a\"]",
            "only file://",
        ),
    ];
    for (name, content, says) in cases {
        let m = write(&d.join(name), content);
        let msg = training_files(&m, SourceKind::Manifest)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(name) && msg.contains(says) && msg.contains("ManifestFile"),
            "{msg}"
        );
    }
    let msg = training_files(&d.join("absent.json"), SourceKind::Manifest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent.json"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Samples

#[test]
fn sharegpt_masks_assistant_replies_with_the_end_of_turn() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let array = r#"[
  {"id": "a", "conversations": [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "What is 2+2?"},
    {"from": "gpt", "value": "It is 4."},
    {"from": "human", "value": "And 3+3?"},
    {"from": "gpt", "value": " Six, of course.\n\nAnything else?"}]},
  {"id": "b", "conversations": [
    {"from": "human", "value": "Name a colour."},
    {"from": "gpt", "value": "Blue."}]}
]"#;
    let path = write(&dir.path().join("sharegpt.json"), array);
    let out = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &opts(2048),
    )
    .unwrap();
    assert_eq!(out.samples.len(), 2);
    assert_eq!(out.conversations_read, 2);
    assert_eq!(
        (
            out.dropped_too_long,
            out.dropped_no_assistant,
            out.truncated_conversations
        ),
        (0, 0, 0)
    );
    assert_eq!(out.files.len(), 1);
    assert_eq!(out.files[0].format, DataFormat::ShareGpt);
    assert_eq!(out.files[0].records, 2);
    assert!(out.files[0].skipped.is_none());

    let first = &out.samples[0];
    assert_eq!(first.tokens.len(), first.loss_mask.len());
    // The whole conversation, as the template renders it, without added special tokens.
    let messages = [
        temper_text::Message::new("system", "Be brief."),
        temper_text::Message::new("user", "What is 2+2?"),
        temper_text::Message::new("assistant", "It is 4."),
        temper_text::Message::new("user", "And 3+3?"),
        temper_text::Message::new("assistant", " Six, of course.\n\nAnything else?"),
    ];
    let rendered = template.render(&messages, false).unwrap();
    assert_eq!(
        first.tokens,
        tokenizer
            .encode(rendered.as_str(), false)
            .unwrap()
            .get_ids()
    );
    // Each reply with `<|im_end|>\n`; the last token (the final "\n") has no target.
    assert_eq!(
        masked_runs(&tokenizer, first),
        vec![
            "It is 4.<|im_end|>\n".to_string(),
            " Six, of course.\n\nAnything else?<|im_end|>".to_string()
        ]
    );
    assert!(!first.loss_mask.last().unwrap());
    assert_eq!(
        decode(&tokenizer, &first.tokens[first.tokens.len() - 1..]),
        "\n"
    );
    // Offsets of a JSON array's records are bytes.
    let at = array.find("{\"id\": \"a\"").unwrap();
    assert_eq!(first.origin, format!("{}:byte {at}", path.display()));

    // Without a system message the template adds its own; it is context, not a target.
    let second = &out.samples[1];
    assert_eq!(masked_runs(&tokenizer, second), vec!["Blue.<|im_end|>"]);
    let context = unmasked_text(&tokenizer, second);
    assert!(context.contains(DEFAULT_SYSTEM), "{context}");
    assert!(context.starts_with("<|im_start|>system\n"), "{context}");
    assert!(context.contains("<|im_start|>assistant\n"), "{context}");

    // The same data, the same samples.
    let again = chat_samples(&[path], Some(&template), &tokenizer, &opts(2048)).unwrap();
    assert_eq!(again, out);
}

#[test]
fn conversations_are_normalised_and_cut_at_a_broken_alternation() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        // A leading assistant turn is dropped; the second user turn in a row cuts.
        r#"{"messages": [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Q1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}"#,
        // Nothing to train on: only user turns.
        r#"{"messages": [{"role": "user", "content": "Anyone?"}]}"#,
        // Broken at once: an assistant turn right after the system message is dropped,
        // then user, tool: cut at the tool turn.
        r#"{"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "U"}, {"role": "tool", "content": "T"}, {"role": "assistant", "content": "A"}]}"#,
        // A trailing user turn is dropped (no target after it).
        r#"{"messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]}"#,
    ];
    let path = write(&dir.path().join("chat.jsonl"), &lines.join("\n"));
    let out = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &opts(2048),
    )
    .unwrap();
    assert_eq!(out.conversations_read, 4);
    assert_eq!(out.samples.len(), 2);
    assert_eq!(out.dropped_no_assistant, 2);
    assert_eq!(out.truncated_conversations, 2);
    assert_eq!(out.truncated_turns, 2 + 2);
    assert_eq!(out.dropped_leading_turns, 2);
    assert_eq!(out.files[0].format, DataFormat::OpenAiChat);

    let first = &out.samples[0];
    assert_eq!(first.origin, format!("{}:1", path.display()));
    let text = decode(&tokenizer, &first.tokens);
    assert!(!text.contains("Welcome") && !text.contains("Q2"), "{text}");
    assert!(
        text.ends_with("<|im_start|>assistant\nHello.<|im_end|>\n"),
        "{text}"
    );
    assert_eq!(masked_runs(&tokenizer, first), vec!["Hello.<|im_end|>"]);

    let last = &out.samples[1];
    assert_eq!(last.origin, format!("{}:4", path.display()));
    let text = decode(&tokenizer, &last.tokens);
    assert!(
        text.starts_with("<|im_start|>system\nSys<|im_end|>\n"),
        "{text}"
    );
    assert!(
        !text.contains("U2") && !text.contains(DEFAULT_SYSTEM),
        "{text}"
    );
}

#[test]
fn completions_mask_the_completion() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let lines = "{\"prompt\": \"Q: What is 2+2?\\nA:\", \"completion\": \" 4, because two and two make four.\"}\n\
                 {\"prompt\": \"Q: 1+1?\\nA:\", \"completion\": \"\"}\n";
    let path = write(&dir.path().join("completions.jsonl"), lines);
    // The template does not apply to raw prompt/completion text.
    for template in [Some(&template), None] {
        let out = chat_samples(
            std::slice::from_ref(&path),
            template,
            &tokenizer,
            &opts(2048),
        )
        .unwrap();
        assert_eq!(out.files[0].format, DataFormat::OpenAiCompletions);
        assert_eq!((out.samples.len(), out.dropped_no_assistant), (1, 1));
        let sample = &out.samples[0];
        assert_eq!(
            sample.tokens,
            tokenizer
                .encode(
                    "Q: What is 2+2?\nA: 4, because two and two make four.",
                    true
                )
                .unwrap()
                .get_ids()
        );
        // Every completion token but the last, which has nothing to predict.
        assert_eq!(
            masked_runs(&tokenizer, sample),
            vec![" 4, because two and two make four"]
        );
        assert_eq!(unmasked_text(&tokenizer, sample), "Q: What is 2+2?\nA:.");
        assert_eq!(sample.origin, format!("{}:1", path.display()));
    }
}

#[test]
fn without_a_template_the_plain_rendering_masks_the_replies() {
    let tokenizer = common::smollm2_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there"}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "See you"}]}"#;
    let path = write(&dir.path().join("plain.jsonl"), line);
    let out = chat_samples(&[path], None, &tokenizer, &opts(2048)).unwrap();
    let sample = &out.samples[0];
    assert_eq!(
        decode(&tokenizer, &sample.tokens),
        "User: Hi\nAssistant: Hello there\nUser: Bye\nAssistant: See you"
    );
    assert_eq!(
        masked_runs(&tokenizer, sample),
        vec![" Hello there", " See"]
    );
}

#[test]
fn samples_longer_than_max_len_are_dropped() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(200);
    let lines = [
        format!(r#"{{"conversations": [{{"from": "human", "value": "Hi"}}, {{"from": "gpt", "value": "{long}"}}]}}"#),
        r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}"#.to_string(),
    ];
    let path = write(&dir.path().join("mixed_lengths.jsonl"), &lines.join("\n"));
    let out = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &opts(64),
    )
    .unwrap();
    assert_eq!((out.samples.len(), out.dropped_too_long), (1, 1));
    assert_eq!(out.samples[0].origin, format!("{}:2", path.display()));
    assert!(out.samples[0].tokens.len() <= 64);
    let short_len = out.samples[0].tokens.len();

    // A sample of exactly max_len tokens is kept; one token less drops it.
    let exact = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &opts(short_len),
    )
    .unwrap();
    assert_eq!(exact.samples.len(), 1);
    let err = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &opts(short_len - 1),
    )
    .unwrap_err();
    assert!(
        matches!(err, TextError::AllTooLong { count: 2, shortest, .. } if shortest == short_len),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(&format!("maximum length of {} tokens", short_len - 1))
            && msg.contains(&format!("{short_len} to "))
            && msg.contains("OPTION_MAX_MODEL_LEN")
            && msg.contains(&format!("at least {short_len}")),
        "{msg}"
    );
}

#[test]
fn max_samples_stops_early_and_keeps_the_order() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let record = |i: usize| {
        format!(
            r#"{{"conversations": [{{"from": "human", "value": "Count {i}"}}, {{"from": "gpt", "value": "{i}"}}]}}"#
        )
    };
    // More records than one chunk of the thread pool, over two files.
    let first: Vec<String> = (0..600).map(record).collect();
    let second: Vec<String> = (600..700).map(record).collect();
    let a = write(&dir.path().join("a.jsonl"), &first.join("\n"));
    let b = write(&dir.path().join("b.jsonl"), &second.join("\n"));
    let files = [a.clone(), b.clone()];
    let all = chat_samples(&files, Some(&template), &tokenizer, &opts(256)).unwrap();
    assert_eq!(all.samples.len(), 700);
    assert_eq!(all.files.len(), 2);
    for (i, s) in all.samples.iter().enumerate() {
        let (file, line) = if i < 600 { (&a, i + 1) } else { (&b, i - 599) };
        assert_eq!(s.origin, format!("{}:{line}", file.display()));
        assert_eq!(
            masked_runs(&tokenizer, s),
            vec![format!("{i}<|im_end|>")],
            "sample {i}"
        );
    }
    let some = ChatSampleOptions {
        max_len: 256,
        max_samples: Some(300),
    };
    let few = chat_samples(&files, Some(&template), &tokenizer, &some).unwrap();
    assert_eq!(few.samples, all.samples[..300]);
    assert_eq!(few.conversations_read, 300);
    assert_eq!(few.files.len(), 1);
    assert_eq!(
        few.tokens(),
        all.samples[..300]
            .iter()
            .map(|s| s.tokens.len())
            .sum::<usize>()
    );
    assert!(few.masked_tokens() > 0);
}

#[test]
fn training_data_errors_name_the_file_record_or_option() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let err = chat_samples(&[], Some(&template), &tokenizer, &opts(64)).unwrap_err();
    assert!(
        matches!(err, TextError::TrainingOptions { field: "files", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no training data file"), "{err}");

    let good = write(
        &d.join("good.jsonl"),
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}"#,
    );
    for (bad, field) in [
        (opts(1), "max_len"),
        (
            ChatSampleOptions {
                max_len: 64,
                max_samples: Some(0),
            },
            "max_samples",
        ),
    ] {
        let err = chat_samples(
            std::slice::from_ref(&good),
            Some(&template),
            &tokenizer,
            &bad,
        )
        .unwrap_err();
        assert!(
            matches!(err, TextError::TrainingOptions { field: f, .. } if f == field),
            "{err:?}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }

    // Files in no training format.
    let text = write(&d.join("notes.txt"), "Just some prose.");
    let records = write(
        &d.join("texts.jsonl"),
        "{\"text\": \"a\"}\n{\"text\": \"b\"}\n",
    );
    for (path, says) in [(&text, "plain text"), (&records, "`{\"text\"}` records")] {
        let err = chat_samples(
            &[good.clone(), path.clone()],
            Some(&template),
            &tokenizer,
            &opts(64),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, TextError::UnsupportedTrainingFormat { .. }),
            "{err:?}"
        );
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains(says)
                && msg.contains("ShareGPT")
                && msg.contains("OpenAI completions"),
            "{msg}"
        );
    }
    // Not even records: the loader's own error, naming the file.
    let junk = write(&d.join("junk.jsonl"), "{\"foo\": 1}\n");
    let msg = chat_samples(&[junk], Some(&template), &tokenizer, &opts(64))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("junk.jsonl") && msg.contains("line 1"),
        "{msg}"
    );

    // `{"text"}` records among conversations are skipped and counted.
    let mixed = write(
        &d.join("mixed.jsonl"),
        "{\"text\": \"x\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Yo\"}]}\n{broken\n",
    );
    let out = chat_samples(&[mixed], Some(&template), &tokenizer, &opts(64)).unwrap();
    assert_eq!(out.samples.len(), 1);
    let skipped = out.files[0].skipped.as_ref().unwrap();
    assert_eq!(
        (skipped.count, skipped.first_at),
        (2, RecordLocation::Line(1))
    );
    assert!(skipped.first_reason.contains("text"), "{skipped}");

    // No conversation with an assistant turn.
    let users = write(
        &d.join("users.jsonl"),
        "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"Hello\"}, {\"from\": \"human\", \"value\": \"Hi\"}]}\n\
         {\"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"human\", \"value\": \"Hi\"}]}\n\
         {\"conversations\": [{\"from\": \"human\", \"value\": \"trunc",
    );
    let err = chat_samples(
        std::slice::from_ref(&users),
        Some(&template),
        &tokenizer,
        &opts(64),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TextError::NoTrainingSamples { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains(&users.display().to_string())
            && msg.contains("2 record(s) read")
            && msg.contains("assistant turn")
            && msg.contains("1 unusable record(s)")
            && msg.contains("line 3"),
        "{msg}"
    );

    // A template whose prefix renderings are not prefixes: the template file is named.
    let odd = common::model_dir_with_config(&serde_json::json!({
        "chat_template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT>{% endif %}"
    }));
    let odd_template = ChatTemplate::from_model_dir(odd.path()).unwrap().unwrap();
    let err = chat_samples(
        std::slice::from_ref(&good),
        Some(&odd_template),
        &tokenizer,
        &opts(64),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TextError::TemplatePrefix { .. }), "{err:?}");
    assert!(
        msg.contains(
            &odd.path()
                .join("tokenizer_config.json")
                .display()
                .to_string()
        ) && msg.contains(&format!("{}:1", good.display()))
            && msg.contains("add_generation_prompt"),
        "{msg}"
    );

    // A template that refuses the conversation: the record is named.
    let strict = common::model_dir_with_config(&serde_json::json!({
        "chat_template": "{% for m in messages %}{% if m.content == 'Yo' %}{{ raise_exception('no Yo') }}{% endif %}{{ m.content }}{% endfor %}"
    }));
    let strict_template = ChatTemplate::from_model_dir(strict.path())
        .unwrap()
        .unwrap();
    let msg = chat_samples(
        std::slice::from_ref(&good),
        Some(&strict_template),
        &tokenizer,
        &opts(64),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("no Yo") && msg.contains(&format!("{}:1", good.display())),
        "{msg}"
    );
}

/// The public ShareGPT V3 file: cut off mid-record, with conversations of every shape.
#[test]
fn sharegpt_v3_first_samples() {
    let tokenizer = common::smollm2_tokenizer();
    let template = smollm2_template();
    let path = common::sharegpt();
    let options = ChatSampleOptions {
        max_len: 2048,
        max_samples: Some(200),
    };
    let out = chat_samples(
        std::slice::from_ref(&path),
        Some(&template),
        &tokenizer,
        &options,
    )
    .unwrap();
    assert_eq!(out.samples.len(), 200);
    assert_eq!(
        out.conversations_read,
        200 + out.dropped_too_long + out.dropped_no_assistant
    );
    let file = &out.files[0];
    assert_eq!(file.format, DataFormat::ShareGpt);
    // The whole file was parsed: 17,671 complete records, of which 126 have no turns,
    // and the damaged last one, after which reading stopped.
    let skipped = file.skipped.as_ref().expect("the truncated record");
    assert_eq!(skipped.count, 126 + 1);
    assert!(skipped.stopped_reading);
    assert!(skipped.first_reason.contains("is empty"), "{skipped}");
    let records = load_records(&path).unwrap();
    assert_eq!(records.documents.len(), 17_671 - 126);
    assert_eq!(records.locations.len(), records.documents.len());

    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    for s in &out.samples {
        assert!(s.tokens.len() <= 2048 && s.tokens.len() == s.loss_mask.len());
        assert!(!s.loss_mask.last().unwrap());
        assert!(s.origin.starts_with(&format!("{}:byte ", path.display())));
        // Every masked run ends at an end of turn (or one token before the end).
        for (i, w) in s.loss_mask.windows(2).enumerate() {
            if w[0] && !w[1] && i + 2 < s.tokens.len() {
                assert_eq!(decode(&tokenizer, &s.tokens[i..=i]), "\n", "{}", s.origin);
                assert_eq!(s.tokens[i - 1], im_end, "{}", s.origin);
            }
        }
        // The system prompt is never a target.
        let masked: Vec<u32> = s
            .tokens
            .iter()
            .zip(&s.loss_mask)
            .filter(|(_, &m)| m)
            .map(|(&t, _)| t)
            .collect();
        assert!(!decode(&tokenizer, &masked).contains("<|im_start|>"));
    }
}
