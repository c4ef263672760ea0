//! Tensor-parallel execution of a pre-sharded artifact: one thread per rank, each holding only
//! its own rank files' weights (its share of the heads, of the MLP and of the vocabulary), with
//! an all-reduce after the row-parallel products (o_proj, down_proj) and after the
//! vocab-parallel embedding, and a gather of the vocab-parallel logits. This is how vLLM runs
//! the same files on N GPUs; here it proves the shards compute what the whole model does.

mod comm;
mod load;

pub use load::{check_rank_files, is_sharded, RankFiles};

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::layer::{Layer, Projection, Step};
use crate::model::{causal_mask, LoadOptions, Logits};
use crate::params::ModelParams;
use candle_core::{Device, Tensor};
use comm::Comm;
use std::path::Path;
use temper_core::config::ModelConfig;
use temper_format::sharded::Dims;
use temper_kernels::matmul::Matrix;

/// One rank's weights.
pub struct Rank {
    params: ModelParams,
    layers: Vec<Layer>,
    head: RankHead,
    /// Tensor bytes this rank read from its checkpoint, and the tensor bytes its files hold.
    pub bytes_read: u64,
    pub tensor_bytes: u64,
}

/// A rank's slice of the vocabulary: embedding rows and LM-head rows
/// `vocab_start..vocab_start + rows`.
pub struct RankHead {
    /// `None` when tied to the LM head.
    embed: Option<Matrix>,
    norm: Tensor,
    lm_head: Projection,
    vocab_start: usize,
}

/// A sharded model: every rank, run together.
pub struct ShardedModel {
    params: ModelParams,
    dims: Dims,
    ranks: Vec<Rank>,
}

/// Per-rank KV caches of one sequence.
pub struct ShardedCache {
    caches: Vec<KvCache>,
}

impl ShardedCache {
    pub fn len(&self) -> usize {
        self.caches[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ShardedModel {
    /// Loads the sharded artifact in `dir`; rank files are checked against the manifest first.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let files = check_rank_files(dir)?;
        let config = ModelConfig::load(&dir.join("config.json"))?;
        let params = ModelParams::from_config(&config)?;
        let dims = Dims::new(&config, files.degree);
        if let Some(problem) = dims.problem() {
            return Err(RuntimeError::config(
                dir.join("manifest.json"),
                "sharding.tensor_parallel_degree",
                format!("{} does not fit this model: {problem}", files.degree),
            ));
        }
        let ranks = files
            .files
            .iter()
            .enumerate()
            .map(|(rank, f)| load::load_rank(dir, rank, f, &params, &dims, opts))
            .collect::<Result<Vec<_>>>()?;
        Ok(ShardedModel {
            params,
            dims,
            ranks,
        })
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    pub fn degree(&self) -> usize {
        self.dims.degree
    }

    pub fn ranks(&self) -> &[Rank] {
        &self.ranks
    }

    pub fn new_cache(&self, capacity: usize) -> Result<ShardedCache> {
        Ok(ShardedCache {
            caches: self
                .ranks
                .iter()
                .map(|r| KvCache::new(&r.params, capacity))
                .collect::<Result<_>>()?,
        })
    }

    /// Runs `tokens` after what `cache` holds, every rank on its own thread; logits `[n, vocab]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut ShardedCache,
        want: Logits,
    ) -> Result<Tensor> {
        let past = cache.len();
        if tokens.is_empty() {
            return Err(RuntimeError::Input("no tokens to run".into()));
        }
        if past + tokens.len() > cache.caches[0].capacity() {
            return Err(RuntimeError::ContextOverflow {
                needed: past + tokens.len(),
                limit: cache.caches[0].capacity(),
                advice: "shorten the prompt or ask for fewer new tokens".into(),
            });
        }
        self.check_vocab(tokens)?;
        let per_rank: Vec<Seqs> = cache.caches.iter_mut().map(Seqs::One).collect();
        let padded = self.run_ranks(tokens, per_rank, want)?;
        let n = match want {
            Logits::Last => 1,
            Logits::All => tokens.len(),
        };
        self.unpad(padded, n)
    }

    /// One decode step of several sequences (continuous batching), as
    /// [`crate::Model::forward_rows`]: `tokens[i]` continues the sequence cached in `caches[i]`;
    /// logits `[n, vocab]`.
    pub fn forward_rows(&self, tokens: &[u32], caches: &mut [&mut ShardedCache]) -> Result<Tensor> {
        self.forward_segments(tokens, &vec![1; tokens.len()], caches)
    }

    /// [`crate::Model::forward_segments`] over the ranks: `lens[i]` tokens of `tokens`
    /// continue `caches[i]`; the logits of each segment's last token, `[n, vocab]`.
    pub fn forward_segments(
        &self,
        tokens: &[u32],
        lens: &[usize],
        caches: &mut [&mut ShardedCache],
    ) -> Result<Tensor> {
        if lens.iter().sum::<usize>() != tokens.len() || lens.len() != caches.len() {
            return Err(RuntimeError::Input(format!(
                "{} tokens for {} sequences of {lens:?} tokens",
                tokens.len(),
                caches.len()
            )));
        }
        self.check_vocab(tokens)?;
        let mut per_rank: Vec<Vec<&mut KvCache>> = self.ranks.iter().map(|_| Vec::new()).collect();
        for c in caches.iter_mut() {
            for (r, kc) in c.caches.iter_mut().enumerate() {
                per_rank[r].push(kc);
            }
        }
        let per_rank = per_rank
            .into_iter()
            .map(|caches| Seqs::Segments(caches, lens))
            .collect();
        let padded = self.run_ranks(tokens, per_rank, Logits::All)?;
        self.unpad(padded, lens.len())
    }

    fn check_vocab(&self, tokens: &[u32]) -> Result<()> {
        match tokens
            .iter()
            .find(|&&t| t as usize >= self.params.vocab_size)
        {
            Some(t) => Err(RuntimeError::Input(format!(
                "token id {t} is outside the vocabulary of {} tokens",
                self.params.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Runs every rank on its own thread over its caches; rank 0's gathered, padded logits.
    fn run_ranks(&self, tokens: &[u32], per_rank: Vec<Seqs>, want: Logits) -> Result<Vec<f32>> {
        let comm = Comm::new(self.ranks.len());
        let results: Vec<Result<Option<Vec<f32>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .ranks
                .iter()
                .zip(per_rank)
                .enumerate()
                .map(|(r, (rank, seqs))| {
                    let comm = &comm;
                    s.spawn(move || {
                        let out = rank_forward(r, rank, comm, tokens, seqs, want);
                        if out.is_err() {
                            comm.abort();
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut logits = None;
        for r in results {
            if let Some(l) = r? {
                logits = Some(l);
            }
        }
        logits.ok_or_else(|| RuntimeError::Input("rank 0 returned no logits".into()))
    }

    /// Drops the vocabulary padding of `n` rows of gathered logits.
    fn unpad(&self, padded: Vec<f32>, n: usize) -> Result<Tensor> {
        let width = padded.len() / n;
        let vocab = self.params.vocab_size;
        let mut out = Vec::with_capacity(n * vocab);
        for row in padded.chunks_exact(width) {
            out.extend_from_slice(&row[..vocab]);
        }
        Ok(Tensor::from_vec(out, (n, vocab), &Device::Cpu)?)
    }
}

/// A rank's caches in a forward pass.
enum Seqs<'a> {
    /// New positions of one sequence.
    One(&'a mut KvCache),
    /// Consecutive segments of `lens[i]` tokens continuing the `i`-th cache.
    Segments(Vec<&'a mut KvCache>, &'a [usize]),
}

/// One rank's share of a forward pass. Rank 0 returns the gathered, padded logits
/// `[n, padded_vocab]` (rank by rank, so each row is rank 0's slice, then rank 1's ...).
fn rank_forward(
    r: usize,
    rank: &Rank,
    comm: &Comm,
    tokens: &[u32],
    mut seqs: Seqs,
    want: Logits,
) -> Result<Option<Vec<f32>>> {
    let p = &rank.params;
    let (new, h) = (tokens.len(), p.hidden_size);
    // Vocab-parallel embedding: rows outside this rank's slice are zeros; the sum has them all.
    let table = rank
        .head
        .embed
        .as_ref()
        .unwrap_or_else(|| rank.head.lm_head.parts[0].matrix());
    let mut x = vec![0f32; new * h];
    for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
        let local = (t as usize).wrapping_sub(rank.head.vocab_start);
        if local < table.rows() {
            table.row(local, row);
        }
    }
    comm.all_reduce(r, &mut x)?;
    let mut x = Tensor::from_vec(x, (new, h), &Device::Cpu)?;
    let (cos, sin, mask) = match &seqs {
        Seqs::One(cache) => {
            let past = cache.len();
            (
                cache.rope.cos.narrow(0, past, new)?,
                cache.rope.sin.narrow(0, past, new)?,
                (new > 1).then(|| causal_mask(past, new)).transpose()?,
            )
        }
        Seqs::Segments(caches, lens) => {
            let views: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
            let (cos, sin) = crate::cache::segment_tables(&views, lens)?;
            (cos, sin, None)
        }
    };
    let mut reduce = |t: Tensor| -> Result<Tensor> {
        let shape = t.shape().clone();
        let mut v = t.flatten_all()?.to_vec1::<f32>()?;
        comm.all_reduce(r, &mut v)?;
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    };
    for (index, layer) in rank.layers.iter().enumerate() {
        let step = Step {
            params: p,
            index,
            cos: &cos,
            sin: &sin,
            mask: mask.as_ref(),
        };
        x = match &seqs {
            Seqs::One(cache) => layer.forward_reduced(&x, Some(cache), &step, &mut reduce)?,
            Seqs::Segments(caches, lens) => {
                let views: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
                layer.forward_segments_reduced(&x, &views, lens, &step, &mut reduce)?
            }
        };
    }
    match &mut seqs {
        Seqs::One(cache) => cache.advance(new),
        Seqs::Segments(caches, lens) => caches
            .iter_mut()
            .zip(lens.iter())
            .for_each(|(c, &n)| c.advance(n)),
    }
    let x = match (&seqs, want) {
        // A batched step wants each segment's last token.
        (Seqs::Segments(_, lens), _) => crate::model::last_of_segments(&x, lens)?,
        (Seqs::One(_), Logits::Last) => x.narrow(0, new - 1, 1)?,
        (Seqs::One(_), Logits::All) => x,
    };
    let x = candle_nn::ops::rms_norm(&x, &rank.head.norm, p.rms_norm_eps as f32)?;
    let local = rank.head.lm_head.forward(&x)?; // [n, vocab_per_rank]
    let rows = local.dim(0)?;
    let local = local.flatten_all()?.to_vec1::<f32>()?;
    let Some(parts) = comm.gather(r, local)? else {
        return Ok(None);
    };
    let per = parts[0].len() / rows.max(1);
    let mut out = Vec::with_capacity(rows * per * parts.len());
    for i in 0..rows {
        for part in &parts {
            out.extend_from_slice(&part[i * per..(i + 1) * per]);
        }
    }
    Ok(Some(out))
}
