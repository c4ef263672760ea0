//! Generation on the real SmolLM2 model: a stop string that is a special token ends
//! generation even though special tokens never reach the text.

use temper_runtime::generate::{generate, FinishReason, GenerateOptions};
use temper_runtime::{LoadOptions, Model};
use temper_text::chat::{ChatTemplate, Message};
use temper_text::sampling::SamplingParams;

mod common;
use common::smollm2;

#[test]
fn a_special_token_as_stop_string_ends_generation() {
    let dir = smollm2();
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let template = ChatTemplate::from_model_dir(&dir).unwrap().unwrap();
    let prompt = template
        .render(&[Message::new("user", "Say hello.")], true)
        .unwrap();
    let ids = tokenizer
        .encode(prompt.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let opts = |stop: Vec<String>| GenerateOptions {
        max_new_tokens: 200,
        sampling: SamplingParams::greedy(),
        stop_strings: stop,
        // No EOS ids: only the stop string can end the turn early.
        eos_token_ids: vec![],
    };
    let stopped = generate(
        &model,
        &tokenizer,
        &ids,
        &opts(vec!["<|im_end|>".into()]),
        &mut |_: &str| {},
    )
    .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop, "{stopped:?}");
    assert!(stopped.generated_tokens < 200);
    assert!(!stopped.text.is_empty() && !stopped.text.contains("<|im_end|>"));
    // Without it the same greedy run goes on past the end of the turn.
    let running = generate(&model, &tokenizer, &ids, &opts(vec![]), &mut |_: &str| {}).unwrap();
    assert!(
        running.generated_tokens > stopped.generated_tokens,
        "{running:?}"
    );
}
