//! The baseline study, `swarmlab run` with no configuration (the main job): one replica, four
//! data-parallel replicas and a 2 x 2 pipeline on the synthetic language. Its preset is
//! [`RunConfig::default`](crate::config::RunConfig); its one claim is data parallelism's.

use crate::config::ArmConfig;
use crate::claims::{Claim, Measure};
use crate::studies::{Findings, RunView};

/// The baseline study's findings.
pub(crate) struct Baseline;

/// The data-parallel baseline arm of `stages` x `replicas` (all-reduce every step, fixed paths, no failures).
fn plain(a: &ArmConfig, stages: usize, replicas: usize) -> bool {
    a.stages == stages && a.replicas == replicas && a.sync.kind == "all_reduce"
}

impl Findings for Baseline {
    fn claims(&self, run: &RunView<'_>) -> Vec<Claim> {
        let (Some(one), Some(four)) = (run.result_where(|a| plain(a, 1, 1)), run.result_where(|a| plain(a, 1, 4)))
        else {
            return Vec::new();
        };
        let (Some(a), Some(b)) = (one.final_val_loss, four.final_val_loss) else { return Vec::new() };
        vec![Claim::measured(
            "baseline.data_parallel",
            "data parallelism over 4 replicas beats 1 replica at equal steps (4x the data per step)",
            format!("val loss {b:.3} (R=4) vs {a:.3} (R=1)"),
            Measure { value: a - b, holds_above: 0.0, paper: None, what: "nats lower val loss with R=4" },
        )]
    }
}
