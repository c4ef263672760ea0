//! Finding the best tokens without sorting the vocabulary.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A candidate token: `v` holds its logit, then its unnormalized probability.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) v: f32,
    pub(super) id: u32,
}

/// Highest value first; equal values by lower id, so results do not depend on the
/// order the selection algorithms leave ties in.
pub(super) fn by_value_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.v.total_cmp(&a.v).then(a.id.cmp(&b.id))
}

/// Ranks candidates: greater is better (higher value, then lower id).
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        by_value_desc(other, self)
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The first index of the largest non-NaN logit; 0 if all are NaN.
pub(super) fn argmax(logits: &[f32]) -> u32 {
    argmax_with_value(logits).0
}

/// [`argmax`] and its logit (NaN if all are NaN). The maximum in independent lanes,
/// then its first position: faster than one pass carrying an index.
pub(super) fn argmax_with_value(logits: &[f32]) -> (u32, f32) {
    // `x > m` is false for NaN, so NaN never becomes the maximum.
    let keep_larger = |m: f32, x: f32| if x > m { x } else { m };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = keep_larger(*m, x);
        }
    }
    let max = tail.iter().copied().fold(
        lanes.into_iter().fold(f32::NEG_INFINITY, keep_larger),
        keep_larger,
    );
    let index = if max == f32::NEG_INFINITY {
        // Nothing above -inf: the first -inf, or nothing but NaN.
        match logits.iter().position(|l| !l.is_nan()) {
            Some(i) => i,
            None => return (0, f32::NAN),
        }
    } else {
        logits.iter().position(|&l| l == max).unwrap_or(0)
    };
    (index as u32, max)
}

/// The `k` best non-NaN logits into `heap`, a min-heap whose root is the worst kept.
///
/// Once the heap is full, a logit only needs one comparison with the root's value:
/// logits are scanned in id order, so an equal value has a higher id and loses.
pub(super) fn top_k_heap(logits: &[f32], k: usize, heap: &mut BinaryHeap<Reverse<Candidate>>) {
    heap.clear();
    let mut scan = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(id, &v)| Candidate { v, id: id as u32 });
    for c in scan.by_ref() {
        heap.push(Reverse(c));
        if heap.len() == k {
            break;
        }
    }
    let mut floor = heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.v);
    for c in scan {
        if c.v > floor {
            if let Some(mut worst) = heap.peek_mut() {
                *worst = Reverse(c);
            }
            floor = heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.v);
        }
    }
}

/// The smallest set of most likely candidates whose weight reaches `target`: moves it
/// to the front and returns its size (at least 1; all candidates if none reach it).
///
/// `cands[..sorted]` is already in descending order. Otherwise nothing is fully
/// sorted: the next few best are selected and sorted (enough for the usual peaked
/// distribution), and beyond that a weighted quickselect halves the range each step,
/// so even a flat distribution costs a few passes, not a sort of the vocabulary.
pub(super) fn nucleus(cands: &mut [Candidate], sorted: usize, target: f64) -> usize {
    let n = cands.len();
    let mut remaining = target;
    for (i, c) in cands[..sorted].iter().enumerate() {
        remaining -= f64::from(c.v);
        if remaining <= 0.0 {
            return i + 1;
        }
    }
    let mut lo = sorted;
    let mut hi = n;
    let mut first_round = true;
    while lo < hi {
        let len = hi - lo;
        if len <= SMALL || first_round {
            // Sort the best `SMALL` (or all that is left) and walk them.
            let head = len.min(SMALL);
            let range = &mut cands[lo..hi];
            if head < len {
                range.select_nth_unstable_by(head - 1, by_value_desc);
            }
            range[..head].sort_unstable_by(by_value_desc);
            for (i, c) in range[..head].iter().enumerate() {
                remaining -= f64::from(c.v);
                if remaining <= 0.0 {
                    return lo + i + 1;
                }
            }
            lo += head;
            first_round = false;
            continue;
        }
        // The better half first; is the target reached inside it?
        let mid = len / 2;
        cands[lo..hi].select_nth_unstable_by(mid - 1, by_value_desc);
        let half: f64 = cands[lo..lo + mid].iter().map(|c| f64::from(c.v)).sum();
        if half >= remaining {
            hi = lo + mid;
        } else {
            remaining -= half;
            lo += mid;
        }
    }
    // Rounding kept the target out of reach: everything up to here.
    lo.max(1).min(n)
}

/// Ranges up to this size are sorted outright.
const SMALL: usize = 64;

#[cfg(test)]
mod tests {
    use super::{nucleus, Candidate};

    /// Against the definition: sort everything, take the shortest prefix reaching p.
    #[test]
    fn nucleus_matches_a_full_sort() {
        let mut x = 12345u64;
        for n in [1usize, 5, 64, 65, 300, 5_000] {
            let cands: Vec<Candidate> = (0..n as u32)
                .map(|id| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Repeated values exercise ties.
                    Candidate {
                        v: ((x >> 40) % 97) as f32 / 97.0,
                        id,
                    }
                })
                .collect();
            let total: f64 = cands.iter().map(|c| f64::from(c.v)).sum();
            let mut by_rank = cands.clone();
            by_rank.sort_by(super::by_value_desc);
            for p in [0.01, 0.3, 0.5, 0.9, 0.999] {
                let target = p * total;
                let mut cum = 0.0;
                let want = by_rank
                    .iter()
                    .position(|c| {
                        cum += f64::from(c.v);
                        cum >= target
                    })
                    .map_or(n, |i| i + 1);
                let mut got = cands.clone();
                let k = nucleus(&mut got, 0, target);
                let mut got_ids: Vec<u32> = got[..k].iter().map(|c| c.id).collect();
                let mut want_ids: Vec<u32> = by_rank[..want].iter().map(|c| c.id).collect();
                got_ids.sort_unstable();
                want_ids.sort_unstable();
                assert_eq!(got_ids, want_ids, "n={n} p={p}");
            }
        }
    }
}
