//! Incremental detokenization with SmolLM2's byte-level BPE tokenizer, and stop strings.

mod common;

use temper_text::{StopOutput, StopStrings, TextStream, Tokenizer};

const TEXT: &str = "Café crème, naïve façade — 東京タワー 🗼! Emoji: 😀👍🏽🇫🇷 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.\n\
                    Zoë's résumé: ½ + ¼ = ¾ ✓";

fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

/// Streams `ids` one at a time; returns the chunks (the last from `finish`).
fn stream_all(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut stream = TextStream::new(tokenizer).skip_special_tokens(skip_special);
    let mut chunks: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    chunks.push(stream.finish().unwrap());
    assert_eq!(stream.tokens(), ids);
    chunks
}

#[test]
fn streamed_text_equals_the_whole_decode() {
    let tokenizer = common::smollm2_tokenizer();
    let ids = encode(&tokenizer, TEXT);
    // The test is only meaningful if some token ends inside a character.
    let partial = ids
        .iter()
        .filter(|&&id| tokenizer.decode(&[id], false).unwrap().contains('\u{FFFD}'))
        .count();
    assert!(partial > 0, "no token splits a character; pick other text");

    let chunks = stream_all(&tokenizer, &ids, true);
    let whole = tokenizer.decode(&ids, true).unwrap();
    assert_eq!(whole, TEXT);
    assert_eq!(chunks.concat(), whole);
    for chunk in &chunks {
        assert!(
            !chunk.contains('\u{FFFD}'),
            "a partial character was printed: {chunk:?}"
        );
    }
    // Some tokens completed nothing (held back), and the final flush has nothing left.
    assert!(chunks.iter().any(String::is_empty));
    assert_eq!(chunks.last().map(String::as_str), Some(""));
}

#[test]
fn special_tokens_skipped_or_kept() {
    let tokenizer = common::smollm2_tokenizer();
    let text = "<|im_start|>assistant\nSí, ¡claro! 👍<|im_end|>\n";
    let ids = encode(&tokenizer, text);
    assert_eq!(stream_all(&tokenizer, &ids, false).concat(), text);
    assert_eq!(
        stream_all(&tokenizer, &ids, true).concat(),
        tokenizer.decode(&ids, true).unwrap()
    );
    assert_eq!(
        stream_all(&tokenizer, &ids, true).concat(),
        "assistant\nSí, ¡claro! 👍\n"
    );
}

#[test]
fn incomplete_character_at_the_end_is_flushed_by_finish() {
    let tokenizer = common::smollm2_tokenizer();
    let ids = encode(&tokenizer, "ok 🗼");
    // Drop the last token: the emoji stays incomplete.
    let ids = &ids[..ids.len() - 1];
    let chunks = stream_all(&tokenizer, ids, true);
    assert_eq!(chunks.concat(), tokenizer.decode(ids, true).unwrap());
    assert!(chunks.last().unwrap().ends_with('\u{FFFD}'));
}

/// Runs `text` through TextStream and StopStrings as generation would.
fn generate_until_stop(tokenizer: &Tokenizer, text: &str, stops: &[&str]) -> (String, bool) {
    let mut stream = TextStream::new(tokenizer);
    let mut stop = StopStrings::new(stops.iter().map(|s| s.to_string()).collect());
    let mut printed = String::new();
    for id in encode(tokenizer, text) {
        let out = stop.push(&stream.push(id).unwrap());
        printed.push_str(&out.text);
        if out.stopped {
            return (printed, true);
        }
    }
    printed.push_str(&stop.push(&stream.finish().unwrap()).text);
    printed.push_str(&stop.finish());
    (printed, stop.stopped())
}

#[test]
fn stop_strings_spanning_tokens() {
    let tokenizer = common::smollm2_tokenizer();
    let text = "The answer is 4.\nUser: and 5? Assistant: 5";
    // "\nUser:" is several tokens.
    assert!(encode(&tokenizer, "\nUser:").len() > 1);
    assert_eq!(
        generate_until_stop(&tokenizer, text, &["\nUser:"]),
        ("The answer is 4.".to_string(), true)
    );
    // The earliest of several stop strings wins.
    assert_eq!(
        generate_until_stop(&tokenizer, text, &["Assistant:", "and 5"]),
        ("The answer is 4.\nUser: ".to_string(), true)
    );
    // A stop string made of multi-byte characters split across tokens.
    assert_eq!(
        generate_until_stop(&tokenizer, "Voilà 😀👍 fin", &["😀👍"]),
        ("Voilà ".to_string(), true)
    );
    // No stop: everything is printed, including a held-back near miss at the end.
    assert_eq!(
        generate_until_stop(&tokenizer, "ends with \nUse", &["\nUser:"]),
        ("ends with \nUse".to_string(), false)
    );
}

#[test]
fn stop_strings_hold_back_possible_starts() {
    let mut stop = StopStrings::new(vec!["</stop>".into(), String::new()]);
    let out = |text: &str, stopped| StopOutput {
        text: text.into(),
        stopped,
    };
    assert_eq!(stop.push("hello <"), out("hello ", false));
    assert_eq!(stop.push("/st"), out("", false));
    assert_eq!(stop.push("art> <"), out("</start> ", false));
    assert_eq!(stop.push("/stop"), out("", false));
    assert_eq!(stop.push(">tail"), out("", true));
    assert_eq!(stop.push("more"), out("", true));
    assert!(stop.stopped());
    assert_eq!(stop.finish(), "");

    let mut none = StopStrings::new(Vec::new());
    assert_eq!(none.push("anything"), out("anything", false));
}

#[test]
fn prompt_context_keeps_the_first_words_space() {
    // SentencePiece-style (Metaspace) decoding drops the leading space of a sequence's
    // first token; with the prompt's tail as context the first generated word keeps it.
    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
      "normalizer":null,
      "pre_tokenizer":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},
      "post_processor":null,
      "decoder":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},
      "model":{"type":"WordLevel","vocab":{"\u2581The":0,"\u2581capital":1,"\u2581is":2,"\u2581Paris":3,"<unk>":4},"unk_token":"<unk>"}}"#;
    let tokenizer = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let mut bare = TextStream::new(&tokenizer);
    assert_eq!(bare.push(3).unwrap(), "Paris");
    let mut stream = TextStream::new(&tokenizer).with_context(&[1, 2]);
    let mut text = stream.push(3).unwrap();
    text += &stream.push(0).unwrap();
    text += &stream.finish().unwrap();
    assert_eq!(text, " Paris The");
    assert_eq!(stream.tokens(), &[3, 0]);
}
