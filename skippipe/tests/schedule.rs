//! The scheduler's guarantees: every path obeys every rule, no two forward passes overlap on a node,
//! impossible requests fail fast with the constraint named, a node failing mid-iteration loses only the
//! micro-batches that needed it, and a schedule without skips on a single row trains exactly like the
//! fixed pipeline.

use std::sync::Arc;

use genrl::World;
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage};
use models::{ModelConfig, OptimConfig};
use pipeline::{FixedRouter, PipelineSpec, Router, run_simulated};
use proptest::prelude::*;
use skippipe::{
    Budget, Error, Instance, PathRules, ScheduledRouter, Scheduling, SkipBase, SkipCount, Workload,
    assign_local_search, assign_random, check_path, schedule, simulate,
};

fn workload(stages: usize, micro_batches: usize, memory: usize) -> Workload {
    Workload { stage_flops: vec![2e12; stages], activation_bytes: 1 << 22, micro_batches, memory }
}

fn try_instance(
    nodes: usize,
    partition: &[usize],
    micro_batches: usize,
    memory: usize,
    skip: f64,
    seed: u64,
) -> skippipe::Result<Instance> {
    try_instance_over(nodes, partition, micro_batches, memory, (skip, SkipBase::all(partition.len())), seed)
}

/// An instance whose skip ratio counts the stages `base` says.
fn try_instance_over(
    nodes: usize,
    partition: &[usize],
    micro_batches: usize,
    memory: usize,
    (skip, base): (f64, SkipBase),
    seed: u64,
) -> skippipe::Result<Instance> {
    let world = World::geo_distributed(nodes, seed);
    let w = workload(partition.len(), micro_batches, memory);
    let assignment = assign_random(&world, partition, seed)?;
    let agents = partition[0] * micro_batches;
    let rules = PathRules::over(partition.len(), base, agents, skip, 1.5)?;
    skippipe::instance(&world, &assignment, &w, rules)
}

fn instance(nodes: usize, partition: &[usize], micro_batches: usize, memory: usize, skip: f64, seed: u64) -> Instance {
    try_instance(nodes, partition, micro_batches, memory, skip, seed).expect("instance")
}

/// Every rule and every capacity holds, and no node runs two forward passes at once, in the plan and in
/// the simulated timeline.
fn assert_valid(inst: &Instance, plans: &[skippipe::Plan]) {
    let mut stage_load = vec![0; inst.stages];
    let mut node_load = vec![0; inst.nodes.len()];
    let mut busy: Vec<Vec<(f64, f64)>> = vec![Vec::new(); inst.nodes.len()];
    for (a, p) in plans.iter().enumerate() {
        check_path(inst, a, &p.nodes).unwrap_or_else(|e| panic!("agent {a}: {e}"));
        for (i, &n) in p.nodes.iter().enumerate() {
            stage_load[inst.nodes[n].stage] += 1;
            node_load[n] += 1;
            busy[n].push(p.busy(inst, i));
        }
    }
    for (k, &load) in stage_load.iter().enumerate().take(inst.stages - 1).skip(inst.rules.lead) {
        assert!(load <= inst.rules.stage_load, "stage {k} serves {load} micro-batches");
        assert!(load >= inst.rules.min_stage_load, "stage {k} serves only {load} micro-batches");
    }
    for (n, &load) in node_load.iter().enumerate() {
        assert!(load <= inst.nodes[n].memory, "node {n} holds {load}");
    }
    let no_overlap = |mut v: Vec<(f64, f64)>, what: &str| {
        v.sort_by(|x, y| x.0.total_cmp(&y.0));
        for w in v.windows(2) {
            assert!(w[1].0 >= w[0].1 - 1e-9, "{what}: {:?} overlaps {:?}", w[0], w[1]);
        }
    };
    for (n, v) in busy.into_iter().enumerate() {
        no_overlap(v, &format!("planned forward passes on node {n}"));
    }
    let paths: Vec<Vec<usize>> = plans.iter().map(|p| p.nodes.clone()).collect();
    let timeline = simulate(inst, &paths, None).expect("simulate");
    assert!(timeline.lost().is_empty());
    for n in 0..inst.nodes.len() {
        let v = timeline.work.iter().filter(|w| w.node == n).map(|w| (w.start, w.end)).collect();
        no_overlap(v, &format!("simulated work on node {n}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_path_obeys_every_rule(
        stages in 3usize..8,
        per_stage in 1usize..4,
        micro_batches in 1usize..4,
        skip_index in 0usize..3,
        transformer in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let skip = [0.0, 0.25, 0.33][skip_index];
        let base = if transformer { SkipBase::transformer(stages) } else { SkipBase::all(stages) };
        let partition = vec![per_stage; stages];
        let agents = per_stage * micro_batches;
        // Enough memory for every micro-batch to fit on any one node of a stage.
        let found = try_instance_over(stages * per_stage, &partition, micro_batches, agents, (skip, base), seed)
            .and_then(|inst| Ok((schedule(Arc::new(inst.clone()), Budget::default())?, inst)));
        match found {
            Ok((found, inst)) => assert_valid(&inst, &found.plans),
            // A skip ratio can leave too few visits to cover every intermediate stage: that must be
            // refused by name, never searched for.
            Err(Error::Infeasible { constraint, .. }) => prop_assert!(constraint == "skip_ratio", "{constraint}"),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

#[test]
fn the_paper_sized_instance_is_solved_and_beats_fixed_rows() {
    let partition = [7, 5, 5, 5, 5, 5, 5, 5];
    let world = World::geo_distributed(42, 3);
    let w = workload(8, 6, 10);
    let assignment = assign_local_search(&world, &partition, &w, 3, 1).expect("assignment");
    let rules = PathRules::new(8, 42, 0.25, 1.25).expect("rules");
    let inst = skippipe::instance(&world, &assignment, &w, rules).expect("instance");
    let found = schedule(Arc::new(inst.clone()), Budget::default()).expect("schedule");
    assert_valid(&inst, &found.plans);
    let fixed = simulate(&inst, &assignment.fixed_rows(&inst), None).expect("fixed rows");
    assert!(found.makespan < fixed.makespan, "{} vs {}", found.makespan, fixed.makespan);
}

#[test]
fn the_ratio_counts_transformer_stages_and_the_first_one_always_runs() {
    // Embedding, six transformer stages, head, as in the released trainer's 6 x 4 layers: 33% skips 2 of
    // the 6 transformer stages, and every path runs the first transformer stage right after the embedding.
    let spec = PipelineSpec { micro_batches: 3, ..spec(8, 2, 1) };
    let settings = Scheduling { skip_ratio: 0.33, ..Scheduling::default() };
    assert_eq!(settings.count, SkipCount::TransformerStages, "the released trainer's rule is the default");
    let router = ScheduledRouter::for_pipeline(&spec, &settings).expect("schedule");
    for path in router.paths().iter().flatten() {
        let stages: Vec<usize> = path.iter().map(|h| h.0).collect();
        assert_eq!(stages.len(), 6, "{stages:?}: 4 of 6 transformer stages plus the embedding and head");
        assert_eq!(&stages[..2], &[0, 1], "{stages:?}: the first transformer stage always runs");
        assert_eq!(stages.last(), Some(&7), "{stages:?}");
    }
    // The first rule, kept as an ablation: the ratio counts all 8 stages, so 3 are skipped, and the first
    // transformer stage is skippable like the others (the load balance makes some path skip it).
    let all = Scheduling { count: SkipCount::AllStages, ..settings };
    let router = ScheduledRouter::for_pipeline(&spec, &all).expect("schedule");
    let paths: Vec<Vec<usize>> = router.paths().iter().flatten().map(|p| p.iter().map(|h| h.0).collect()).collect();
    assert!(paths.iter().all(|p| p.len() == 5), "{paths:?}");
    assert!(paths.iter().any(|p| p[1] != 1), "{paths:?}");
    // Skipping every skippable stage is refused by name under either rule.
    let err = PathRules::over(8, SkipBase::transformer(8), 6, 0.9, 1.5).unwrap_err();
    assert!(matches!(err, Error::Infeasible { constraint: "skip_ratio", .. }), "{err}");
}

#[test]
fn every_worker_schedules_the_same_paths_again_without_the_workers_that_left() {
    // Embedding, three transformer stages, head; three replicas each, on a geo-distributed swarm.
    let (stages, replicas) = (5, 3);
    let world = World::geo_distributed(stages * replicas, 2);
    let spec = PipelineSpec { micro_batches: 2, world, ..spec(stages, replicas, 1) };
    let settings = Scheduling { skip_ratio: 0.34, memory: 4, ..Scheduling::default() };
    let router = ScheduledRouter::for_pipeline(&spec, &settings).expect("schedule");
    let paths = |r: &dyn Router| -> Vec<Vec<pipeline::Hop>> {
        (0..replicas)
            .flat_map(|o| (0..2).map(move |m| (o, m)))
            .map(|(o, m)| r.path(0, m, o, stages, replicas))
            .collect()
    };
    // Stage 2's replica 1 (worker 7) and data replica 0 (worker 0) leave for good.
    let again = router.without(&[7, 0], stages, replicas).expect("a schedule without them");
    assert_eq!(
        paths(again.as_ref()),
        paths(router.without(&[0, 7, 7], stages, replicas).expect("again").as_ref()),
        "the same on every worker"
    );
    for origin in 0..replicas {
        for micro in 0..2 {
            let path = again.path(0, micro, origin, stages, replicas);
            if origin == 0 {
                assert!(path.is_empty(), "a departed data replica's micro-batches are no longer drawn: {path:?}");
                continue;
            }
            pipeline::check_path(&path, origin, stages, replicas).expect("a valid path");
            assert!(!path.contains(&(2, 1)), "{path:?} visits a worker that left");
            assert_eq!(path.len(), 4, "{path:?}: still one of the three transformer stages skipped");
        }
    }
    assert_ne!(paths(again.as_ref()), paths(&router), "the schedule changed");
    // Both come back: the paths the run started with.
    assert_eq!(paths(again.without(&[], stages, replicas).expect("everyone").as_ref()), paths(&router));
    // A stage with nobody left is refused by name.
    let err = router.without(&[6, 7, 8], stages, replicas).expect_err("stage 2 is gone").to_string();
    assert!(err.contains("no worker of stage 2"), "{err}");
    assert!(FixedRouter.without(&[6, 7, 8], stages, replicas).is_err());
}

#[test]
fn impossible_requests_name_the_constraint() {
    let partition = [2, 2, 2, 2];
    // Four micro-batches per data node, but a node holds three.
    let inst = instance(8, &partition, 4, 3, 0.0, 1);
    match schedule(Arc::new(inst), Budget::default()) {
        Err(Error::Infeasible { constraint: "memory", reason }) => assert!(reason.contains("data node"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Skipping both intermediate stages of a 4-stage pipeline.
    let err = PathRules::new(4, 4, 0.5, 1.5).unwrap_err();
    assert!(matches!(err, Error::Infeasible { constraint: "skip_ratio", .. }), "{err}");
    // Too few visits to cover every intermediate stage: one micro-batch through 2 of 6.
    let inst = instance(8, &[1, 1, 1, 1, 1, 1, 1, 1], 1, 4, 0.5, 1);
    let err = schedule(Arc::new(inst), Budget::default()).unwrap_err();
    assert!(matches!(err, Error::Infeasible { constraint: "skip_ratio", .. }), "{err}");
    // Jumps too short to reach the last stage in the hops allowed.
    let mut inst = instance(16, &[2; 8], 1, 4, 0.33, 1);
    inst.rules.max_jump = 1;
    let err = schedule(Arc::new(inst), Budget::default()).unwrap_err();
    assert!(matches!(err, Error::Infeasible { constraint: "max_jump", .. }), "{err}");
}

#[test]
fn malformed_instances_and_paths_are_errors() {
    let inst = instance(8, &[2, 2, 2, 2], 1, 4, 0.0, 1);
    let paths: Vec<Vec<usize>> = inst.agents.iter().map(|a| vec![a.origin]).collect();
    let mut ragged = inst.clone();
    ragged.transfer[3].pop();
    assert!(simulate(&ragged, &paths, None).is_err(), "a ragged transfer matrix");
    assert!(simulate(&inst, &paths[..1], None).is_err(), "one path for two micro-batches");
    assert!(check_path(&inst, 9, &[0]).is_err() && check_path(&inst, 0, &[0, 99]).is_err());
    let world = World::geo_distributed(8, 1);
    let short = skippipe::Assignment { stage_of: vec![0, 1, 2] };
    let rules = PathRules::new(3, 2, 0.0, 1.5).expect("rules");
    assert!(skippipe::instance(&world, &short, &workload(3, 1, 4), rules).is_err(), "an assignment of 3 for 8 nodes");
}

#[test]
fn the_search_budget_is_enforced_and_reported() {
    let inst = Arc::new(instance(24, &[4, 4, 4, 4, 4, 4], 3, 12, 0.33, 5));
    let err = skippipe::Search::new(inst, Budget { nodes: 0, ..Budget::default() }).and_then(|s| s.run()).unwrap_err();
    assert!(matches!(err, Error::GaveUp { expanded: 0, budget: 0, .. }), "{err}");
}

#[test]
fn a_node_failing_mid_iteration_loses_only_its_micro_batches() {
    let inst = instance(12, &[3, 3, 3, 3], 2, 6, 0.0, 2);
    let found = schedule(Arc::new(inst.clone()), Budget::default()).expect("schedule");
    let paths = found.paths();
    let clean = simulate(&inst, &paths, None).expect("clean");
    // Kill a node of stage 2 halfway through the iteration.
    let victim = paths[0][2];
    let timeline = simulate(&inst, &paths, Some((victim, clean.makespan / 2.0))).expect("with failure");
    let lost = timeline.lost();
    for (a, p) in paths.iter().enumerate() {
        if !p.contains(&victim) {
            assert!(timeline.completed[a].is_some(), "micro-batch {a} never touched the failed node");
        }
    }
    assert!(lost.iter().all(|&a| paths[a].contains(&victim)));
    assert!(!lost.is_empty(), "the failure came before the node's work was done");
}

fn corpus() -> Arc<Corpus> {
    let cfg = SyntheticConfig { train_tokens: 1 << 14, val_tokens: 1024, ..SyntheticConfig::default() };
    Arc::new(SyntheticLanguage::new(&cfg).expect("language").corpus())
}

fn spec(stages: usize, replicas: usize, steps: u64) -> PipelineSpec {
    let model = ModelConfig::miniature(stages - 2);
    PipelineSpec {
        optim: OptimConfig { lr: 3e-3, warmup_steps: 1, total_steps: steps, ..OptimConfig::default() },
        seed: 4,
        edge_stages: true,
        ..PipelineSpec::new(stages, replicas, steps, model)
    }
}

/// The schedule of the grid `spec` on a geo-distributed world.
fn scheduled(spec: &PipelineSpec, skip: f64) -> ScheduledRouter {
    let nodes = spec.stages * spec.replicas;
    let world = World::geo_distributed(nodes, 1);
    // Stage by stage in node order, so slot r of stage k is node k × replicas + r.
    let assignment = skippipe::Assignment { stage_of: (0..nodes).map(|n| n / spec.replicas).collect() };
    let w = workload(spec.stages, spec.micro_batches, spec.micro_batches * spec.replicas);
    let rules = PathRules::new(spec.stages, spec.replicas * spec.micro_batches, skip, 1.5).expect("rules");
    let inst = skippipe::instance(&world, &assignment, &w, rules).expect("instance");
    let found = schedule(Arc::new(inst), Budget::default()).expect("schedule");
    ScheduledRouter::new(&found, &assignment, spec.micro_batches).expect("router")
}

#[test]
fn no_skips_on_one_row_trains_exactly_like_the_fixed_pipeline() {
    let spec = spec(5, 1, 4);
    let router = scheduled(&spec, 0.0);
    assert!(router.paths()[0].iter().all(|p| *p == (0..5).map(|s| (s, 0)).collect::<Vec<_>>()), "{:?}", router.paths());
    let run = |router: Arc<dyn pipeline::Router>| {
        let s = PipelineSpec { router, ..spec.clone() };
        genrl::run_simulation(run_simulated(&s, corpus())).expect("runtime").expect("run")
    };
    let fixed = run(Arc::new(FixedRouter));
    let skip = run(Arc::new(router));
    for (name, w) in &fixed.weights {
        let a = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("weights");
        let b = skip.weights[name].flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("weights");
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn skipping_trains_and_keeps_replicas_identical() {
    let spec = PipelineSpec { micro_batches: 2, ..spec(6, 2, 12) };
    let router = scheduled(&spec, 0.33);
    assert!(router.paths()[0].iter().all(|p| p.len() == 4), "{:?}", router.paths());
    let s = PipelineSpec { router: Arc::new(router), eval_every: 12, ..spec };
    let report = genrl::run_simulation(run_simulated(&s, corpus())).expect("runtime").expect("run");
    let losses = report.metrics.mean_by_step("train_loss");
    let (first, last) = (losses[0].1, losses[losses.len() - 1].1);
    assert!(last < first, "train loss {first} -> {last}");
    // Data-parallel averaging over the stage's visits keeps replicas in lockstep.
    for (name, w) in &report.replica_weights[0] {
        let a = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("weights");
        let b = report.replica_weights[1][name].flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("weights");
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn a_trained_model_runs_with_stages_dropped() {
    let spec = spec(6, 1, 6);
    let report = genrl::run_simulation(run_simulated(&spec, corpus())).expect("runtime").expect("run");
    let model = pipeline::StagedModel::new(&spec, &report.weights).expect("model");
    let batches = models::data::eval_batches(&corpus().val, 2, 2, 16, &candle_core::Device::Cpu).expect("batches");
    let full = model.loss_with(&[0, 1, 2, 3, 4, 5], &batches).expect("full");
    let half = model.loss_with(&[0, 1, 3, 5], &batches).expect("half");
    assert!(full.is_finite() && half.is_finite() && (full - half).abs() > 0.0);
    // The perplexity is per sequence, then averaged: at least exp(mean loss) (Jensen), equal only if
    // every sequence had the same loss.
    let eval = model.evaluate(&[0, 1, 3, 5], &batches).expect("evaluate");
    assert!((eval.loss - half).abs() < 1e-9, "{} vs {half}", eval.loss);
    assert!(eval.perplexity > half.exp() * (1.0 + 1e-6), "{} vs exp {}", eval.perplexity, half.exp());
    assert!(model.loss_with(&[1, 2, 5], &batches).is_err(), "must start with the embedding");
    assert!(model.loss_with(&[0, 2, 2, 5], &batches).is_err(), "no stage twice");
}
