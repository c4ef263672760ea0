//! Where a training step's time goes: target features, the training-time-test forward, and
//! the backward pass, for one sample.
//!
//! cargo run --release -p temper-eagle --example train_profile -- MODEL DATA [LEN] [K] [VD]

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;
use temper_eagle::draft::{DraftModel, DraftShape};
use temper_eagle::features::sample_features;
use temper_eagle::vocab::DraftVocab;
use temper_runtime::speculative::default_aux_layers;
use temper_runtime::{LoadOptions, Model};
use temper_text::chat::ChatTemplate;
use temper_text::data::{chat_samples, ChatSampleOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let len: usize = args.get(3).map_or(Ok(512), |s| s.parse())?;
    let k: usize = args.get(4).map_or(Ok(4), |s| s.parse())?;
    let vd: usize = args.get(5).map_or(Ok(8192), |s| s.parse())?;
    let model = Model::load(&dir, &LoadOptions::default())?;
    let tokenizer = temper_text::tokenizer::load_tokenizer(&dir.join("tokenizer.json"))?;
    let template = ChatTemplate::from_model_dir(&dir)?.context("template")?;
    let samples = chat_samples(
        &[PathBuf::from(&args[2])],
        Some(&template),
        &tokenizer,
        &ChatSampleOptions {
            max_len: len,
            max_samples: Some(50),
        },
    )?;
    let s = samples
        .samples
        .iter()
        .max_by_key(|s| s.tokens.len())
        .context("no sample")?;
    let counts: Vec<u64> = (0..model.params().vocab_size as u64)
        .map(|i| 1000 - i % 1000)
        .collect();
    let vocab = DraftVocab::from_counts(&counts, vd)?;
    let shape = DraftShape::for_target(model.params(), vd);
    let rows = candle_core::Tensor::zeros(
        (vd, model.params().hidden_size),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let head = DraftModel::init(shape, rows, 0)?;
    let aux = default_aux_layers(model.params().num_layers);
    for _ in 0..3 {
        let t = Instant::now();
        let f = sample_features(&model, &aux, &vocab, &s.tokens)?;
        let t_feat = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let l = head.ttt(&f, &s.tokens, &s.loss_mask, k)?;
        let t_fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _g = l.total.backward()?;
        let t_bwd = t.elapsed().as_secs_f64();
        println!(
            "{} tokens: features {:.3}s, ttt forward {:.3}s, backward {:.3}s -> {:.0} tokens/s",
            s.tokens.len(),
            t_feat,
            t_fwd,
            t_bwd,
            s.tokens.len() as f64 / (t_feat + t_fwd + t_bwd)
        );
    }
    Ok(())
}
