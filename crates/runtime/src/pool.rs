//! Where forward passes run.
//!
//! The kernels split a product over rayon's pool only when that pays: from a thread outside
//! the pool each product costs a wake-up of a worker and a sleep of the caller (10-15 µs on a
//! 2-vCPU VM), so products under about 1.5 MB run on the caller alone, and idle workers spin
//! for a while against it. A decode step of a small model is hundreds of such products. Running
//! the whole step on a pool worker pays the hand-off once per step, and every product, however
//! small, can use all cores.

/// Runs `f` on a worker of rayon's global pool (in place when already on one) and returns its
/// result.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
