//! A draft token tree as the target verifies it: node 0 is the root (the pending token, not yet
//! in the target's KV cache), every other node has a parent that precedes it. A chain of `k`
//! drafts is the tree whose node `i` has parent `i - 1`.
//!
//! The target runs all nodes in one forward pass: node `i` sits at position `past + depth(i)`
//! and attends to the committed context plus its own ancestors (and itself), which is exactly
//! what it would see had its path been decoded one token at a time.

use crate::error::{Result, RuntimeError};
use candle_core::{Device, Tensor};

/// Nodes in generation order (parents before children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTree {
    /// Token of each node; `tokens[0]` is the root.
    pub tokens: Vec<u32>,
    /// Parent of each node; `None` only for the root.
    pub parents: Vec<Option<usize>>,
}

impl TokenTree {
    /// A root alone.
    pub fn root(token: u32) -> Self {
        TokenTree {
            tokens: vec![token],
            parents: vec![None],
        }
    }

    /// The root followed by a chain of drafts.
    pub fn chain(root: u32, drafts: &[u32]) -> Self {
        let mut t = TokenTree::root(root);
        for (i, &d) in drafts.iter().enumerate() {
            t.push(i, d);
        }
        t
    }

    /// Adds a child of `parent` and returns its index.
    pub fn push(&mut self, parent: usize, token: u32) -> usize {
        debug_assert!(parent < self.tokens.len());
        self.tokens.push(token);
        self.parents.push(Some(parent));
        self.tokens.len() - 1
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks that node 0 alone is the root and every parent precedes its child.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RuntimeError::Input(format!("token tree: {why}")));
        if self.tokens.len() != self.parents.len() || self.tokens.is_empty() {
            return bad(format!(
                "{} tokens and {} parents",
                self.tokens.len(),
                self.parents.len()
            ));
        }
        for (i, p) in self.parents.iter().enumerate() {
            match (i, p) {
                (0, None) => {}
                (0, Some(_)) => return bad("node 0 must be the root".into()),
                (_, None) => return bad(format!("node {i} has no parent")),
                (_, Some(p)) if *p >= i => {
                    return bad(format!("node {i}'s parent {p} does not precede it"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Depth of every node (the root is 0).
    pub fn depths(&self) -> Vec<usize> {
        let mut d = vec![0; self.len()];
        for i in 1..self.len() {
            d[i] = self.parents[i].map_or(0, |p| d[p] + 1);
        }
        d
    }

    /// `visible[i][j]`: node `i` attends to node `j` (`j` is `i` or one of its ancestors).
    pub fn visibility(&self) -> Vec<Vec<bool>> {
        let n = self.len();
        let mut v = vec![vec![false; n]; n];
        for i in 0..n {
            if let Some(p) = self.parents[i] {
                let parent_row = v[p].clone();
                v[i] = parent_row;
            }
            v[i][i] = true;
        }
        v
    }

    /// Additive attention mask `[n, past + n]`: 0 over the committed context and the node's
    /// ancestors, `-inf` elsewhere.
    pub fn mask(&self, past: usize) -> Result<Tensor> {
        let n = self.len();
        let visible = self.visibility();
        let mut m = Vec::with_capacity(n * (past + n));
        for row in &visible {
            m.extend(std::iter::repeat_n(0f32, past));
            m.extend(row.iter().map(|&s| if s { 0.0 } else { f32::NEG_INFINITY }));
        }
        Ok(Tensor::from_vec(m, (n, past + n), &Device::Cpu)?)
    }

    /// Node indices of every root-to-leaf path.
    pub fn paths(&self) -> Vec<Vec<usize>> {
        let n = self.len();
        let mut has_child = vec![false; n];
        for p in self.parents.iter().flatten() {
            has_child[*p] = true;
        }
        (0..n)
            .filter(|&i| !has_child[i])
            .map(|leaf| {
                let mut path = vec![leaf];
                let mut at = leaf;
                while let Some(p) = self.parents[at] {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                path
            })
            .collect()
    }

    /// Children of `node`, in index order.
    pub fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.parents
            .iter()
            .enumerate()
            .filter(move |(_, p)| **p == Some(node))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root(0) -> a(1) -> c(3) -> e(4); root -> b(2)
    fn five() -> TokenTree {
        let mut t = TokenTree::root(10);
        let a = t.push(0, 11);
        t.push(0, 12);
        let c = t.push(a, 13);
        t.push(c, 14);
        t
    }

    #[test]
    fn hand_built_tree_has_the_expected_mask_positions_and_paths() {
        let t = five();
        t.validate().unwrap();
        assert_eq!(t.depths(), vec![0, 1, 1, 2, 3]);
        let expected = [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 0, 1, 0],
            [1, 1, 0, 1, 1],
        ];
        let v = t.visibility();
        for (i, row) in expected.iter().enumerate() {
            let got: Vec<i32> = v[i].iter().map(|&b| b as i32).collect();
            assert_eq!(got, row.to_vec(), "row {i}");
        }
        let mask = t.mask(2).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in mask.iter().enumerate() {
            assert_eq!(&row[..2], &[0.0, 0.0], "context is visible to node {i}");
            for (j, &m) in row[2..].iter().enumerate() {
                assert_eq!(m == 0.0, expected[i][j] == 1, "mask[{i}][{j}]");
            }
        }
        let mut paths = t.paths();
        paths.sort();
        assert_eq!(paths, vec![vec![0, 1, 3, 4], vec![0, 2]]);
        assert_eq!(t.children(0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_chain_is_causal() {
        let t = TokenTree::chain(5, &[6, 7, 8]);
        assert_eq!(t.depths(), vec![0, 1, 2, 3]);
        assert_eq!(t.paths(), vec![vec![0, 1, 2, 3]]);
        let v = t.visibility();
        for (i, row) in v.iter().enumerate() {
            for (j, &seen) in row.iter().enumerate() {
                assert_eq!(seen, j <= i);
            }
        }
    }

    #[test]
    fn malformed_trees_are_refused() {
        let bad = TokenTree {
            tokens: vec![1, 2],
            parents: vec![None, Some(1)],
        };
        assert!(bad.validate().unwrap_err().to_string().contains("node 1"));
        let two_roots = TokenTree {
            tokens: vec![1, 2],
            parents: vec![None, None],
        };
        assert!(two_roots.validate().is_err());
    }
}
