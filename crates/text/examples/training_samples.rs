//! Builds draft-model training samples from a data source and prints what came of it,
//! with the time each step took:
//!
//!     cargo run --release -p temper-text --example training_samples -- \
//!         <model dir> <data path> [--manifest] [--max-len N] [--max-samples N]
//!
//! The model directory gives the tokenizer and chat template (none: plain rendering).

use std::path::PathBuf;
use std::time::Instant;

use temper_text::{
    chat_samples, load_tokenizer, training_files, ChatSampleOptions, ChatTemplate, SourceKind,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: training_samples <model dir> <data path> [--manifest] [--max-len N] \
                 [--max-samples N]";
    let model = PathBuf::from(args.next().ok_or(usage)?);
    let data = PathBuf::from(args.next().ok_or(usage)?);
    let mut kind = SourceKind::Prefix;
    let mut opts = ChatSampleOptions {
        max_len: 2048,
        max_samples: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--manifest" => kind = SourceKind::Manifest,
            "--max-len" => opts.max_len = args.next().ok_or(usage)?.parse()?,
            "--max-samples" => opts.max_samples = Some(args.next().ok_or(usage)?.parse()?),
            _ => return Err(usage.into()),
        }
    }
    let tokenizer = load_tokenizer(&model)?;
    let template = ChatTemplate::from_model_dir(&model)?;
    let start = Instant::now();
    let files = training_files(&data, kind)?;
    let out = chat_samples(&files, template.as_ref(), &tokenizer, &opts)?;
    let secs = start.elapsed().as_secs_f64();
    for f in &out.files {
        println!(
            "{}: {:?}, {} records",
            f.path.display(),
            f.format,
            f.records
        );
        if let Some(s) = &f.skipped {
            println!("  {s}");
        }
    }
    println!(
        "{} samples ({} tokens, {} masked) from {} records in {secs:.2} s; dropped: {} too long \
         (> {} tokens), {} without an assistant turn; {} turns before a first user turn; \
         {} conversations cut at a broken alternation ({} turns)",
        out.samples.len(),
        out.tokens(),
        out.masked_tokens(),
        out.conversations_read,
        out.dropped_too_long,
        opts.max_len,
        out.dropped_no_assistant,
        out.dropped_leading_turns,
        out.truncated_conversations,
        out.truncated_turns,
    );
    Ok(())
}
