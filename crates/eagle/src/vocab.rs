//! The draft vocabulary: the `size` target tokens seen most often as training targets, in
//! ascending id order. A head that scores only these (8k of SmolLM2's 49k) spends a sixth of
//! the time in its LM head (EAGLE.md section 6); targets outside it cannot be drafted.

use crate::error::{EagleError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct DraftVocab {
    /// Target ids of draft ids `0..size`, ascending.
    pub used: Vec<u32>,
    /// Target vocabulary size.
    pub vocab_size: usize,
    /// Share of the counted target tokens the draft vocabulary covers.
    pub coverage: f64,
}

impl DraftVocab {
    /// Chooses `size` ids by frequency in `counts` (one count per target id); ties go to the
    /// lower id, and ids never seen fill up from the lowest when fewer than `size` were seen.
    pub fn from_counts(counts: &[u64], size: usize) -> Result<Self> {
        if size == 0 || size > counts.len() {
            return Err(EagleError::Input(format!(
                "OPTION_EAGLE_DRAFT_VOCAB_SIZE {size} must be between 1 and the target's vocabulary size {}",
                counts.len()
            )));
        }
        let mut order: Vec<u32> = (0..counts.len() as u32).collect();
        order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
        let mut used: Vec<u32> = order[..size].to_vec();
        used.sort_unstable();
        let total: u64 = counts.iter().sum();
        let covered: u64 = used.iter().map(|&i| counts[i as usize]).sum();
        Ok(DraftVocab {
            used,
            vocab_size: counts.len(),
            coverage: if total > 0 {
                covered as f64 / total as f64
            } else {
                0.0
            },
        })
    }

    pub fn size(&self) -> usize {
        self.used.len()
    }

    /// `d2t[i] = used[i] - i`: the offset vLLM adds to draft id `i`.
    pub fn d2t(&self) -> Vec<i64> {
        self.used
            .iter()
            .enumerate()
            .map(|(i, &t)| i64::from(t) - i as i64)
            .collect()
    }

    /// `t2d[v]`: whether target id `v` is in the draft vocabulary.
    pub fn t2d(&self) -> Vec<bool> {
        let mut t = vec![false; self.vocab_size];
        for &u in &self.used {
            t[u as usize] = true;
        }
        t
    }

    /// Draft id of target id `v`, if it has one.
    pub fn draft_id(&self, v: u32) -> Option<usize> {
        self.used.binary_search(&v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_frequent_ids_sorted_with_offsets() {
        let counts = [0u64, 5, 1, 9, 5, 0];
        let v = DraftVocab::from_counts(&counts, 3).unwrap();
        assert_eq!(v.used, vec![1, 3, 4]);
        assert_eq!(v.d2t(), vec![1, 2, 2]);
        assert_eq!(v.t2d(), vec![false, true, false, true, true, false]);
        assert!((v.coverage - 19.0 / 20.0).abs() < 1e-12);
        assert_eq!(v.draft_id(4), Some(2));
        assert_eq!(v.draft_id(2), None);
        // Fewer seen ids than the size: the lowest unseen ids fill up.
        let v = DraftVocab::from_counts(&[0, 3, 0, 0], 3).unwrap();
        assert_eq!(v.used, vec![0, 1, 2]);
        assert!(DraftVocab::from_counts(&counts, 0).is_err());
        assert!(DraftVocab::from_counts(&counts, 7).is_err());
    }
}
