//! This host's memory bandwidth, as the runtime sees it: the figure the projection's fit
//! divides a measured decode step by.

use rayon::prelude::*;
use std::time::Instant;

/// The median of `v` (the upper middle of an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes per second summing a buffer of `bytes` on every core (best of 5). Far beyond any
/// cache (hundreds of MiB), this is the memory's bandwidth.
pub fn bandwidth(bytes: usize) -> f64 {
    let buf = vec![1u64; bytes / 8];
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let s: u64 = buf.par_chunks(1 << 16).map(|c| c.iter().sum::<u64>()).sum();
            std::hint::black_box(s);
            (buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians_and_a_positive_bandwidth() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![]), 0.0);
        assert!(super::bandwidth(1 << 20) > 0.0);
    }
}
