//! temper-gguf: import a GGUF file (llama.cpp's format) into a complete Hugging Face
//! model directory: safetensors weights, `config.json`, `generation_config.json` and
//! the tokenizer files, so users holding only a GGUF can optimize it like any model.
//!
//! - [`reader`]: the GGUF header, typed metadata and tensors dequantized to f32.
//! - `names`: GGUF tensor names to Hugging Face names; the q/k row un-permutation.
//! - `config`: `config.json` from metadata, checked against the tensor shapes.
//! - `rope`: Llama 3 rope scaling recovered from llama.cpp's factor tensor.
//! - [`tokenizer`]: `tokenizer.json` and friends from the GGUF vocabulary.
//! - `import`: [`import_gguf`], which puts it together.

mod config;
mod error;
mod import;
mod names;
pub mod reader;
mod rope;
pub mod tokenizer;

pub use config::Arch;
pub use error::{Error, Result};
pub use import::{import_gguf, ImportOptions, ImportReport, OutputDtype};
pub use tokenizer::TokenizerSummary;
