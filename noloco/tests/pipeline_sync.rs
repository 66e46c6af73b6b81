//! DiLoCo and NoLoCo inside the pipeline runtime: the degenerate settings reduce to exact averaging,
//! gossip keeps replicas close, random routing mixes them, and runs are deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use genrl::{DeviceProfile, World, run_simulation};
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage};
use models::{ModelConfig, OptimConfig};
use noloco::{DiLoCo, NoLoCo, RandomRouter};
use pipeline::{FixedRouter, Independent, OuterSync, PipelineSpec, Router, RunReport, run_simulated};
use transport::sim::LinkSpec;

fn corpus() -> Arc<Corpus> {
    let cfg = SyntheticConfig { train_tokens: 1 << 15, val_tokens: 2048, ..SyntheticConfig::default() };
    Arc::new(SyntheticLanguage::new(&cfg).expect("language").corpus())
}

fn spec(stages: usize, replicas: usize, steps: u64, sync: Arc<dyn OuterSync>, router: Arc<dyn Router>) -> PipelineSpec {
    let model = ModelConfig::miniature(2);
    PipelineSpec {
        optim: OptimConfig { lr: 3e-3, warmup_steps: 1, total_steps: steps, ..OptimConfig::default() },
        sync,
        router,
        seed: 5,
        world: World::uniform(stages * replicas, DeviceProfile::a10(), LinkSpec::mbit(20.0, 100.0)),
        ..PipelineSpec::new(stages, replicas, steps, model)
    }
}

fn run(spec: &PipelineSpec) -> RunReport {
    run_simulation(run_simulated(spec, corpus())).expect("runtime").expect("run")
}

fn flat(weights: &BTreeMap<String, Tensor>) -> Vec<f32> {
    weights.values().flat_map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("tensor")).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-6, "{what}: max difference {worst}");
}

/// With one outer round at the very end, outer lr 1, no momentum and one group of all replicas, both
/// protocols must leave every replica with the plain average of what the independent replicas learned.
#[test]
fn degenerate_settings_are_exact_global_averaging() {
    let (replicas, steps) = (4, 6);
    let independent = run(&spec(1, replicas, steps, Arc::new(Independent), Arc::new(FixedRouter)));
    let per_replica: Vec<Vec<f32>> = independent.replica_weights.iter().map(flat).collect();
    let mean: Vec<f32> =
        (0..per_replica[0].len()).map(|i| per_replica.iter().map(|w| w[i]).sum::<f32>() / replicas as f32).collect();
    let noloco = NoLoCo { every: steps, group_size: replicas, outer_lr: 1.0, momentum: 0.0, ..NoLoCo::default() };
    let diloco = DiLoCo { every: steps, outer_lr: 1.0, momentum: 0.0, ..DiLoCo::default() };
    for (name, sync) in [("noloco", Arc::new(noloco) as Arc<dyn OuterSync>), ("diloco", Arc::new(diloco))] {
        let report = run(&spec(1, replicas, steps, sync, Arc::new(FixedRouter)));
        for (r, w) in report.replica_weights.iter().enumerate() {
            assert_close(&flat(w), &mean, &format!("{name}, replica {r}"));
        }
    }
}

/// Several rounds with n = R, lr 1, momentum 0: NoLoCo and DiLoCo do the same thing.
#[test]
fn full_group_noloco_tracks_diloco_round_after_round() {
    let (replicas, steps) = (4, 6);
    let noloco = NoLoCo { every: 2, group_size: replicas, outer_lr: 1.0, momentum: 0.0, ..NoLoCo::default() };
    let diloco = DiLoCo { every: 2, outer_lr: 1.0, momentum: 0.0, ..DiLoCo::default() };
    let a = run(&spec(1, replicas, steps, Arc::new(noloco), Arc::new(FixedRouter)));
    let b = run(&spec(1, replicas, steps, Arc::new(diloco), Arc::new(FixedRouter)));
    for r in 0..replicas {
        let got = flat(&a.replica_weights[r]);
        let want = flat(&b.replica_weights[r]);
        let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "replica {r}: {worst}");
    }
}

#[test]
fn noloco_with_random_routing_trains_is_deterministic_and_measures_itself() {
    let noloco = NoLoCo { every: 4, ..NoLoCo::default() };
    let s = PipelineSpec { eval_every: 4, ..spec(2, 4, 16, Arc::new(noloco), Arc::new(RandomRouter { seed: 5 })) };
    let a = run(&s);
    let b = run(&s);
    assert_eq!(flat(&a.weights), flat(&b.weights), "same seed, same bits");
    let loss = a.metrics.mean_by_step("train_loss");
    assert!(loss.last().unwrap().1 < loss[0].1 - 0.5, "{loss:?}");
    // Outer rounds after steps 4, 8, 12, 16 (recorded at the step index 3, 7, 11, 15).
    let sync_steps: Vec<u64> = a.metrics.mean_by_step("sync_time").iter().map(|v| v.0).collect();
    assert_eq!(sync_steps, vec![3, 7, 11, 15]);
    assert!(a.metrics.mean_by_step("sync_bytes").iter().all(|v| v.1 > 0.0));
    let variance = a.metrics.mean_by_step("weight_variance");
    assert_eq!(variance.len(), 5, "at every evaluation: {variance:?}");
    assert_eq!(variance[0].1, 0.0, "replicas start identical");
    assert!(variance[1].1 > 0.0, "and drift apart between rounds");
    assert!(a.metrics.events.is_empty(), "nobody timed out: {:?}", a.metrics.events);
}

#[test]
fn gossip_keeps_replicas_closer_than_no_synchronisation() {
    let steps = 24;
    let noloco = NoLoCo { every: 4, ..NoLoCo::default() };
    let with_eval = |s: PipelineSpec| PipelineSpec { eval_every: steps, ..s };
    let synced = run(&with_eval(spec(1, 4, steps, Arc::new(noloco), Arc::new(FixedRouter))));
    let apart = run(&with_eval(spec(1, 4, steps, Arc::new(Independent), Arc::new(FixedRouter))));
    let last = |r: &RunReport| r.metrics.mean_by_step("weight_variance").last().unwrap().1;
    assert!(last(&synced) < 0.5 * last(&apart), "gossip {} vs independent {}", last(&synced), last(&apart));
}

#[test]
fn a_group_size_that_does_not_divide_the_replicas_is_rejected_before_the_run() {
    let s = spec(1, 6, 4, Arc::new(NoLoCo { group_size: 4, ..NoLoCo::default() }), Arc::new(FixedRouter));
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("noloco.group_size"), "{err}");
}

/// Elastic outer rounds with every replica there are the plain rounds: the same bits.
#[test]
fn elastic_diloco_with_everyone_there_is_the_same_bits_as_plain() {
    let (replicas, steps) = (3, 6);
    let plain = DiLoCo { every: 2, ..DiLoCo::default() };
    let elastic = DiLoCo { quorum_timeout_s: Some(1.0), ..plain };
    let a = run(&spec(1, replicas, steps, Arc::new(plain), Arc::new(FixedRouter)));
    let b = run(&spec(1, replicas, steps, Arc::new(elastic), Arc::new(FixedRouter)));
    for (x, y) in a.replica_weights.iter().zip(&b.replica_weights) {
        let (x, y) = (flat(x), flat(y));
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "elastic DiLoCo differs");
    }
}

/// The outer rounds' vectors stay on the worker's device between simulated workers (resident tensors,
/// the default) and give the same bits, virtual time and bytes as when they travel as bytes: NoLoCo's
/// gather within groups of two, DiLoCo's ring and tree all-reduce. One stage, so nothing but the outer
/// rounds sends tensors.
#[test]
fn outer_rounds_stay_on_the_device_and_train_as_bytes_do() {
    let syncs: [(&str, Arc<dyn OuterSync>); 3] = [
        ("noloco", Arc::new(NoLoCo { every: 2, ..NoLoCo::default() })),
        ("diloco ring", Arc::new(DiLoCo { every: 2, ..DiLoCo::default() })),
        ("diloco tree", Arc::new(DiLoCo { every: 2, collective: pipeline::Collective::Tree, ..DiLoCo::default() })),
    ];
    for (name, sync) in syncs {
        let base = spec(1, 4, 6, sync, Arc::new(FixedRouter));
        let resident = run(&PipelineSpec { resident_tensors: true, ..base.clone() });
        let bytes = run(&PipelineSpec { resident_tensors: false, ..base });
        for (r, (x, y)) in resident.replica_weights.iter().zip(&bytes.replica_weights).enumerate() {
            let (x, y) = (flat(x), flat(y));
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}: replica {r} differs");
        }
        assert_eq!(resident.virtual_time, bytes.virtual_time, "{name}");
        assert_eq!(resident.bytes_sent, bytes.bytes_sent, "{name}");
        assert!(resident.resident_bytes > resident.bytes_sent / 2, "{name}: the vectors stayed on the device");
        assert_eq!(bytes.resident_bytes, 0, "{name}");
    }
}
