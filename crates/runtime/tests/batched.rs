//! Continuous batching on the real SmolLM2 model: a decode step over several sequences at once
//! (sequences joining and leaving between steps) computes, for each, what decoding it alone
//! computes, prompts included (prefilled together with others' decode steps, whole or in
//! chunks).

use temper_runtime::{KvCache, LoadOptions, Logits, Model};

mod common;
use common::smollm2;

const PROMPTS: [&[u32]; 3] = [
    &[504, 3575, 282, 4649, 314, 7042, 30],
    &[378, 2616, 282, 5027, 314],
    &[1206, 339, 253, 1789, 28, 2671, 4469, 30, 504, 1789],
];

fn argmax(row: &[f32]) -> u32 {
    temper_runtime::eval::argmax(row) as u32
}

/// Greedy logits of `prompt` decoded alone: the prefill's last row, then one row per token.
fn alone(model: &Model, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(prompt.len() + steps + 1).unwrap();
    let mut rows = vec![last_row(model, prompt, &mut cache)];
    for _ in 0..steps {
        let next = argmax(rows.last().unwrap());
        let l = model.forward(&[next], &mut cache, Logits::Last).unwrap();
        rows.push(l.flatten_all().unwrap().to_vec1().unwrap());
    }
    rows
}

fn last_row(model: &Model, prompt: &[u32], cache: &mut KvCache) -> Vec<f32> {
    let l = model.forward(prompt, cache, Logits::Last).unwrap();
    l.flatten_all().unwrap().to_vec1().unwrap()
}

struct Running {
    which: usize,
    cache: KvCache,
    /// Prompt tokens not yet run.
    pending: Vec<u32>,
    rows: Vec<Vec<f32>>,
}

/// Sequences 0 and 1 are prefilled together in one step; sequence 2 joins after two steps
/// with its prompt fed in chunks of at most 4 tokens alongside the others' decode tokens;
/// each leaves after `steps` tokens. Every logit row matches decoding alone.
#[test]
fn batched_steps_with_prefills_and_chunks_compute_each_sequence_as_alone() {
    let dir = smollm2();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let steps = 6;
    let want: Vec<_> = PROMPTS.iter().map(|p| alone(&model, p, steps)).collect();

    let join = |which: usize| Running {
        which,
        cache: model.new_cache(PROMPTS[which].len() + steps + 1).unwrap(),
        pending: PROMPTS[which].to_vec(),
        rows: Vec::new(),
    };
    let mut running = vec![join(0), join(1)];
    let mut done: Vec<Option<Vec<Vec<f32>>>> = vec![None; PROMPTS.len()];
    let mut step = 0;
    while !running.is_empty() {
        if step == 2 {
            running.push(join(2));
        }
        let mut tokens = Vec::new();
        let mut lens = Vec::new();
        for r in running.iter_mut() {
            if r.pending.is_empty() {
                tokens.push(argmax(r.rows.last().unwrap()));
                lens.push(1);
            } else {
                // The first two take their whole prompts; the late one chunks of 4.
                let n = if r.which == 2 {
                    r.pending.len().min(4)
                } else {
                    r.pending.len()
                };
                tokens.extend(r.pending.drain(..n));
                lens.push(n);
            }
        }
        let mut caches: Vec<&mut KvCache> = running.iter_mut().map(|r| &mut r.cache).collect();
        let logits: Vec<Vec<f32>> = model
            .forward_segments(&tokens, &lens, &mut caches)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (r, row) in running.iter_mut().zip(logits) {
            // A chunk that leaves prompt tokens behind gives no token yet.
            if r.pending.is_empty() {
                r.rows.push(row);
            }
        }
        let (finished, rest): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|r| r.rows.len() > steps);
        for r in finished {
            done[r.which] = Some(r.rows);
        }
        running = rest;
        step += 1;
    }
    for (which, (want, got)) in want.iter().zip(&done).enumerate() {
        let got = got.as_ref().unwrap();
        assert_eq!(want.len(), got.len());
        let scale = want.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
        for (t, (w, g)) in want.iter().zip(got).enumerate() {
            assert_eq!(argmax(w), argmax(g), "sequence {which} token {t}");
            let diff = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Batched products sum each row in the same order as a lone row; only the
            // attention's split and a prompt's attention path (loops vs matmul) may differ.
            assert!(
                diff <= 1e-5 * scale,
                "sequence {which} token {t}: logits differ by {diff} (largest {scale})"
            );
        }
    }
}

#[test]
fn a_batched_step_refuses_mismatched_inputs_and_full_caches() {
    let dir = smollm2();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let mut a = model.new_cache(4).unwrap();
    let mut b = model.new_cache(2).unwrap();
    last_row(&model, &[504, 3575], &mut b);
    let err = model
        .forward_rows(&[1], &mut [&mut a, &mut b])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 caches, tokens [1]"), "{err}");
    let err = model
        .forward_rows(&[1, 2], &mut [&mut a, &mut b])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 1") && err.contains("no room"),
        "{err}"
    );
    assert_eq!((a.len(), b.len()), (0, 2), "a refused step changes nothing");
}
