//! Progress events and cancellation shared by every long-running step.

use std::sync::atomic::{AtomicBool, Ordering};

/// What a running job reports. The CLI draws a bar from these; the job API turns them
/// into status updates.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A named phase begins (`plan`, `quantize`, `hash`, `commit`, ...).
    Phase(&'a str),
    /// The quantize pass will process this many tensors and input bytes.
    Started { tensors: usize, bytes: u64 },
    /// One input tensor is done.
    Tensor { name: &'a str, bytes: u64 },
    /// `done` of `total` steps of a phase without tensors (calibration, evaluation), counted in
    /// `unit`s (`layers`, `steps`).
    Progress {
        unit: &'a str,
        done: usize,
        total: usize,
    },
}

/// Receives events; `&mut` so a sink can keep state (a bar, a counter).
pub type Sink<'a> = &'a mut (dyn FnMut(Event) + Send);

/// Checked between tensors: a set flag stops the job, and the staged output is removed.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn new() -> Self {
        Cancel(AtomicBool::new(false))
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}
