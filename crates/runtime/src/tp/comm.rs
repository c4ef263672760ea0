//! Collectives between tensor-parallel ranks running as threads of one process: an
//! all-reduce (sum) and a gather, built on a barrier that a failing rank can abort, so the
//! other ranks return an error instead of waiting forever.

use crate::error::{Result, RuntimeError};
use std::sync::{Condvar, Mutex};

struct BarrierState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

/// Shared by the ranks of one forward pass.
pub struct Comm {
    ranks: usize,
    state: Mutex<BarrierState>,
    wake: Condvar,
    /// One deposit per rank.
    slots: Vec<Mutex<Vec<f32>>>,
}

impl Comm {
    pub fn new(ranks: usize) -> Self {
        Comm {
            ranks,
            state: Mutex::new(BarrierState {
                arrived: 0,
                generation: 0,
                aborted: false,
            }),
            wake: Condvar::new(),
            slots: (0..ranks).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Wakes every rank waiting (now or later) with an error.
    pub fn abort(&self) {
        let mut s = self.state.lock().expect("comm lock");
        s.aborted = true;
        self.wake.notify_all();
    }

    fn wait(&self) -> Result<()> {
        let mut s = self.state.lock().expect("comm lock");
        if s.aborted {
            return Err(aborted());
        }
        let generation = s.generation;
        s.arrived += 1;
        if s.arrived == self.ranks {
            s.arrived = 0;
            s.generation += 1;
            self.wake.notify_all();
            return Ok(());
        }
        while s.generation == generation && !s.aborted {
            s = self.wake.wait(s).expect("comm lock");
        }
        if s.aborted {
            return Err(aborted());
        }
        Ok(())
    }

    /// Replaces `x` on every rank by the sum over ranks, added in rank order so every rank
    /// holds bit-identical values (and one rank's sum is `x` itself).
    pub fn all_reduce(&self, rank: usize, x: &mut [f32]) -> Result<()> {
        if self.ranks == 1 {
            return Ok(());
        }
        {
            let mut slot = self.slots[rank].lock().expect("comm slot");
            slot.clear();
            slot.extend_from_slice(x);
        }
        self.wait()?;
        x.fill(0.0);
        for slot in &self.slots {
            let part = slot.lock().expect("comm slot");
            x.iter_mut().zip(part.iter()).for_each(|(a, b)| *a += b);
        }
        // Nobody deposits the next values before every rank has read these.
        self.wait()
    }

    /// Every rank's `x`, in rank order, returned to rank 0 (others get `None`).
    pub fn gather(&self, rank: usize, x: Vec<f32>) -> Result<Option<Vec<Vec<f32>>>> {
        *self.slots[rank].lock().expect("comm slot") = x;
        self.wait()?;
        let out = (rank == 0).then(|| {
            self.slots
                .iter()
                .map(|s| std::mem::take(&mut *s.lock().expect("comm slot")))
                .collect()
        });
        self.wait()?;
        Ok(out)
    }
}

fn aborted() -> RuntimeError {
    RuntimeError::Input("another tensor-parallel rank failed; this pass was abandoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reduce_sums_in_rank_order_and_abort_frees_waiters() {
        let comm = Comm::new(3);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|r| {
                    let comm = &comm;
                    s.spawn(move || {
                        let mut x = vec![r as f32, 1.0];
                        comm.all_reduce(r, &mut x).unwrap();
                        x
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|x| x == &[3.0, 3.0]));
        let comm = Comm::new(2);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| comm.all_reduce(0, &mut [1.0]));
            std::thread::sleep(std::time::Duration::from_millis(20));
            comm.abort();
            assert!(waiter.join().unwrap().is_err());
        });
    }
}
