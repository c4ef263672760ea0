//! The continuous-batching engine: one thread that owns the model and runs every admitted
//! request's decode step together.
//!
//! Between steps it admits waiting requests (up to `max_batch` running). Each step
//! ([`CausalLm::forward_segments`]) runs every decoding sequence's next token together with
//! the prompts (or prompt chunks, within `max_step_tokens`) of newly admitted ones: the
//! weights are read once for all of them, which is where batching gains its throughput on a
//! memory-bound decode, and a new request's prefill shares steps with the running decodes
//! instead of stalling them.
//! Sequences leave as soon as they finish, time out or lose their client. Waiting requests sit
//! in a bounded queue; [`EngineHandle::submit`] refuses new ones when it is full instead of
//! letting a backlog grow.

use crate::metrics::Metrics;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use temper_runtime::generate::{CausalLm, FinishReason, GenerateOptions, Output};
use temper_runtime::Logits;
use temper_text::sampling::Sampler;
use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

/// How many sequences run at once and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most sequences in one decode step (LMI's `OPTION_MAX_ROLLING_BATCH_SIZE`).
    pub max_batch: usize,
    /// Most requests waiting for a place in the batch; more are refused.
    pub max_queue: usize,
    /// Most tokens one step runs: every decoding sequence's next token, then prompt tokens
    /// of new sequences (a long prompt is prefilled in chunks over several steps).
    pub max_step_tokens: usize,
    /// Bytes the running sequences' KV caches may reserve together (each reserves prompt +
    /// max new tokens at admission); a request that would pass it waits in the queue until
    /// others finish. A request alone is always admitted (its size is bounded by the context
    /// window, checked at submission).
    pub max_kv_bytes: u64,
}

/// One generation request, tokenized and checked by the HTTP layer.
pub struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    /// New tokens allowed (already cut to the context window).
    pub max_new: usize,
    pub events: UnboundedSender<Event>,
    pub received: Instant,
    /// The request fails with [`Failure::TimedOut`] if not finished by then.
    pub deadline: Instant,
}

/// What a request's client receives, in order: tokens, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// A generated token and the text it made final (may be empty: text is released once it
    /// is valid UTF-8 and clear of stop strings).
    Token {
        id: u32,
        text: String,
        logprob: f32,
    },
    Done(Finished),
    Failed(Failure),
}

#[derive(Debug)]
pub struct Finished {
    pub reason: FinishReason,
    /// Text released only at the end (held back until then), not in any `Token`.
    pub tail: String,
    /// The whole generated text.
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the request did not finish within its {0:?} timeout")]
    TimedOut(Duration),
    #[error("the model failed on this request: {0}")]
    Model(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "the server is at capacity: {running} requests running and {queued} waiting (the most \
         it holds); retry shortly"
    )]
    QueueFull { running: usize, queued: usize },
    #[error("the model engine has stopped; the server cannot take requests")]
    Stopped,
}

/// The HTTP layer's side of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: Sender<Job>,
    /// Requests submitted and not yet admitted or dropped: at most `max_queue`.
    waiting: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    config: EngineConfig,
}

impl EngineHandle {
    /// Queues `job`, or refuses it at once when the queue is full or the engine has stopped.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if !self.is_alive() {
            return Err(SubmitError::Stopped);
        }
        let max = self.config.max_queue;
        let reserved = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(SubmitError::QueueFull {
                running: self.metrics.running.get() as usize,
                queued: max,
            });
        }
        self.metrics.queued.inc();
        if self.jobs.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.metrics.queued.dec();
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// False once the engine thread has ended (a panic in the model, say).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }
}

/// Starts the engine thread over `model`.
pub fn start<M>(
    model: M,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
) -> std::io::Result<EngineHandle>
where
    M: CausalLm + Send + 'static,
{
    let config = EngineConfig {
        max_batch: config.max_batch.max(1),
        max_queue: config.max_queue.max(1),
        max_step_tokens: config.max_step_tokens.max(1),
        max_kv_bytes: config.max_kv_bytes,
    };
    // Unbounded as a channel; `waiting` bounds what is in it and in the engine's queue.
    let (jobs, arrivals) = channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    let handle = EngineHandle {
        jobs,
        waiting: waiting.clone(),
        alive: alive.clone(),
        metrics: metrics.clone(),
        config,
    };
    std::thread::Builder::new()
        .name("temper-engine".into())
        .spawn(move || {
            // Marks the engine dead however the loop ends, a panic included, so that /ping
            // reports it and new requests get 503 instead of waiting forever.
            struct Alive(Arc<AtomicBool>, Arc<Metrics>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                    // Nothing runs or waits any more (queued requests' channels close
                    // with the engine, and their clients get an error).
                    self.1.queued.set(0);
                    self.1.running.set(0);
                }
            }
            let _alive = Alive(alive, metrics.clone());
            Engine {
                model: &model,
                tokenizer: &tokenizer,
                config,
                metrics: &metrics,
                waiting: &waiting,
            }
            .run(arrivals);
        })?;
    Ok(handle)
}

struct Engine<'e, M> {
    model: &'e M,
    tokenizer: &'e Tokenizer,
    config: EngineConfig,
    metrics: &'e Metrics,
    waiting: &'e AtomicUsize,
}

/// A running request.
struct Sequence<'t, C> {
    cache: C,
    /// What `cache` reserves.
    kv_bytes: u64,
    sampler: Sampler,
    /// `None` once finished.
    output: Option<Output<'t, 'static>>,
    /// Text `output` released since the last event.
    released: Rc<RefCell<String>>,
    /// Prompt tokens not yet run (prefill happens in the batched steps, in chunks).
    pending: Vec<u32>,
    /// The token the next decode step feeds.
    last: u32,
    events: UnboundedSender<Event>,
    prompt_tokens: usize,
    received: Instant,
    deadline: Instant,
    /// When the previous token was sent (inter-token latency).
    last_sent: Option<Instant>,
}

impl<'e, M: CausalLm> Engine<'e, M> {
    fn run(&self, arrivals: Receiver<Job>) {
        let mut running: Vec<Sequence<'e, M::Cache>> = Vec::new();
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut open = true;
        while open || !running.is_empty() || !queue.is_empty() {
            // Take every arrival; block only when there is nothing else to do.
            if running.is_empty() && queue.is_empty() {
                match arrivals.recv() {
                    Ok(job) => queue.push_back(job),
                    Err(_) => {
                        open = false;
                        continue;
                    }
                }
            }
            loop {
                match arrivals.try_recv() {
                    Ok(job) => queue.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            // Waiting requests whose client left or whose time is up leave the queue now,
            // not when their turn comes.
            queue.retain(|job| {
                let keep = self.still_wanted(&job.events, job.received, job.deadline);
                if !keep {
                    self.dequeued();
                }
                keep
            });
            let mut reserved: u64 = running.iter().map(|s| s.kv_bytes).sum();
            while running.len() < self.config.max_batch {
                let Some(job) = queue.front() else { break };
                // First come, first served: the head of the queue waits for room rather than
                // being overtaken by smaller requests.
                let need = self.kv_bytes(job.prompt.len() + job.max_new.max(1));
                if !running.is_empty() && reserved + need > self.config.max_kv_bytes {
                    break;
                }
                let Some(job) = queue.pop_front() else { break };
                reserved += need;
                self.dequeued();
                if let Some(seq) = self.admit(job) {
                    running.push(seq);
                }
            }
            running.retain(|s| self.still_wanted(&s.events, s.received, s.deadline));
            self.metrics.running.set(running.len() as i64);
            if running.is_empty() {
                continue;
            }
            self.step(&mut running);
            self.metrics.running.set(running.len() as i64);
        }
    }

    /// KV-cache bytes of a sequence of `positions` (keys and values of every layer, f32).
    fn kv_bytes(&self, positions: usize) -> u64 {
        let p = self.model.params();
        (2 * p.num_layers * p.num_kv_heads * p.head_dim * 4 * positions) as u64
    }

    /// A request left the queue (admitted, or dropped).
    fn dequeued(&self) {
        let before = self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.queued.set(before as i64 - 1);
    }

    /// Makes `job` a running sequence whose prompt the next steps will run; `None` when it
    /// already ended.
    fn admit(&self, job: Job) -> Option<Sequence<'e, M::Cache>> {
        let prepared = self
            .model
            .new_cache(job.prompt.len() + job.max_new.max(1))
            .map_err(|e| e.to_string())
            .and_then(|cache| {
                let sampler =
                    Sampler::new(job.options.sampling.clone()).map_err(|e| e.to_string())?;
                Ok((cache, sampler))
            });
        let (cache, sampler) = match prepared {
            Ok(v) => v,
            Err(e) => {
                self.fail(&job.events, Failure::Model(e));
                return None;
            }
        };
        self.metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
        let released = Rc::new(RefCell::new(String::new()));
        let sink = released.clone();
        let output = Output::new(
            self.tokenizer,
            &job.prompt,
            &job.options,
            job.max_new,
            move |piece: &str| sink.borrow_mut().push_str(piece),
        );
        Some(Sequence {
            kv_bytes: self.kv_bytes(job.prompt.len() + job.max_new.max(1)),
            cache,
            sampler,
            output: Some(output),
            released,
            pending: job.prompt,
            last: 0,
            events: job.events,
            prompt_tokens: 0,
            received: job.received,
            deadline: job.deadline,
            last_sent: None,
        })
    }

    /// Whether a request should stay (queued or running): its client is still there and its
    /// time is not up. Ends it (counted, and told why) otherwise.
    fn still_wanted(
        &self,
        events: &UnboundedSender<Event>,
        received: Instant,
        deadline: Instant,
    ) -> bool {
        if events.is_closed() {
            self.metrics.cancelled.inc();
            return false;
        }
        if Instant::now() >= deadline {
            let timeout = deadline.saturating_duration_since(received);
            self.fail(events, Failure::TimedOut(timeout));
            return false;
        }
        true
    }

    /// One step over the running sequences: each decoding one takes its next token, and
    /// those still prefilling take the next chunk of their prompt, within
    /// `max_step_tokens` (a sequence left without room waits for the next step). Sequences
    /// whose prompt is done sample a token; those that finish leave.
    fn step(&self, running: &mut Vec<Sequence<'e, M::Cache>>) {
        // Decoding sequences first: a long prompt never stalls their next token.
        let mut budget = self.config.max_step_tokens.max(running.len());
        let mut take = vec![0usize; running.len()];
        for (i, s) in running.iter().enumerate() {
            if s.pending.is_empty() {
                take[i] = 1;
                budget -= 1;
            }
        }
        for (i, s) in running.iter().enumerate() {
            if !s.pending.is_empty() && budget > 0 {
                take[i] = s.pending.len().min(budget);
                budget -= take[i];
            }
        }
        let mut tokens = Vec::new();
        let mut lens = Vec::new();
        let mut caches: Vec<&mut M::Cache> = Vec::new();
        for (s, &n) in running.iter_mut().zip(&take) {
            if n == 0 {
                continue;
            }
            if s.pending.is_empty() {
                tokens.push(s.last);
            } else {
                tokens.extend(s.pending.drain(..n));
                s.prompt_tokens += n;
            }
            lens.push(n);
            caches.push(&mut s.cache);
        }
        let rows = if let [one] = caches.as_mut_slice() {
            // Alone, the plain step is about 12% faster than a batch of one (it skips the
            // per-segment bookkeeping; BENCHMARKS.md "Serving").
            self.model
                .forward(&tokens, one, Logits::Last)
                .and_then(|l| Ok(l.to_vec2::<f32>()?))
        } else {
            self.model
                .forward_segments(&tokens, &lens, &mut caches)
                .and_then(|l| Ok(l.to_vec2::<f32>()?))
        };
        match rows {
            Ok(rows) => {
                self.metrics.batch_size.observe(lens.len() as f64);
                let mut rows = rows.into_iter();
                let mut stepped = take.iter();
                running.retain_mut(|s| {
                    if *stepped.next().unwrap_or(&0) == 0 {
                        return true;
                    }
                    let row = rows.next().unwrap_or_default();
                    // A chunk that leaves prompt tokens behind samples nothing yet.
                    !s.pending.is_empty() || self.take(s, &row)
                });
            }
            Err(e) => {
                // A failed step leaves the caches' state unknown: end every sequence in it.
                for s in running.drain(..) {
                    self.fail(&s.events, Failure::Model(e.to_string()));
                }
            }
        }
    }

    /// Samples `seq`'s next token from `logits` and sends it; false when the sequence ended.
    fn take(&self, seq: &mut Sequence<'e, M::Cache>, logits: &[f32]) -> bool {
        let token = seq.sampler.sample(logits);
        let Some(output) = seq.output.as_mut() else {
            return false;
        };
        let before = output.generated();
        let ended = match output.push(token) {
            Ok(ended) => ended,
            Err(e) => {
                self.fail(&seq.events, Failure::Model(e.to_string()));
                return false;
            }
        };
        let generated = output.generated();
        if generated > before {
            let now = Instant::now();
            match seq.last_sent {
                None => self
                    .metrics
                    .time_to_first_token
                    .observe((now - seq.received).as_secs_f64()),
                Some(prev) => self
                    .metrics
                    .inter_token_latency
                    .observe((now - prev).as_secs_f64()),
            }
            seq.last_sent = Some(now);
            self.metrics.generation_tokens.inc();
            let text = std::mem::take(&mut *seq.released.borrow_mut());
            let _ = seq.events.send(Event::Token {
                id: token,
                text,
                logprob: logprob(logits, token),
            });
        }
        seq.last = token;
        let Some(reason) = ended else {
            return true;
        };
        let Some(output) = seq.output.take() else {
            return false;
        };
        match output.finish(reason) {
            Ok((text, reason)) => {
                let tail = std::mem::take(&mut *seq.released.borrow_mut());
                self.metrics
                    .request_seconds
                    .observe(seq.received.elapsed().as_secs_f64());
                let _ = seq.events.send(Event::Done(Finished {
                    reason,
                    tail,
                    text,
                    prompt_tokens: seq.prompt_tokens,
                    generated_tokens: generated,
                }));
            }
            Err(e) => self.fail(&seq.events, Failure::Model(e.to_string())),
        }
        false
    }

    fn fail(&self, events: &UnboundedSender<Event>, failure: Failure) {
        match failure {
            Failure::TimedOut(_) => self.metrics.timed_out.inc(),
            Failure::Model(_) => self.metrics.failed.inc(),
        };
        let _ = events.send(Event::Failed(failure));
    }
}

/// Natural log of the model's probability of `token` (before temperature and truncation).
fn logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let chosen = logits.get(token as usize).copied().unwrap_or(f32::NAN);
    ((f64::from(chosen - max)) - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::logprob;

    #[test]
    fn logprob_is_the_log_softmax_of_the_token() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (t, &l) in logits.iter().enumerate() {
            assert!((logprob(&logits, t as u32) - (l.exp() / z).ln()).abs() < 1e-6);
        }
        // Large logits do not overflow.
        assert!((logprob(&[1000.0, 1000.0], 0) - 0.5f32.ln()).abs() < 1e-6);
    }
}
