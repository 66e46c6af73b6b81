//! An instrument, not a protocol: how far apart the replicas' weights are. Workers hand their stage's
//! weights to the probe at evaluation steps; it keeps running sums (Welford) per `(step, stage)`, so
//! no full copy of the swarm's weights is ever held.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Running {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

/// Across-replica weight variance, measured during a run.
#[derive(Debug)]
pub struct WeightProbe {
    replicas: usize,
    open: Mutex<BTreeMap<(u64, usize), Running>>,
    /// Per step: summed per-parameter variance and the number of parameters it covers.
    closed: Mutex<BTreeMap<u64, (f64, usize)>>,
}

impl WeightProbe {
    /// A probe for stages of `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self { replicas, open: Mutex::new(BTreeMap::new()), closed: Mutex::new(BTreeMap::new()) }
    }

    /// Adds one replica's flattened weights of `stage` at `step`.
    pub fn add(&self, step: u64, stage: usize, weights: &[f32]) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let acc = open.entry((step, stage)).or_default();
        if acc.count == 0 {
            acc.mean = vec![0.0; weights.len()];
            acc.m2 = vec![0.0; weights.len()];
        }
        if acc.mean.len() != weights.len() {
            return;
        }
        acc.count += 1;
        let n = acc.count as f64;
        for ((m, m2), &x) in acc.mean.iter_mut().zip(acc.m2.iter_mut()).zip(weights) {
            let x = f64::from(x);
            let d = x - *m;
            *m += d / n;
            *m2 += d * (x - *m);
        }
        if acc.count == self.replicas {
            let Some(done) = open.remove(&(step, stage)) else { return };
            let var: f64 = done.m2.iter().map(|m2| m2 / n).sum();
            let mut closed = self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = closed.entry(step).or_insert((0.0, 0));
            entry.0 += var;
            entry.1 += done.m2.len();
        }
    }

    /// Per step at which every replica reported: the across-replica variance of a weight, averaged
    /// over every weight of every stage that reported.
    pub fn variance_by_step(&self) -> Vec<(u64, f64)> {
        let closed = self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        closed.iter().filter(|(_, (_, n))| *n > 0).map(|(&step, &(v, n))| (step, v / n as f64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variance_is_the_population_variance_across_replicas() {
        let probe = WeightProbe::new(2);
        probe.add(5, 0, &[1.0, 0.0]);
        probe.add(5, 1, &[7.0]);
        assert!(probe.variance_by_step().is_empty(), "stage 1 has one replica so far");
        probe.add(5, 0, &[3.0, 0.0]);
        probe.add(5, 1, &[7.0]);
        // stage 0: variances 1 and 0; stage 1: 0 → mean over three weights.
        let got = probe.variance_by_step();
        assert_eq!(got.len(), 1);
        assert!((got[0].1 - 1.0 / 3.0).abs() < 1e-12);
    }
}
