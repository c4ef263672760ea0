//! Speculative decoding with EAGLE-3 heads on the real SmolLM2-135M: lossless greedy and
//! sampled output, an oracle drafter accepted in full, the KV cache after a round equal to a
//! from-scratch recompute, and a short training run that must beat the untrained head.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use temper_eagle::draft::{DraftModel, DraftShape};
use temper_eagle::export::{head_config, write_head};
use temper_eagle::train::{train, Run, TrainOptions};
use temper_eagle::vocab::DraftVocab;
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::speculative::{
    generate_speculative, DraftHead, Drafter, EagleDrafter, TokenTree, TreeShape,
};
use temper_runtime::{LoadOptions, Logits, Model, NewTokens};
use temper_text::chat::{ChatTemplate, Message};
use temper_text::data::{chat_samples, ChatSampleOptions};
use temper_text::sampling::SamplingParams;
use tokenizers::Tokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let dir = root().join(".cache/models/smollm2-135m-instruct");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/test.sh (it imports the model) first",
        dir.display()
    );
    dir
}

struct Setup {
    model: Model,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// An untrained head (random layer, LM head from the target's rows).
    head_dir: tempfile::TempDir,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = model_dir();
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let tokenizer =
            temper_text::tokenizer::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
        let template = ChatTemplate::from_model_dir(&dir).unwrap().unwrap();
        let head_dir = tempfile::tempdir().unwrap();
        let counts: Vec<u64> = (0..model.params().vocab_size as u64)
            .map(|i| 1000 - (i % 1000))
            .collect();
        let vocab = DraftVocab::from_counts(&counts, 1024).unwrap();
        write_random_head(&model, &vocab, &head_dir.path().join("speculative"));
        Setup {
            model,
            tokenizer,
            template,
            head_dir,
        }
    })
}

fn write_random_head(model: &Model, vocab: &DraftVocab, dir: &Path) {
    let shape = DraftShape::for_target(model.params(), vocab.size());
    let h = model.params().hidden_size;
    let rows = Tensor::randn(0f32, 0.05, (vocab.size(), h), &Device::Cpu).unwrap();
    let head = DraftModel::init(shape, rows, 7).unwrap();
    let raw = serde_json::json!({});
    write_head(dir, &head_config(model.params(), &raw, vocab), &head, vocab).unwrap();
}

fn chat_prompt(s: &Setup, text: &str) -> Vec<u32> {
    let rendered = s
        .template
        .render(&[Message::new("user", text)], true)
        .unwrap();
    s.tokenizer
        .encode(rendered.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec()
}

fn greedy(max_new: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: max_new,
        sampling: SamplingParams::greedy(),
        stop_strings: vec![],
        eos_token_ids: vec![2],
    }
}

const PROMPTS: [&str; 2] = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
];

#[test]
fn greedy_speculative_output_equals_plain_decoding_for_chains_and_trees() {
    let s = setup();
    let head = DraftHead::load(&s.head_dir.path().join("speculative"), s.model.params()).unwrap();
    let shapes = [
        TreeShape::chain(3),
        TreeShape {
            depth: 3,
            top_k: 2,
            nodes: 6,
        },
    ];
    for text in PROMPTS {
        let prompt = chat_prompt(s, text);
        let plain = generate(&s.model, &s.tokenizer, &prompt, &greedy(40), &mut |_| {}).unwrap();
        for shape in shapes {
            let mut drafter = EagleDrafter::new(&s.model, &head, shape, 512).unwrap();
            let spec = generate_speculative(
                &s.model,
                &mut drafter,
                &s.tokenizer,
                &prompt,
                &greedy(40),
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(
                spec.generation.token_ids, plain.token_ids,
                "{shape:?} on {text:?}"
            );
            assert_eq!(spec.generation.text, plain.text);
            assert!(spec.speculative.rounds >= 1);
        }
    }
}

/// Drafts the continuation it was given: every draft is right.
struct Oracle {
    continuation: Vec<u32>,
    at: usize,
    shape: TreeShape,
    /// Drafts at this depth (1-based) are made wrong.
    wrong_at: Option<usize>,
}

impl Drafter for Oracle {
    fn begin(&mut self, _: &[u32], _: &[Tensor], root: u32) -> temper_runtime::Result<()> {
        assert_eq!(root, self.continuation[0]);
        self.at = 0;
        Ok(())
    }

    fn draft(&mut self, root: u32, room: usize) -> temper_runtime::Result<TokenTree> {
        assert_eq!(root, self.continuation[self.at], "root out of step");
        let end = (self.at + 1 + self.shape.depth.min(room)).min(self.continuation.len());
        let mut drafts = self.continuation[self.at + 1..end].to_vec();
        if let Some(d) = self.wrong_at.filter(|&d| d <= drafts.len()) {
            drafts[d - 1] = drafts[d - 1].wrapping_add(1) % 49152;
        }
        Ok(TokenTree::chain(root, &drafts))
    }

    fn commit(&mut self, tokens: &[u32], streams: &[Tensor], _: u32) -> temper_runtime::Result<()> {
        assert_eq!(streams[0].dim(0)?, tokens.len());
        self.at += tokens.len();
        Ok(())
    }

    fn aux_layers(&self) -> &[usize] {
        &[2, 15, 27]
    }

    fn shape(&self) -> TreeShape {
        self.shape
    }
}

#[test]
fn an_oracle_drafter_is_accepted_in_full_and_a_wrong_draft_stops_the_round() {
    let s = setup();
    let prompt = chat_prompt(s, PROMPTS[1]);
    let opts = GenerateOptions {
        eos_token_ids: vec![],
        ..greedy(41)
    };
    let plain = generate(&s.model, &s.tokenizer, &prompt, &opts, &mut |_| {}).unwrap();
    assert_eq!(plain.token_ids.len(), 41);
    let mut oracle = Oracle {
        continuation: plain.token_ids.clone(),
        at: 0,
        shape: TreeShape::chain(4),
        wrong_at: None,
    };
    let spec = generate_speculative(
        &s.model,
        &mut oracle,
        &s.tokenizer,
        &prompt,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(spec.generation.token_ids, plain.token_ids);
    // 41 tokens: 8 rounds of root + 4 drafts, and the last token as a root alone.
    assert_eq!(spec.speculative.rounds, 8);
    assert_eq!(spec.speculative.accepted_drafts, 32);
    for d in &spec.speculative.per_depth {
        assert_eq!(d.rate, 1.0, "{:?}", spec.speculative.per_depth);
    }
    let mut wrong = Oracle {
        continuation: plain.token_ids.clone(),
        at: 0,
        shape: TreeShape::chain(4),
        wrong_at: Some(3),
    };
    let spec = generate_speculative(
        &s.model,
        &mut wrong,
        &s.tokenizer,
        &prompt,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(spec.generation.token_ids, plain.token_ids);
    // Two drafts accepted, then the target's own token replaces the wrong third one.
    assert!((spec.speculative.acceptance_length - 3.0).abs() < 0.2);
    assert_eq!(spec.speculative.per_depth[2].accepted, 0);
}

#[test]
fn the_cache_after_a_tree_round_equals_a_from_scratch_recompute() {
    let s = setup();
    let m = &s.model;
    let prompt = chat_prompt(s, PROMPTS[0]);
    let mut cache = m.new_cache(256).unwrap();
    m.forward(&prompt, &mut cache, Logits::Last).unwrap();
    // root -> a, root -> b -> c: accept root, b, c.
    let (r, a, b, c) = (504u32, 1001, 2052, 3003);
    let mut tree = TokenTree::root(r);
    tree.push(0, a);
    let nb = tree.push(0, b);
    tree.push(nb, c);
    let past = cache.len();
    let verified = m
        .forward_with(
            &tree.tokens,
            &mut cache,
            NewTokens::Tree(&tree),
            &[],
            Logits::All,
        )
        .unwrap()
        .logits;
    cache.compact(past, &[0, 2, 3]).unwrap();
    let next = m.forward(&[77], &mut cache, Logits::Last).unwrap();

    let mut fresh = m.new_cache(256).unwrap();
    let mut all = prompt.clone();
    all.extend([r, b, c]);
    let plain = m.forward(&all, &mut fresh, Logits::All).unwrap();
    let plain_next = m.forward(&[77], &mut fresh, Logits::Last).unwrap();
    let diff = |x: &Tensor, y: &Tensor| {
        let d = (x - y).unwrap().abs().unwrap().max_all().unwrap();
        let scale = y.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
    };
    let n = prompt.len();
    // Node 3 (c, depth 2) saw root and b only: its logits are those of position n + 2.
    assert!(diff(&verified.get(3).unwrap(), &plain.get(n + 2).unwrap()) < 1e-4);
    assert!(diff(&verified.get(0).unwrap(), &plain.get(n).unwrap()) < 1e-4);
    assert!(diff(&next, &plain_next) < 1e-4);
}

/// A drafter that always proposes the same chain, to exercise rejections.
struct Fixed {
    drafts: Vec<u32>,
}

impl Drafter for Fixed {
    fn begin(&mut self, _: &[u32], _: &[Tensor], _: u32) -> temper_runtime::Result<()> {
        Ok(())
    }
    fn draft(&mut self, root: u32, room: usize) -> temper_runtime::Result<TokenTree> {
        let k = self.drafts.len().min(room);
        Ok(TokenTree::chain(root, &self.drafts[..k]))
    }
    fn commit(&mut self, _: &[u32], _: &[Tensor], _: u32) -> temper_runtime::Result<()> {
        Ok(())
    }
    fn aux_layers(&self) -> &[usize] {
        &[2, 15, 27]
    }
    fn shape(&self) -> TreeShape {
        TreeShape::chain(self.drafts.len())
    }
}

#[test]
fn sampled_speculative_tokens_follow_the_targets_distribution() {
    let s = setup();
    let m = &s.model;
    let prompt = chat_prompt(s, "Say yes or no.");
    // top-k 2 at temperature 1.5: two tokens per step, so the first two tokens have four
    // outcomes whose exact probabilities the target gives.
    let params = |seed| SamplingParams {
        temperature: 1.5,
        top_k: Some(2),
        top_p: None,
        seed,
    };
    let sampler = temper_text::sampling::Sampler::new(params(0)).unwrap();
    let mut cache = m.new_cache(64).unwrap();
    let first = sampler.distribution(
        &m.forward(&prompt, &mut cache, Logits::Last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    let mut exact = Vec::new();
    for &(x1, p1) in &first.tokens {
        let mut c = m.new_cache(64).unwrap();
        let mut seq = prompt.clone();
        seq.push(x1);
        let z = m.forward(&seq, &mut c, Logits::Last).unwrap();
        let second = sampler.distribution(&z.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for &(x2, p2) in &second.tokens {
            exact.push(((x1, x2), f64::from(p1) * f64::from(p2)));
        }
    }
    assert_eq!(exact.len(), 4);
    // The drafter proposes the less likely first token, then its less likely successor.
    let mut ranked: Vec<_> = exact.clone();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut drafter = Fixed {
        drafts: vec![ranked[0].0 .1],
    };
    let runs = 300;
    let mut counts = vec![0usize; 4];
    for seed in 0..runs {
        let opts = GenerateOptions {
            max_new_tokens: 2,
            sampling: params(seed as u64 + 1),
            stop_strings: vec![],
            eos_token_ids: vec![],
        };
        let out = generate_speculative(m, &mut drafter, &s.tokenizer, &prompt, &opts, &mut |_| {})
            .unwrap();
        let pair = (out.generation.token_ids[0], out.generation.token_ids[1]);
        let i = exact
            .iter()
            .position(|(p, _)| *p == pair)
            .expect("an outcome top-k allows");
        counts[i] += 1;
    }
    // Pearson's chi-square with 3 degrees of freedom; 16.27 is the 0.999 quantile.
    let chi2: f64 = exact
        .iter()
        .zip(&counts)
        .map(|((_, p), &c)| {
            let e = p * runs as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum();
    assert!(
        chi2 < 16.27,
        "chi2 {chi2}: counts {counts:?}, exact {exact:?}"
    );
}

#[test]
fn a_short_training_run_lowers_the_loss_and_beats_the_untrained_head() {
    let s = setup();
    let data = root().join(".cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json");
    let samples = chat_samples(
        std::slice::from_ref(&data),
        Some(&s.template),
        &s.tokenizer,
        &ChatSampleOptions {
            max_len: 160,
            max_samples: Some(48),
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        steps: 16,
        batch: 2,
        learning_rate: 2e-3,
        warmup: 2,
        ttt_steps: 2,
        draft_vocab_size: 2048,
        seed: 3,
        held_out: 6,
        eval_every: 8,
        max_grad_norm: 0.5,
    };
    let (head, vocab, report) = train(
        &s.model,
        &samples.samples,
        &opts,
        &Run {
            work_dir: work.path(),
            deadline: None,
            stop: &|| false,
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(
        report.best.loss < report.initial.loss * 0.9,
        "held-out loss {} -> {}",
        report.initial.loss,
        report.best.loss
    );
    assert!(
        report.best.acceptance_length > report.initial.acceptance_length,
        "acceptance {} -> {}",
        report.initial.acceptance_length,
        report.best.acceptance_length
    );
    // The written head loads in the runtime and drafts losslessly.
    let out = tempfile::tempdir().unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("config.json")).unwrap())
            .unwrap();
    let head_dir = out.path().join("speculative");
    write_head(
        &head_dir,
        &head_config(s.model.params(), &raw, &vocab),
        &head,
        &vocab,
    )
    .unwrap();
    let loaded = DraftHead::load(&head_dir, s.model.params()).unwrap();
    assert_eq!(loaded.draft_vocab_size(), 2048);
    // scripts/test.sh asks for the head and a trace of it for the independent numpy check
    // (tests/python/test_eagle_head.py).
    if let Some(dir) = std::env::var_os("TEMPER_EAGLE_ARTIFACTS") {
        write_trace_artifact(s, &head_dir, Path::new(&dir));
    }
    // A resumed run with the same options continues from the saved step.
    let (_, _, again) = train(
        &s.model,
        &samples.samples,
        &opts,
        &Run {
            work_dir: work.path(),
            deadline: None,
            stop: &|| false,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again.resumed_at_step, Some(16));
}

/// `<dir>/eagle-tiny/` (the target's files and `speculative/`) and
/// `<dir>/eagle-tiny.trace.safetensors`: a prompt's target features and what the head made of
/// them (per-row logits and argmax, a greedy chain with its logits).
fn write_trace_artifact(s: &Setup, head_dir: &Path, dir: &Path) {
    let artifact = dir.join("eagle-tiny");
    if artifact.exists() {
        std::fs::remove_dir_all(&artifact).unwrap();
    }
    std::fs::create_dir_all(&artifact).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(model_dir().join(f), artifact.join(f)).unwrap();
    }
    let spec = artifact.join("speculative");
    std::fs::create_dir_all(&spec).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(head_dir.join(f), spec.join(f)).unwrap();
    }
    let m = &s.model;
    let head = DraftHead::load(&spec, m.params()).unwrap();
    let aux = head.aux_layers(m.params().num_layers);
    let prompt = chat_prompt(s, PROMPTS[0]);
    let n = prompt.len();
    let mut cache = m.new_cache(n + 1).unwrap();
    let fw = m
        .forward_with(&prompt, &mut cache, NewTokens::Causal, &aux, Logits::Last)
        .unwrap();
    let root = fw
        .logits
        .flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap();
    let mut tokens = prompt.clone();
    tokens.push(root);
    let mut dcache = head.new_cache(n + 8).unwrap();
    let h = head.fuse(&fw.captured).unwrap();
    let out = head
        .step(m.head(), &h, &tokens[1..], &mut dcache, NewTokens::Causal)
        .unwrap();
    let row_logits = head.logits(&out).unwrap();
    let pick = |logits: &Tensor| -> Vec<i64> {
        logits
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .map(|&d| i64::from(head.target_id(d as usize)))
            .collect()
    };
    let row_draft = pick(&row_logits);
    // The greedy chain from the last row: each step reads the previous output and draft.
    let mut chain = vec![*row_draft.last().unwrap()];
    let mut chain_logits = vec![row_logits.get(n - 1).unwrap()];
    let mut prev = out.narrow(0, n - 1, 1).unwrap();
    for _ in 1..4 {
        let tok = *chain.last().unwrap() as u32;
        prev = head
            .step(m.head(), &prev, &[tok], &mut dcache, NewTokens::Causal)
            .unwrap();
        let l = head.logits(&prev).unwrap();
        chain.push(pick(&l)[0]);
        chain_logits.push(l.get(0).unwrap());
    }
    let tensors: std::collections::HashMap<String, Tensor> = [
        (
            "tokens",
            Tensor::new(
                tokens.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(),
                &Device::Cpu,
            ),
        ),
        ("aux", Tensor::cat(&fw.captured, 1)),
        ("row_draft", Tensor::new(row_draft, &Device::Cpu)),
        ("row_logits", Ok(row_logits)),
        ("chain", Tensor::new(chain, &Device::Cpu)),
        ("chain_logits", Tensor::stack(&chain_logits, 0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.unwrap()))
    .collect();
    candle_core::safetensors::save(&tensors, dir.join("eagle-tiny.trace.safetensors")).unwrap();
}
