//! Which replicas average together in an outer step, decided without a coordinator: every replica
//! draws the same permutation of `0..replicas` from a seed and the outer-step counter, and cuts it into
//! `replicas / n` groups of `n` — group `j` is `{perm[j], perm[j + R/n], perm[j + 2R/n], …}`, as in the
//! released NoLoCo code.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use pipeline::{Error, Result};

/// The permutation of `0..n` every replica draws for `(seed, counter)`.
pub fn shared_permutation(seed: u64, counter: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    perm
}

/// The groups of outer step `outer_step`: a partition of `0..replicas` into groups of `group_size`,
/// each listed root first.
pub fn gossip_groups(seed: u64, outer_step: u64, replicas: usize, group_size: usize) -> Result<Vec<Vec<usize>>> {
    if group_size == 0 || replicas == 0 || !replicas.is_multiple_of(group_size) {
        return Err(Error::config(
            "noloco.group_size",
            format!("group size {group_size} must be at least 1 and divide the {replicas} replicas"),
        ));
    }
    let perm = shared_permutation(seed, outer_step, replicas);
    let groups = replicas / group_size;
    Ok((0..groups).map(|j| (0..group_size).map(|k| perm[j + k * groups]).collect()).collect())
}

/// The group of `replica` in outer step `outer_step` (see [`gossip_groups`]).
pub fn group_of(seed: u64, outer_step: u64, replicas: usize, group_size: usize, replica: usize) -> Result<Vec<usize>> {
    gossip_groups(seed, outer_step, replicas, group_size)?
        .into_iter()
        .find(|g| g.contains(&replica))
        .ok_or_else(|| Error::config("noloco.replica", format!("replica {replica} of {replicas} does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn groups_partition_the_replicas_and_agree_everywhere(
            seed in any::<u64>(), step in 0u64..10_000, groups in 1usize..40, size in 1usize..6,
        ) {
            let replicas = groups * size;
            let all = gossip_groups(seed, step, replicas, size).unwrap();
            prop_assert_eq!(all.len(), groups);
            let mut seen = vec![false; replicas];
            for g in &all {
                prop_assert_eq!(g.len(), size);
                for &q in g {
                    prop_assert!(!seen[q], "replica {} in two groups", q);
                    seen[q] = true;
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
            // Every member computes the same group for itself, independently.
            for g in &all {
                for &q in g {
                    prop_assert_eq!(&group_of(seed, step, replicas, size, q).unwrap(), g);
                }
            }
        }
    }

    #[test]
    fn groups_change_between_outer_steps() {
        let a = gossip_groups(1, 0, 64, 2).unwrap();
        let b = gossip_groups(1, 1, 64, 2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, gossip_groups(1, 0, 64, 2).unwrap());
    }

    #[test]
    fn a_group_size_that_does_not_divide_is_named() {
        let err = gossip_groups(1, 0, 6, 4).unwrap_err().to_string();
        assert!(err.contains("noloco.group_size") && err.contains("divide"), "{err}");
        assert!(gossip_groups(1, 0, 6, 0).is_err());
    }
}
