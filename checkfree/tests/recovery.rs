//! Failures inside a running pipeline: each kind of failure has one defined, logged outcome, the runs
//! stay deterministic, and a redundant copy brings back exactly the lost weights.

use std::sync::Arc;

use checkfree::{CheckFree, CheckFreePlus, EndStages, OutOfOrderRouter};
use genrl::{DeviceProfile, EventKind, World, run_simulation};
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage};
use models::{ModelConfig, OptimConfig};
use pipeline::{FailurePlan, Fallback, FixedRouter, PipelineSpec, Rebuild, Recovery, Redundant, Router, RunReport, run_simulated};
use transport::sim::LinkSpec;

fn corpus() -> Arc<Corpus> {
    let cfg = SyntheticConfig { train_tokens: 1 << 14, val_tokens: 1024, ..SyntheticConfig::default() };
    Arc::new(SyntheticLanguage::new(&cfg).expect("language").corpus())
}

/// Embedding, four one-block transformer stages, head; `replicas` rows.
fn spec(replicas: usize, recovery: Arc<dyn Recovery>, failures: Vec<(u64, usize)>, router: Arc<dyn Router>) -> PipelineSpec {
    let steps = 8;
    let model = ModelConfig::miniature(4);
    PipelineSpec {
        optim: OptimConfig { lr: 3e-3, warmup_steps: 1, total_steps: steps, ..OptimConfig::default() },
        router,
        seed: 2,
        world: World {
            failures: FailurePlan { failures },
            ..World::uniform(6 * replicas, DeviceProfile::a10(), LinkSpec::mbit(5.0, 1000.0))
        },
        recovery,
        eval_batches: 1,
        edge_stages: true,
        ..PipelineSpec::new(6, replicas, steps, model)
    }
}

fn checkfree(fallback: Fallback) -> Arc<dyn Recovery> {
    Arc::new(Rebuild { protocol: Arc::new(CheckFree::default()), fallback })
}

fn run(spec: &PipelineSpec) -> RunReport {
    run_simulation(run_simulated(spec, corpus())).expect("runtime").expect("run")
}

fn recoveries(report: &RunReport) -> Vec<String> {
    report.metrics.events.iter().filter(|e| e.kind == EventKind::Recovery).map(|e| e.detail.clone()).collect()
}

fn losses(report: &RunReport) -> Vec<f64> {
    report.metrics.mean_by_step("train_loss").into_iter().map(|v| v.1).collect()
}

fn flat(report: &RunReport) -> Vec<u32> {
    report
        .weights
        .values()
        .flat_map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("tensor"))
        .map(f32::to_bits)
        .collect()
}

#[test]
fn an_intermediate_stage_is_rebuilt_from_its_neighbours_deterministically() {
    let s = spec(1, checkfree(Fallback::ReInit), vec![(4, 2)], Arc::new(FixedRouter));
    let (a, b) = (run(&s), run(&s));
    let got = recoveries(&a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("rebuilt by CheckFree") && got[0].contains("from Stage(1) + Stage(3)"), "{got:?}");
    assert_eq!(flat(&a), flat(&b), "a run with failures is a function of its seed");
    assert!(losses(&a).iter().all(|l| l.is_finite()));
    let clean = run(&spec(1, checkfree(Fallback::ReInit), vec![], Arc::new(FixedRouter)));
    assert!(a.bytes_sent > clean.bytes_sent, "the neighbours' weights travelled over the network");
    assert_eq!(losses(&a)[..4], losses(&clean)[..4], "nothing changes before the failure");
    assert_ne!(losses(&a)[4], losses(&clean)[4], "the rebuilt stage is not the lost one");
}

#[test]
fn end_stages_copy_their_neighbour_and_the_old_rule_falls_back() {
    // The first transformer stage has only the embedding stage before it: it copies stage 2, and the last
    // (stage 4) copies stage 3.
    let copied = run(&spec(1, checkfree(Fallback::ReInit), vec![(3, 1), (5, 4)], Arc::new(FixedRouter)));
    let got = recoveries(&copied);
    assert!(got[0].starts_with("s1r0: rebuilt by CheckFree") && got[0].contains("from Stage(2) in"), "{got:?}");
    assert!(got[1].starts_with("s4r0: rebuilt by CheckFree") && got[1].contains("from Stage(3) in"), "{got:?}");
    let old = |fallback| -> Arc<dyn Recovery> {
        let protocol = CheckFree { ends: EndStages::Fallback, ..CheckFree::default() };
        Arc::new(Rebuild { protocol: Arc::new(protocol), fallback })
    };
    let reinit = run(&spec(1, old(Fallback::ReInit), vec![(3, 1)], Arc::new(FixedRouter)));
    assert!(recoveries(&reinit)[0].contains("re-initialised"), "{:?}", recoveries(&reinit));
    let fallback = Fallback::Checkpoint { every: 2, bytes_per_s: 1e6 };
    let rolled = run(&spec(1, old(fallback), vec![(3, 0)], Arc::new(FixedRouter)));
    assert!(recoveries(&rolled)[0].contains("restored the step-2 checkpoint"), "{:?}", recoveries(&rolled));
}

#[test]
fn a_failure_at_step_zero_is_recovered_like_any_other() {
    let fallback = Fallback::Checkpoint { every: 2, bytes_per_s: 1e6 };
    let report = run(&spec(1, checkfree(fallback), vec![(0, 1), (0, 3)], Arc::new(FixedRouter)));
    let got = recoveries(&report);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("from Stage(2) in") && got[1].contains("from Stage(2) + Stage(4)"), "{got:?}");
    assert!(losses(&report).iter().all(|l| l.is_finite()));
    // The head cannot be rebuilt: the run rolls back to the checkpoint taken before step 0.
    let head = run(&spec(1, checkfree(fallback), vec![(0, 5)], Arc::new(FixedRouter)));
    assert_eq!(recoveries(&head), ["restored the step-0 checkpoint; redoing 0 steps"]);
    assert!(losses(&head).iter().all(|l| l.is_finite()));
}

#[test]
fn adjacent_failures_cannot_use_each_other() {
    let report = run(&spec(1, checkfree(Fallback::ReInit), vec![(3, 2), (3, 3)], Arc::new(FixedRouter)));
    let got = recoveries(&report);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|d| d.contains("re-initialised")), "a neighbour lost in the same step is no donor: {got:?}");
}

#[test]
fn a_surviving_replica_is_copied_and_a_whole_stage_is_rebuilt() {
    // Worker 5 = stage 2, replica 1 (of 2): its replica 0 survives.
    let one = run(&spec(2, checkfree(Fallback::ReInit), vec![(3, 5)], Arc::new(FixedRouter)));
    let copied = &recoveries(&one)[0];
    assert!(copied.contains("copied the weights and optimizer moments of replica 0"), "{copied}");
    // Both replicas of stage 2 (workers 4 and 5): each row's neighbours rebuild its replica.
    let both = run(&spec(2, checkfree(Fallback::ReInit), vec![(3, 4), (3, 5)], Arc::new(FixedRouter)));
    let got = recoveries(&both);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| d.contains("rebuilt by CheckFree")), "{got:?}");
}

#[test]
fn checkfree_plus_copies_the_end_stages_and_restores_the_edges() {
    let plus = || -> Arc<dyn Recovery> {
        Arc::new(Rebuild { protocol: Arc::new(CheckFreePlus::default()), fallback: Fallback::ReInit })
    };
    let failures = vec![(3, 1), (5, 0), (6, 5), (7, 2)];
    let report = run(&spec(1, plus(), failures, Arc::new(OutOfOrderRouter)));
    let got = recoveries(&report);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[0].contains("from Stage(2)"), "{got:?}");
    assert!(got[1].contains("from CopyHeldBy(1)"), "{got:?}");
    assert!(got[2].contains("from CopyHeldBy(4)"), "{got:?}");
    // Stage 2 is stage 1's swap partner: it copies stage 1.
    assert!(got[3].starts_with("s2r0") && got[3].contains("from Stage(1) in"), "{got:?}");
    assert!(losses(&report).iter().all(|l| l.is_finite()));
}

#[test]
fn a_redundant_copy_brings_back_exactly_the_lost_weights() {
    let clean = run(&spec(1, Arc::new(Redundant), vec![], Arc::new(FixedRouter)));
    let failed = run(&spec(1, Arc::new(Redundant), vec![(4, 3)], Arc::new(FixedRouter)));
    assert!(recoveries(&failed)[0].contains("restored from stage 2's redundant copy"), "{:?}", recoveries(&failed));
    // Weights and optimizer moments come back exactly: the rest of the run is the failure-free run, bit
    // for bit.
    assert_eq!(losses(&failed), losses(&clean));
    assert_eq!(flat(&failed), flat(&clean));
    let plain = run(&spec(1, checkfree(Fallback::ReInit), vec![], Arc::new(FixedRouter)));
    assert!(clean.virtual_time > plain.virtual_time, "redundant compute and copies cost time");
}
