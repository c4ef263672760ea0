//! temper-text: text in and out of a language model, shared by the runtime's
//! `generate` and `eval` commands and by quantization calibration.
//!
//! - [`chat`]: a model's Jinja chat template, rendered as Hugging Face transformers
//!   renders it, so prompts match what the model was trained on.
//! - [`sampling`]: greedy, temperature, top-k and top-p sampling, seeded and
//!   allocation-free per token.
//! - [`stream`]: token-by-token detokenization that never prints half a character, and
//!   stop strings that are never half printed.
//! - [`data`]: plain text, ShareGPT and OpenAI dataset files (damaged ones included)
//!   into documents, and documents into fixed-length token windows for perplexity and
//!   calibration, or into loss-masked samples for training a speculative-decoding draft
//!   model ([`chat_samples`], from the files of a training data source:
//!   [`training_files`]).
//! - [`config`]: [`GenerationDefaults`], the end-of-sequence tokens of a model directory.
//! - [`tokenizer`]: loading a model's `tokenizer.json` ([`load_tokenizer`]).
//!
//! Tokenization is the `tokenizers` crate's; [`Tokenizer`] is re-exported so callers
//! need no direct dependency.

pub mod chat;
pub mod config;
pub mod data;
mod error;
pub mod sampling;
pub mod stream;
pub mod tokenizer;

pub use chat::{render_plain, ChatTemplate, Message};
pub use config::GenerationDefaults;
pub use data::{
    chat_samples, load_documents, load_records, split_held_out, token_windows, training_files,
    ChatSample, ChatSampleOptions, ChatSamples, DataFormat, Document, Documents, HeldOut, Manifest,
    RecordLocation, Records, Skipped, SourceFile, SourceKind, WindowOptions,
};
pub use error::TextError;
pub use sampling::{Sampler, SamplingParams};
pub use stream::{StopOutput, StopStrings, TextStream};
pub use tokenizer::load_tokenizer;
pub use tokenizers::Tokenizer;
