//! The rebuild protocols: CheckFree, CheckFree+ and the paper's ablations.

use std::collections::BTreeMap;

use candle_core::Tensor;
use pipeline::{Donor, DonorWeights, Error, Result, StageRebuild};
use serde::{Deserialize, Serialize};

/// `(α·next + β·prev) / (α + β)` tensor by tensor (by stage-local name), with `α = g_next + ε`,
/// `β = g_prev + ε` the neighbours' last clipped gradient norms: the larger weight goes to the
/// neighbour with the larger gradient norm, as in the released code (`ours-grad-avg`).
pub fn weighted_average(
    prev: &DonorWeights,
    next: &DonorWeights,
    fresh: &BTreeMap<String, Tensor>,
    eps: f32,
) -> Result<BTreeMap<String, Tensor>> {
    let alpha = f64::from(next.grad_norm.abs() + eps);
    let beta = f64::from(prev.grad_norm.abs() + eps);
    let mut out = BTreeMap::new();
    for (name, like) in fresh {
        let (p, n) = (pick(prev, name, like)?, pick(next, name, like)?);
        out.insert(name.clone(), (((n * alpha)? + (p * beta)?)? / (alpha + beta))?);
    }
    Ok(out)
}

/// Donor `d`'s tensor `name`, which must be shaped like `like`.
fn pick<'a>(d: &'a DonorWeights, name: &str, like: &Tensor) -> Result<&'a Tensor> {
    let t = d.weights.get(name).ok_or_else(|| Error::config("checkfree", format!("{:?} sent no {name}", d.donor)))?;
    if t.dims() != like.dims() {
        let why = format!("{name} from {:?} is {:?}, the stage needs {:?}", d.donor, t.dims(), like.dims());
        return Err(Error::config("checkfree", why));
    }
    Ok(t)
}

/// A copy of one donor's weights.
fn copy(donor: &DonorWeights, fresh: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    fresh.iter().map(|(name, like)| Ok((name.clone(), pick(donor, name, like)?.clone()))).collect()
}

fn config_error(reason: impl Into<String>) -> Error {
    Error::config("recovery", reason)
}

/// The layout every variant needs: edge stages, and the same number of blocks in every transformer
/// stage (so neighbours can be matched block by block), with at least `min_stages` stages.
fn check_layout(name: &str, stages: usize, edge_stages: bool, blocks: Option<usize>, min_stages: usize) -> Result<()> {
    if !edge_stages {
        return Err(config_error(format!("{name} needs edge_stages (embedding and head in stages of their own)")));
    }
    if blocks.is_none() {
        return Err(config_error(format!("{name} needs the same number of layers in every transformer stage")));
    }
    if stages < min_stages {
        return Err(config_error(format!("{name} needs at least {min_stages} stages, not {stages}")));
    }
    Ok(())
}

/// The transformer stages that have a transformer stage on both sides: `2..=S−3`.
fn has_both_neighbours(failed: usize, stages: usize) -> bool {
    failed >= 2 && failed + 3 <= stages
}

/// How plain CheckFree rebuilds the first and last transformer stages, which have only one transformer
/// neighbour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStages {
    /// Copy the one transformer neighbour (stage 2 for stage 1, `S−3` for `S−2`), as the released code
    /// does.
    #[default]
    Copy,
    /// Leave them to the run's fallback (checkpoint or re-init): this crate's first rule, kept for
    /// ablation.
    Fallback,
}

/// CheckFree: an intermediate stage is rebuilt as the gradient-norm-weighted average of its two
/// neighbours (paper, Eq. 2); the first and last transformer stages copy their one transformer
/// neighbour (or, with [`EndStages::Fallback`], go to the run's fallback). The rebuilt stage gets a fresh
/// optimizer at `lr_scale` times the base learning rate. The embedding and head stages have no
/// transformer neighbour to rebuild from: the run's fallback handles them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckFree {
    /// Learning-rate factor of the rebuilt stage, against the base rate (1.1 in the released 124M
    /// configuration, 1.2 in the 500M one).
    pub lr_scale: f32,
    /// `ε` added to both gradient norms.
    pub eps: f32,
    /// How the first and last transformer stages are rebuilt.
    pub ends: EndStages,
}

impl Default for CheckFree {
    fn default() -> Self {
        Self { lr_scale: 1.2, eps: 1e-4, ends: EndStages::Copy }
    }
}

impl StageRebuild for CheckFree {
    fn name(&self) -> String {
        match self.ends {
            EndStages::Copy => "CheckFree".into(),
            EndStages::Fallback => "CheckFree (ends fall back)".into(),
        }
    }

    fn validate(&self, stages: usize, edge_stages: bool, blocks: Option<usize>) -> Result<()> {
        check_layout("CheckFree", stages, edge_stages, blocks, 4)?;
        check_lr_scale(self.lr_scale)
    }

    fn donors(&self, failed: usize, stages: usize) -> Option<Vec<Donor>> {
        let (first, last) = (1, stages.checked_sub(2)?);
        if has_both_neighbours(failed, stages) {
            Some(vec![Donor::Stage(failed - 1), Donor::Stage(failed + 1)])
        } else if self.ends == EndStages::Fallback || first >= last {
            None
        } else if failed == first {
            Some(vec![Donor::Stage(first + 1)])
        } else if failed == last {
            Some(vec![Donor::Stage(last - 1)])
        } else {
            None
        }
    }

    fn rebuild(
        &self,
        _failed: usize,
        donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        match donors {
            [one] => copy(one, fresh),
            [prev, next] => weighted_average(prev, next, fresh, self.eps),
            _ => Err(config_error(format!("CheckFree needs one or two neighbours, got {}", donors.len()))),
        }
    }

    fn lr_scale(&self) -> f32 {
        self.lr_scale
    }
}

fn check_lr_scale(lr_scale: f32) -> Result<()> {
    if lr_scale.is_finite() && lr_scale > 0.0 {
        Ok(())
    } else {
        Err(config_error(format!("lr_scale {lr_scale} must be positive")))
    }
}

/// How CheckFree+ rebuilds the stages that the [`OutOfOrderRouter`](crate::OutOfOrderRouter) swaps with an
/// end stage (stage 2, partner of stage 1, and `S−3`, partner of `S−2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwappedStages {
    /// Copy the swap partner, which has learnt to do their job, as the released code does.
    #[default]
    Copy,
    /// The gradient-norm-weighted average of both neighbours: this crate's first rule, kept for ablation.
    Average,
}

/// CheckFree+: each stage of a swapped pair (1 ↔ 2 and `S−3` ↔ `S−2`, which the
/// [`OutOfOrderRouter`](crate::OutOfOrderRouter) trains to stand in for each other) is rebuilt by copying
/// its partner; the other intermediate stages as in CheckFree; the embedding and head stages are restored
/// from the copies their neighbours keep, refreshed every `copy_every` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckFreePlus {
    /// Learning-rate factor of a rebuilt stage.
    pub lr_scale: f32,
    /// `ε` added to both gradient norms.
    pub eps: f32,
    /// Steps between refreshes of the embedding and head copies.
    pub copy_every: u64,
    /// How stages 2 and `S−3` (the partners of the end transformer stages) are rebuilt.
    pub swapped: SwappedStages,
}

impl Default for CheckFreePlus {
    fn default() -> Self {
        Self { lr_scale: 1.2, eps: 1e-4, copy_every: 1, swapped: SwappedStages::Copy }
    }
}

impl StageRebuild for CheckFreePlus {
    fn name(&self) -> String {
        match self.swapped {
            SwappedStages::Copy => "CheckFree+".into(),
            SwappedStages::Average => "CheckFree+ (partners averaged)".into(),
        }
    }

    fn validate(&self, stages: usize, edge_stages: bool, blocks: Option<usize>) -> Result<()> {
        check_layout("CheckFree+", stages, edge_stages, blocks, 6)?;
        check_lr_scale(self.lr_scale)?;
        if self.copy_every == 0 {
            return Err(config_error("CheckFree+ copy_every must be at least 1 step"));
        }
        Ok(())
    }

    fn donors(&self, failed: usize, stages: usize) -> Option<Vec<Donor>> {
        let last = stages - 1;
        Some(match failed {
            0 => vec![Donor::CopyHeldBy(1)],
            f if f == last => vec![Donor::CopyHeldBy(last - 1)],
            1 => vec![Donor::Stage(2)],
            f if f == last - 1 => vec![Donor::Stage(last - 2)],
            2 if self.swapped == SwappedStages::Copy => vec![Donor::Stage(1)],
            f if f == last - 2 && self.swapped == SwappedStages::Copy => vec![Donor::Stage(last - 1)],
            f => vec![Donor::Stage(f - 1), Donor::Stage(f + 1)],
        })
    }

    fn rebuild(
        &self,
        _failed: usize,
        donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        match donors {
            [one] => copy(one, fresh),
            [prev, next] => weighted_average(prev, next, fresh, self.eps),
            _ => Err(config_error(format!("CheckFree+ got {} donors", donors.len()))),
        }
    }

    fn lr_scale(&self) -> f32 {
        self.lr_scale
    }

    fn edge_copies_every(&self) -> Option<u64> {
        Some(self.copy_every)
    }
}

/// Ablation: the failed stage becomes a copy of its previous neighbour (the paper's `ours-naive`, here
/// without its 8 local steps matching cached activations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NaiveCopy {
    /// Learning-rate factor of the rebuilt stage.
    pub lr_scale: f32,
}

impl Default for NaiveCopy {
    fn default() -> Self {
        Self { lr_scale: 1.2 }
    }
}

impl StageRebuild for NaiveCopy {
    fn name(&self) -> String {
        "naive copy".into()
    }

    fn validate(&self, stages: usize, edge_stages: bool, blocks: Option<usize>) -> Result<()> {
        check_layout("naive copy", stages, edge_stages, blocks, 4)?;
        check_lr_scale(self.lr_scale)
    }

    fn donors(&self, failed: usize, stages: usize) -> Option<Vec<Donor>> {
        (failed >= 2 && failed + 2 <= stages).then(|| vec![Donor::Stage(failed - 1)])
    }

    fn rebuild(
        &self,
        _failed: usize,
        donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        match donors {
            [prev] => copy(prev, fresh),
            _ => Err(config_error("naive copy needs its previous neighbour")),
        }
    }

    fn lr_scale(&self) -> f32 {
        self.lr_scale
    }
}

/// Ablation: the failed transformer stage starts again from random weights (the paper's
/// `ours-random`, without its 8 local steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomReinit {
    /// Learning-rate factor of the rebuilt stage.
    pub lr_scale: f32,
}

impl Default for RandomReinit {
    fn default() -> Self {
        Self { lr_scale: 1.2 }
    }
}

impl StageRebuild for RandomReinit {
    fn name(&self) -> String {
        "random re-init".into()
    }

    fn validate(&self, stages: usize, edge_stages: bool, blocks: Option<usize>) -> Result<()> {
        check_layout("random re-init", stages, edge_stages, blocks, 3)?;
        check_lr_scale(self.lr_scale)
    }

    fn donors(&self, failed: usize, stages: usize) -> Option<Vec<Donor>> {
        (failed >= 1 && failed + 1 < stages).then(Vec::new)
    }

    fn rebuild(
        &self,
        _failed: usize,
        _donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        Ok(fresh.clone())
    }

    fn lr_scale(&self) -> f32 {
        self.lr_scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn weights(v: &[f32]) -> BTreeMap<String, Tensor> {
        BTreeMap::from([("blocks.0.wq".to_owned(), Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap())])
    }

    fn donor(stage: usize, grad_norm: f32, v: &[f32]) -> DonorWeights {
        DonorWeights { donor: Donor::Stage(stage), grad_norm, weights: weights(v) }
    }

    fn values(w: &BTreeMap<String, Tensor>) -> Vec<f32> {
        w["blocks.0.wq"].to_vec1::<f32>().unwrap()
    }

    #[test]
    fn the_rebuilt_weights_are_the_gradient_norm_weighted_average() {
        let fresh = weights(&[0.0, 0.0]);
        let (prev, next) = (donor(1, 0.5, &[1.0, 2.0]), donor(3, 1.5, &[3.0, -2.0]));
        let got = values(&CheckFree::default().rebuild(2, &[prev, next], &fresh).unwrap());
        let (a, b) = (1.5f32 + 1e-4, 0.5f32 + 1e-4);
        let want = [(a * 3.0 + b * 1.0) / (a + b), (a * -2.0 + b * 2.0) / (a + b)];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn which_stages_each_variant_can_rebuild() {
        let cf = CheckFree::default();
        let s = 7; // embedding, five transformer stages, head
        assert_eq!(cf.donors(3, s), Some(vec![Donor::Stage(2), Donor::Stage(4)]));
        // The first and last transformer stages copy their one transformer neighbour.
        assert_eq!(cf.donors(1, s), Some(vec![Donor::Stage(2)]));
        assert_eq!(cf.donors(5, s), Some(vec![Donor::Stage(4)]));
        for unrecoverable in [0, 6] {
            assert_eq!(cf.donors(unrecoverable, s), None, "stage {unrecoverable}");
        }
        let old = CheckFree { ends: EndStages::Fallback, ..cf };
        for unrecoverable in [0, 1, 5, 6] {
            assert_eq!(old.donors(unrecoverable, s), None, "stage {unrecoverable}");
        }
        // Two transformer stages: each copies the other.
        assert_eq!(cf.donors(1, 4), Some(vec![Donor::Stage(2)]));
        assert_eq!(cf.donors(2, 4), Some(vec![Donor::Stage(1)]));
        let plus = CheckFreePlus::default();
        assert_eq!(plus.donors(0, s), Some(vec![Donor::CopyHeldBy(1)]));
        assert_eq!(plus.donors(1, s), Some(vec![Donor::Stage(2)]));
        // The swap partners copy the end stage they stand in for; stage 3 has none and is averaged.
        assert_eq!(plus.donors(2, s), Some(vec![Donor::Stage(1)]));
        assert_eq!(plus.donors(3, s), Some(vec![Donor::Stage(2), Donor::Stage(4)]));
        assert_eq!(plus.donors(4, s), Some(vec![Donor::Stage(5)]));
        assert_eq!(plus.donors(5, s), Some(vec![Donor::Stage(4)]));
        assert_eq!(plus.donors(6, s), Some(vec![Donor::CopyHeldBy(5)]));
        let averaged = CheckFreePlus { swapped: SwappedStages::Average, ..plus };
        assert_eq!(averaged.donors(2, s), Some(vec![Donor::Stage(1), Donor::Stage(3)]));
        assert_eq!(averaged.donors(4, s), Some(vec![Donor::Stage(3), Donor::Stage(5)]));
        assert_eq!(NaiveCopy::default().donors(1, s), None);
        assert_eq!(RandomReinit::default().donors(0, s), None);
        assert_eq!(RandomReinit::default().donors(2, s), Some(vec![]));
    }

    #[test]
    fn mismatched_donors_are_errors_not_panics() {
        let fresh = weights(&[0.0, 0.0]);
        let short = donor(1, 1.0, &[1.0]);
        assert!(CheckFree::default().rebuild(2, &[short.clone(), donor(3, 1.0, &[1.0, 1.0])], &fresh).is_err());
        assert!(CheckFree::default().rebuild(2, &[short], &fresh).is_err());
        let missing = DonorWeights { donor: Donor::Stage(1), grad_norm: 1.0, weights: BTreeMap::new() };
        assert!(CheckFreePlus::default().rebuild(1, &[missing], &fresh).unwrap_err().to_string().contains("sent no"));
    }

    #[test]
    fn layouts_are_checked() {
        assert!(CheckFree::default().validate(6, true, Some(1)).is_ok());
        assert!(CheckFree::default().validate(6, false, Some(1)).unwrap_err().to_string().contains("edge_stages"));
        assert!(CheckFree::default().validate(6, true, None).is_err());
        assert!(CheckFree::default().validate(4, true, Some(1)).is_ok());
        assert!(CheckFree::default().validate(3, true, Some(1)).is_err());
        assert!(CheckFreePlus::default().validate(5, true, Some(1)).is_err());
        assert!(CheckFreePlus { copy_every: 0, ..CheckFreePlus::default() }.validate(6, true, Some(1)).is_err());
        assert!(CheckFree { lr_scale: -1.0, ..CheckFree::default() }.validate(6, true, Some(1)).is_err());
    }
}
