//! Merkle trees over blake3 hashes (Verde §4.2): a trainer commits to the root of its checkpoint hashes
//! (one leaf per training step) and of each step's op tape (one leaf per operator), and later opens any
//! single leaf with an inclusion proof that a referee checks against the root alone.
//!
//! Leaves and inner nodes are hashed with different domain prefixes, so a leaf can never pose as an inner
//! node. An odd node at the end of a level is promoted unchanged (the tree of `n` leaves has
//! `ceil(log2 n)` levels; a proof carries one sibling per level where the node has one).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A blake3 digest.
pub type Hash = [u8; 32];

const LEAF: &[u8] = b"swarmlab.verde.leaf";
const NODE: &[u8] = b"swarmlab.verde.node";

/// The hash a tree stores for a leaf whose content hashes to `content`.
pub fn leaf_hash(content: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(LEAF);
    h.update(content);
    *h.finalize().as_bytes()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(NODE);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// A Merkle tree over a list of content hashes, all levels kept (to answer proofs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]`: the leaf hashes; the last level: the root alone.
    levels: Vec<Vec<Hash>>,
}

/// An inclusion proof: the sibling at each level where the node has one, from the leaf up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The siblings, bottom-up.
    pub siblings: Vec<Hash>,
}

impl MerkleTree {
    /// The tree over `contents` (each a hash of one leaf's data).
    pub fn new(contents: &[Hash]) -> Result<Self> {
        if contents.is_empty() {
            return Err(Error::Empty);
        }
        let mut levels = vec![contents.iter().map(leaf_hash).collect::<Vec<_>>()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let up = below.chunks(2).map(|p| if p.len() == 2 { node_hash(&p[0], &p[1]) } else { p[0] }).collect();
            levels.push(up);
        }
        Ok(Self { levels })
    }

    /// The root: the commitment.
    pub fn root(&self) -> Hash {
        self.levels.last().and_then(|l| l.first()).copied().unwrap_or_default()
    }

    /// Leaves in the tree.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Whether the tree has no leaves (never: [`MerkleTree::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// The proof that leaf `index` is in the tree.
    pub fn proof(&self, index: u64) -> Result<Proof> {
        let len = self.len();
        if index >= len {
            return Err(Error::OutOfRange { index, len });
        }
        let mut at = index as usize;
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = at ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]);
            }
            at /= 2;
        }
        Ok(Proof { siblings })
    }
}

/// How many siblings the proof of leaf `index` in a tree of `len` leaves has, level by level: whether the
/// node at each level has a sibling.
fn sibling_levels(index: u64, len: u64) -> Vec<bool> {
    let (mut at, mut width, mut out) = (index, len, Vec::new());
    while width > 1 {
        out.push((at ^ 1) < width);
        at /= 2;
        width = width.div_ceil(2);
    }
    out
}

/// Checks that `content` is leaf `index` of the tree of `len` leaves whose root is `root`.
pub fn verify(root: &Hash, len: u64, index: u64, content: &Hash, proof: &Proof) -> Result<()> {
    if len == 0 {
        return Err(Error::Empty);
    }
    if index >= len {
        return Err(Error::OutOfRange { index, len });
    }
    let levels = sibling_levels(index, len);
    let expected = levels.iter().filter(|&&has| has).count();
    if proof.siblings.len() != expected {
        return Err(Error::ProofLength { index, len, got: proof.siblings.len(), expected });
    }
    let mut hash = leaf_hash(content);
    let mut siblings = proof.siblings.iter();
    let mut at = index;
    for has in levels {
        if has {
            let s = siblings.next().ok_or(Error::BadProof { index, len })?;
            hash = if at.is_multiple_of(2) { node_hash(&hash, s) } else { node_hash(s, &hash) };
        }
        at /= 2;
    }
    if hash == *root { Ok(()) } else { Err(Error::BadProof { index, len }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contents(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect()
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_any_change_fails(n in 1usize..70, pick in 0usize..70, byte in 0usize..32, bit in 0u8..8) {
            let c = contents(n);
            let tree = MerkleTree::new(&c).expect("tree");
            let i = (pick % n) as u64;
            let proof = tree.proof(i).expect("proof");
            prop_assert!(verify(&tree.root(), n as u64, i, &c[i as usize], &proof).is_ok());
            // A changed content byte, a changed sibling byte, a changed root byte, another index.
            let mut bad = c[i as usize];
            bad[byte] ^= 1 << bit;
            prop_assert!(verify(&tree.root(), n as u64, i, &bad, &proof).is_err());
            if let Some(first) = proof.siblings.first() {
                let mut p = proof.clone();
                let mut s = *first;
                s[byte] ^= 1 << bit;
                p.siblings[0] = s;
                prop_assert!(verify(&tree.root(), n as u64, i, &c[i as usize], &p).is_err());
            }
            let mut root = tree.root();
            root[byte] ^= 1 << bit;
            prop_assert!(verify(&root, n as u64, i, &c[i as usize], &proof).is_err());
            if n > 1 {
                let j = (i + 1) % n as u64;
                prop_assert!(verify(&tree.root(), n as u64, j, &c[i as usize], &proof).is_err());
            }
        }
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        assert_eq!(MerkleTree::new(&[]), Err(Error::Empty));
        let c = contents(5);
        let tree = MerkleTree::new(&c).expect("tree");
        assert_eq!(tree.proof(5), Err(Error::OutOfRange { index: 5, len: 5 }));
        let proof = tree.proof(4).expect("proof");
        assert_eq!(proof.siblings.len(), 1, "the promoted last leaf meets one sibling, at the top");
        assert!(matches!(verify(&tree.root(), 6, 4, &c[4], &proof), Err(Error::ProofLength { .. })), "wrong size");
        assert!(matches!(verify(&tree.root(), 5, 9, &c[4], &proof), Err(Error::OutOfRange { .. })));
        let long = Proof { siblings: vec![[0; 32]; 9] };
        assert!(matches!(verify(&tree.root(), 5, 4, &c[4], &long), Err(Error::ProofLength { .. })));
        // A leaf cannot pose as an inner node: the root of one leaf is not that leaf's content.
        let one = MerkleTree::new(&c[..1]).expect("tree");
        assert_ne!(one.root(), c[0]);
        assert!(verify(&one.root(), 1, 0, &c[0], &Proof { siblings: vec![] }).is_ok());
    }
}
