//! Speculative decoding with an EAGLE-3 head: the head drafts a token tree (a chain, or a small
//! EAGLE-2 dynamic tree), the target verifies every node in one forward pass, and the longest
//! path the target agrees with is committed together with one token of the target's own.
//!
//! Lossless: greedy output is the target's greedy output; with sampling, a drafted token is
//! accepted with the target's probability of it and otherwise removed from the target's
//! distribution before trying the next sibling or drawing the bonus token (the drafts are
//! deterministic, so this is rejection sampling with a one-hot proposal), which leaves every
//! committed token distributed exactly as plain sampling would draw it.
//!
//! State between rounds: the target's KV cache holds the committed tokens; the pending root
//! (the last committed token) is not in it yet. The head's cache holds one row per committed
//! position, built from the target's features of that position and the token after it.

use super::head::DraftHead;
use super::tree::TokenTree;
use crate::error::{Result, RuntimeError};
use crate::generate::{new_token_budget, GenerateOptions, GenerateReport, Output};
use crate::model::{Logits, Model, NewTokens};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;
use temper_text::sampling::Sampler;
use tokenizers::Tokenizer;

/// The size of the draft tree of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TreeShape {
    /// Drafted tokens along a path (the longest acceptance a round can reach).
    pub depth: usize,
    /// Children each expanded node proposes, and nodes expanded per depth (1: a chain).
    pub top_k: usize,
    /// Nodes the target verifies, the root included.
    pub nodes: usize,
}

impl TreeShape {
    /// `k` drafts in a row.
    pub fn chain(k: usize) -> Self {
        TreeShape {
            depth: k,
            top_k: 1,
            nodes: k + 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let most = 1 + self.top_k + self.depth.saturating_sub(1) * self.top_k * self.top_k;
        if self.depth == 0 || self.top_k == 0 || self.nodes < 2 || self.nodes > most {
            return Err(RuntimeError::Input(format!(
                "draft tree: depth {}, top-k {}, {} nodes; depth and top-k must be at least 1 \
                 and the nodes between 2 and {most} (1 + top_k + (depth - 1) * top_k^2)",
                self.depth, self.top_k, self.nodes
            )));
        }
        Ok(())
    }
}

/// Acceptance at one draft depth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DepthStats {
    /// Rounds in which every earlier draft was accepted and this depth had drafts.
    pub reached: usize,
    /// Rounds that accepted a draft at this depth.
    pub accepted: usize,
    /// `accepted / reached`: acceptance at this depth given all earlier drafts accepted.
    pub rate: f64,
}

/// What speculation did.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativeStats {
    pub tree: TreeShape,
    /// Target verification passes.
    pub rounds: usize,
    /// Drafted tokens committed.
    pub accepted_drafts: usize,
    /// Tokens committed per target verification, the target's own token included.
    pub acceptance_length: f64,
    pub per_depth: Vec<DepthStats>,
    /// Time in the head (drafting and taking in committed rows).
    pub draft_seconds: f64,
    /// Time in the target's verification passes.
    pub verify_seconds: f64,
}

/// A generation and its speculation statistics.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativeReport {
    #[serde(flatten)]
    pub generation: GenerateReport,
    pub speculative: SpeculativeStats,
}

/// A drafted node before the tree is chosen.
struct Candidate {
    /// Index of the parent among the candidates; `None` for children of the root.
    parent: Option<usize>,
    token: u32,
    /// Sum of the head's log-probabilities along the path.
    score: f32,
    depth: usize,
}

/// Proposes draft trees and takes in what the target committed.
pub trait Drafter {
    /// Starts a sequence: `prompt` ran through the target, which captured `streams` (the
    /// residual streams of [`Drafter::aux_layers`], one row per prompt position) and chose
    /// `root`.
    fn begin(&mut self, prompt: &[u32], streams: &[Tensor], root: u32) -> Result<()>;
    /// A tree of drafts after the pending `root`, at most `room` deep.
    fn draft(&mut self, root: u32, room: usize) -> Result<TokenTree>;
    /// The target committed `tokens[0]` (the old root) and the accepted drafts, whose
    /// captured streams are `streams` (one row each), and chose `next` as the new root.
    fn commit(&mut self, tokens: &[u32], streams: &[Tensor], next: u32) -> Result<()>;
    /// Target layers whose input residual stream the drafter reads.
    fn aux_layers(&self) -> &[usize];
    /// The largest tree [`Drafter::draft`] returns.
    fn shape(&self) -> TreeShape;
}

/// An EAGLE-3 head drafting for its target.
pub struct EagleDrafter<'a> {
    model: &'a Model,
    head: &'a DraftHead,
    aux_layers: Vec<usize>,
    shape: TreeShape,
    cache: crate::KvCache,
    /// The head's output at the last committed row: it gives the distribution after the root.
    last_out: Option<Tensor>,
}

impl<'a> EagleDrafter<'a> {
    /// A drafter for sequences of up to `capacity` positions.
    pub fn new(
        model: &'a Model,
        head: &'a DraftHead,
        shape: TreeShape,
        capacity: usize,
    ) -> Result<Self> {
        shape.validate()?;
        Ok(EagleDrafter {
            aux_layers: head.aux_layers(model.params().num_layers),
            cache: head.new_cache(capacity + shape.depth * shape.top_k)?,
            model,
            head,
            shape,
            last_out: None,
        })
    }

    /// Runs the head on committed rows and keeps the last output.
    fn take_rows(&mut self, streams: &[Tensor], next_tokens: &[u32]) -> Result<()> {
        let features = self.head.fuse(streams)?;
        let out = self.head.step(
            self.model.head(),
            &features,
            next_tokens,
            &mut self.cache,
            NewTokens::Causal,
        )?;
        self.last_out = Some(out.narrow(0, next_tokens.len() - 1, 1)?);
        Ok(())
    }
}

impl Drafter for EagleDrafter<'_> {
    fn begin(&mut self, prompt: &[u32], streams: &[Tensor], root: u32) -> Result<()> {
        self.cache.clear();
        // Row t pairs the features of position t with token t + 1.
        let mut next: Vec<u32> = prompt[1..].to_vec();
        next.push(root);
        self.take_rows(streams, &next)
    }

    fn draft(&mut self, root: u32, room: usize) -> Result<TokenTree> {
        let last_out = self
            .last_out
            .clone()
            .ok_or_else(|| RuntimeError::Input("draft before begin".into()))?;
        draft_tree(
            self.model,
            self.head,
            &mut self.cache,
            &last_out,
            root,
            self.shape,
            room,
        )
    }

    fn commit(&mut self, tokens: &[u32], streams: &[Tensor], next: u32) -> Result<()> {
        let mut next_tokens = tokens[1..].to_vec();
        next_tokens.push(next);
        self.take_rows(streams, &next_tokens)
    }

    fn aux_layers(&self) -> &[usize] {
        &self.aux_layers
    }

    fn shape(&self) -> TreeShape {
        self.shape
    }
}

/// Generates from `prompt` with `drafter` proposing tokens for `model`.
pub fn generate_speculative(
    model: &Model,
    drafter: &mut dyn Drafter,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<SpeculativeReport> {
    let shape = drafter.shape();
    let aux_layers = drafter.aux_layers().to_vec();
    let max_new = new_token_budget(model.params(), prompt, opts)?;
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut output = Output::new(tokenizer, prompt, opts, max_new, on_text);
    // Room for a whole tree after the last committed token.
    let capacity = (prompt.len() + max_new + shape.nodes).min(model.params().max_positions);
    let mut cache = model.new_cache(capacity)?;
    let mut stats = Stats::new(shape);

    let started = Instant::now();
    let fw = model.forward_with(
        prompt,
        &mut cache,
        NewTokens::Causal,
        &aux_layers,
        Logits::Last,
    )?;
    let mut root = sampler.sample(&row(&fw.logits, 0)?);
    let prefill_seconds = started.elapsed().as_secs_f64();
    let t = Instant::now();
    drafter.begin(prompt, &fw.captured, root)?;
    stats.draft_seconds += t.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    let finish = 'rounds: loop {
        if let Some(reason) = output.push(root)? {
            break reason;
        }
        let past = cache.len();
        // Drafts past the token budget or the cache would be thrown away.
        let room = (max_new - output.generated).min(cache.capacity() - past - 1);
        let t = Instant::now();
        let tree = drafter.draft(root, room)?;
        stats.draft_seconds += t.elapsed().as_secs_f64();
        if tree.tokens.first() != Some(&root) || tree.len() > cache.capacity() - past {
            return Err(RuntimeError::Input(format!(
                "the drafter returned a tree of {} nodes that does not start at the root or \
                 does not fit the {} free positions",
                tree.len(),
                cache.capacity() - past
            )));
        }

        let t = Instant::now();
        let fw = model.forward_with(
            &tree.tokens,
            &mut cache,
            NewTokens::Tree(&tree),
            &aux_layers,
            Logits::All,
        )?;
        stats.verify_seconds += t.elapsed().as_secs_f64();
        let (path, bonus) = accept(&tree, &fw.logits, &mut sampler)?;
        stats.record(&tree, &path);
        cache.compact(past, &path)?;

        let t = Instant::now();
        let index = Tensor::new(
            path.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let streams = fw
            .captured
            .iter()
            .map(|s| s.index_select(&index, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let committed: Vec<u32> = path.iter().map(|&i| tree.tokens[i]).collect();
        drafter.commit(&committed, &streams, bonus)?;
        stats.draft_seconds += t.elapsed().as_secs_f64();

        for &token in &committed[1..] {
            if let Some(reason) = output.push(token)? {
                break 'rounds reason;
            }
        }
        root = bonus;
    };
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    // Tokens the decode phase produced (the first came from the prefill), as plain decoding
    // counts them, so the two rates compare.
    let decoded = output.generated.saturating_sub(1);
    Ok(SpeculativeReport {
        generation: output.report(
            finish,
            prompt.len(),
            prefill_seconds,
            stats.rounds,
            decoded,
            decode_seconds,
        )?,
        speculative: stats.finish(),
    })
}

/// Row `i` of a `[n, vocab]` tensor.
fn row(t: &Tensor, i: usize) -> Result<Vec<f32>> {
    Ok(t.get(i)?.to_vec1::<f32>()?)
}

/// The head's draft tree after `root`, whose distribution `last_out` (the head's output at
/// the last committed row) gives. At most `room` drafts deep. The head's cache is left as it
/// was found.
fn draft_tree(
    model: &Model,
    head: &DraftHead,
    cache: &mut crate::KvCache,
    last_out: &Tensor,
    root: u32,
    shape: TreeShape,
    room: usize,
) -> Result<TokenTree> {
    let depth = shape.depth.min(room);
    if depth == 0 {
        return Ok(TokenTree::root(root));
    }
    let stable = cache.len();
    let mut cands: Vec<Candidate> = Vec::new();
    // The frontier: candidates to expand next, and the head output that proposed each.
    let mut frontier: Vec<(usize, Tensor)> = Vec::new();
    for (token, logp) in top_k(&head.logits(last_out)?, 0, shape.top_k, head)? {
        cands.push(Candidate {
            parent: None,
            token,
            score: logp,
            depth: 1,
        });
        frontier.push((cands.len() - 1, last_out.clone()));
    }
    // Which cache slot (after `stable`) each expanded candidate's row went to.
    let mut slot_of: Vec<Option<usize>> = Vec::new();
    let mut expanded = 0;
    for level in 1..depth {
        let n = frontier.len();
        let tokens: Vec<u32> = frontier.iter().map(|(c, _)| cands[*c].token).collect();
        let h = Tensor::cat(&frontier.iter().map(|(_, o)| o).collect::<Vec<_>>(), 0)?;
        let out = if shape.top_k == 1 {
            // A chain: every earlier row is an ancestor, so plain causal attention is exact.
            head.step(model.head(), &h, &tokens, cache, NewTokens::Causal)?
        } else {
            let positions = vec![stable + level - 1; n];
            let mask = draft_mask(&cands, &frontier, &slot_of, stable, expanded)?;
            head.step(
                model.head(),
                &h,
                &tokens,
                cache,
                NewTokens::Explicit {
                    positions: &positions,
                    mask: &mask,
                },
            )?
        };
        let logits = head.logits(&out)?;
        let mut children = Vec::new();
        for (i, (c, _)) in frontier.iter().enumerate() {
            slot_of.resize(cands.len(), None);
            slot_of[*c] = Some(expanded + i);
            for (token, logp) in top_k(&logits, i, shape.top_k, head)? {
                children.push((
                    Candidate {
                        parent: Some(*c),
                        token,
                        score: cands[*c].score + logp,
                        depth: level + 1,
                    },
                    i,
                ));
            }
        }
        expanded += n;
        let first = cands.len();
        let mut best: Vec<usize> = (0..children.len()).collect();
        best.sort_by(|&a, &b| children[b].0.score.total_cmp(&children[a].0.score));
        best.truncate(shape.top_k);
        best.sort_unstable();
        let outs: Vec<usize> = children.iter().map(|(_, i)| *i).collect();
        cands.extend(children.into_iter().map(|(c, _)| c));
        frontier = best
            .into_iter()
            .map(|b| Ok((first + b, out.narrow(0, outs[b], 1)?)))
            .collect::<Result<_>>()?;
    }
    cache.truncate(stable);
    Ok(choose_nodes(&cands, shape.nodes - 1, root))
}

/// The head's `k` most likely tokens at row `i` of its logits, as target ids with their
/// log-probabilities, best first.
fn top_k(logits: &Tensor, i: usize, k: usize, head: &DraftHead) -> Result<Vec<(u32, f32)>> {
    let row = row(logits, i)?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut order: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k);
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    Ok(order
        .into_iter()
        .map(|d| (head.target_id(d), row[d] - log_z))
        .collect())
}

/// Additive mask for expanding `frontier`: every committed row, the cache rows of each node's
/// expanded ancestors, and its own new row.
fn draft_mask(
    cands: &[Candidate],
    frontier: &[(usize, Tensor)],
    slot_of: &[Option<usize>],
    stable: usize,
    expanded: usize,
) -> Result<Tensor> {
    let n = frontier.len();
    let width = stable + expanded + n;
    let mut mask = vec![f32::NEG_INFINITY; n * width];
    for (i, (c, _)) in frontier.iter().enumerate() {
        let row = &mut mask[i * width..(i + 1) * width];
        row[..stable].fill(0.0);
        let mut at = cands[*c].parent;
        while let Some(a) = at {
            if let Some(Some(slot)) = slot_of.get(a) {
                row[stable + slot] = 0.0;
            }
            at = cands[a].parent;
        }
        row[stable + expanded + i] = 0.0;
    }
    Ok(Tensor::from_vec(mask, (n, width), &Device::Cpu)?)
}

/// EAGLE-2's re-ranking: the `keep` candidates of highest path score (ancestors included, so
/// every kept node's path is kept), as a tree under `root` in generation order.
fn choose_nodes(cands: &[Candidate], keep: usize, root: u32) -> TokenTree {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    // Scores never increase along a path; ties go to the earlier (shallower) candidate.
    order.sort_by(|&a, &b| {
        cands[b]
            .score
            .total_cmp(&cands[a].score)
            .then(cands[a].depth.cmp(&cands[b].depth))
            .then(a.cmp(&b))
    });
    let mut kept = vec![false; cands.len()];
    let mut count = 0;
    for &c in &order {
        if count >= keep {
            break;
        }
        let mut chain = Vec::new();
        let mut at = Some(c);
        while let Some(a) = at.filter(|&a| !kept[a]) {
            chain.push(a);
            at = cands[a].parent;
        }
        if count + chain.len() > keep {
            continue;
        }
        for a in chain {
            kept[a] = true;
            count += 1;
        }
    }
    let mut tree = TokenTree::root(root);
    let mut node_of = vec![0usize; cands.len()];
    for (c, cand) in cands.iter().enumerate().filter(|(c, _)| kept[*c]) {
        let parent = cand.parent.map_or(0, |p| node_of[p]);
        node_of[c] = tree.push(parent, cand.token);
    }
    tree
}

/// Walks the verified tree from the root: the accepted path (node indices, root first) and the
/// target's own next token after it.
fn accept(tree: &TokenTree, logits: &Tensor, sampler: &mut Sampler) -> Result<(Vec<usize>, u32)> {
    let greedy = sampler.params().temperature == 0.0 || sampler.params().top_k == Some(1);
    let mut path = vec![0];
    let mut node = 0;
    loop {
        let z = row(logits, node)?;
        let children: Vec<usize> = tree.children(node).collect();
        if greedy {
            let best = sampler.sample(&z);
            match children.iter().find(|&&c| tree.tokens[c] == best) {
                Some(&c) => {
                    path.push(c);
                    node = c;
                    continue;
                }
                None => return Ok((path, best)),
            }
        }
        let mut dist = sampler.distribution(&z);
        let mut next = None;
        for &c in &children {
            let p = dist.probability(tree.tokens[c]);
            if p > 0.0 && sampler.uniform() < f64::from(p) {
                next = Some(c);
                break;
            }
            if p > 0.0 && !dist.remove(tree.tokens[c]) {
                break;
            }
        }
        match next {
            Some(c) => {
                path.push(c);
                node = c;
            }
            None => return Ok((path, sampler.draw(&dist))),
        }
    }
}

struct Stats {
    shape: TreeShape,
    rounds: usize,
    accepted: usize,
    per_depth: Vec<DepthStats>,
    draft_seconds: f64,
    verify_seconds: f64,
}

impl Stats {
    fn new(shape: TreeShape) -> Self {
        Stats {
            shape,
            rounds: 0,
            accepted: 0,
            per_depth: vec![DepthStats::default(); shape.depth],
            draft_seconds: 0.0,
            verify_seconds: 0.0,
        }
    }

    fn record(&mut self, tree: &TokenTree, path: &[usize]) {
        self.rounds += 1;
        self.accepted += path.len() - 1;
        // Depth d was reached when the node at depth d - 1 on the path had children.
        for (d, &node) in path.iter().enumerate() {
            if d < self.per_depth.len() && tree.children(node).next().is_some() {
                self.per_depth[d].reached += 1;
                if d + 1 < path.len() {
                    self.per_depth[d].accepted += 1;
                }
            }
        }
    }

    fn finish(mut self) -> SpeculativeStats {
        for d in &mut self.per_depth {
            d.rate = if d.reached > 0 {
                d.accepted as f64 / d.reached as f64
            } else {
                0.0
            };
        }
        SpeculativeStats {
            tree: self.shape,
            rounds: self.rounds,
            accepted_drafts: self.accepted,
            acceptance_length: if self.rounds > 0 {
                (self.accepted + self.rounds) as f64 / self.rounds as f64
            } else {
                0.0
            },
            per_depth: self.per_depth,
            draft_seconds: self.draft_seconds,
            verify_seconds: self.verify_seconds,
        }
    }
}
