//! Sanity check of the training machinery: repeated updates on one sample must drive its
//! loss down and its chain acceptance up (a head that cannot overfit one sample has a bug).
//!
//! cargo run --release -p temper-eagle --example overfit -- MODEL DATA [UPDATES]

use anyhow::{Context, Result};
use std::path::PathBuf;
use temper_eagle::adamw::{AdamW, AdamWParams};
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
    let updates: usize = args.get(3).map_or(Ok(60), |s| s.parse())?;
    let model = Model::load(&dir, &LoadOptions::default())?;
    let tokenizer = temper_text::tokenizer::load_tokenizer(&dir.join("tokenizer.json"))?;
    let template = ChatTemplate::from_model_dir(&dir)?.context("template")?;
    let samples = chat_samples(
        &[PathBuf::from(&args[2])],
        Some(&template),
        &tokenizer,
        &ChatSampleOptions {
            max_len: 256,
            max_samples: Some(4),
        },
    )?;
    let s = &samples.samples[0];
    let mut counts = vec![0u64; model.params().vocab_size];
    for (t, &m) in s.tokens.iter().zip(&s.loss_mask) {
        if m {
            counts[*t as usize] += 1;
        }
    }
    let vocab = DraftVocab::from_counts(&counts, 2048)?;
    let h = model.params().hidden_size;
    let rows = candle_core::Tensor::zeros(
        (2048, h),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let head = DraftModel::init(DraftShape::for_target(model.params(), 2048), rows, 0)?;
    let mut opt = AdamW::new(AdamWParams::default(), &head.vars)?;
    let aux = default_aux_layers(model.params().num_layers);
    let f = sample_features(&model, &aux, &vocab, &s.tokens)?;
    for u in 0..updates {
        let l = head.ttt(&f, &s.tokens, &s.loss_mask, 2)?;
        if u % 10 == 0 || u + 1 == updates {
            println!(
                "update {u}: per-step CE {:?}, accepted {:?} of {:?}",
                l.per_step, l.accepted, l.counted
            );
        }
        let mut g = l.total.backward()?;
        AdamW::clip_grad_norm(&mut g, &head.vars, 0.5)?;
        opt.update(&head.vars, &g, 1e-3)?;
    }
    Ok(())
}
