//! The imported SmolLM2 model generates like the GGUF it came from.
//!
//! Its own test binary, because the reference model is told to dequantize its weights
//! through an environment variable, which must be set before any other thread runs.

mod common;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::asset;
use std::path::Path;
use temper_gguf::{import_gguf, ImportOptions, OutputDtype};
use tokenizers::Tokenizer;

/// Greedy continuation (ids) and the logits after the prompt, from the imported
/// directory through candle's Hugging Face Llama.
fn greedy_imported(dir: &Path, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<f32>) {
    let config: LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = config.into_config(false);
    let device = Device::Cpu;
    // SAFETY: the file was just written by this test and is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device)
    }
    .unwrap();
    let model = Llama::load(vb, &config).unwrap();
    let mut cache = Cache::new(true, DType::F32, &config, &device).unwrap();
    decode(prompt, steps, |input, pos| {
        model.forward(input, pos, &mut cache).unwrap()
    })
}

/// The same from the GGUF itself through candle's llama.cpp-style model, which reads
/// the quantized weights and their interleaved rotary layout as they are.
fn greedy_reference(gguf: &Path, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<f32>) {
    let mut file = std::fs::File::open(gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    decode(prompt, steps, |input, pos| {
        model.forward(input, pos).unwrap()
    })
}

fn decode(
    prompt: &[u32],
    steps: usize,
    mut forward: impl FnMut(&Tensor, usize) -> Tensor,
) -> (Vec<u32>, Vec<f32>) {
    let mut ids = prompt.to_vec();
    let mut first_logits = Vec::new();
    let mut pos = 0;
    for _ in 0..steps {
        let input = Tensor::new(&ids[pos..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = forward(&input, pos)
            .squeeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        pos = ids.len();
        if first_logits.is_empty() {
            first_logits = logits.to_vec1::<f32>().unwrap();
        }
        ids.push(logits.argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    (ids[prompt.len()..].to_vec(), first_logits)
}

#[test]
fn imported_f32_model_says_paris_like_the_gguf() {
    // Before anything reads it (candle caches it per thread on first use): the
    // reference then computes with the same dequantized f32 weights as the import,
    // so the two must agree to float rounding, not just to quantization noise.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("smollm2");
    let opts = ImportOptions {
        dtype: OutputDtype::F32,
        ..Default::default()
    };
    let mut calls = Vec::new();
    let mut progress = |done, total, bytes| calls.push((done, total, bytes));
    let report = import_gguf(&asset(), &out, &opts, &mut progress).unwrap();
    assert_eq!(report.tensors, 272);
    assert_eq!(report.parameters, 134_515_008);
    assert_eq!(report.bytes_written, report.parameters * 4);
    assert_eq!(calls.first(), Some(&(0, 272, 0)));
    assert_eq!(calls.last(), Some(&(272, 272, report.bytes_written)));
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0 && w[0].2 < w[1].2));
    assert!(report.unpermuted_qk && report.tie_word_embeddings);

    let tok = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let prompt = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let (ids, logits) = greedy_imported(&out, &prompt, 12);
    let text = tok.decode(&ids, false).unwrap();
    assert!(text.contains("Paris"), "greedy continuation: {text:?}");
    // A wrong q/k row order still says "Paris" here (its first logits differ from the
    // reference by ~6 of a ~37 range); the right one matches to rounding (~3e-5).
    let (ref_ids, ref_logits) = greedy_reference(&asset(), &prompt, 12);
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        tok.decode(&ref_ids, false).unwrap()
    );
    let max_diff = logits
        .iter()
        .zip(&ref_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "first-step logits differ from the GGUF reference by up to {max_diff}"
    );
}
