//! The baseline pipeline: it computes what one process computes, DDP equals a bigger batch, replicas stay
//! identical, runs are deterministic, and a dead worker gives an error instead of a hang.

use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor};
use genrl::run_simulation;
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Llama, ModelConfig, OptimConfig};
use pipeline::{DataParallel, GradientScaling, PipelineSpec, Result, run_simulated};

fn corpus() -> Arc<Corpus> {
    let lang = SyntheticLanguage::new(&SyntheticConfig {
        train_tokens: 1 << 15,
        val_tokens: 2048,
        ..SyntheticConfig::default()
    })
    .expect("language");
    Arc::new(lang.corpus())
}

fn spec(stages: usize, replicas: usize, steps: u64) -> PipelineSpec {
    let model = ModelConfig::miniature(2);
    PipelineSpec {
        optim: OptimConfig { lr: 3e-3, warmup_steps: 1, total_steps: steps, grad_clip: 0.0, ..OptimConfig::default() },
        seed: 9,
        peer_timeout: Duration::from_secs(60),
        late_join: false,
        ..PipelineSpec::new(stages, replicas, steps, model)
    }
}

/// Per-step losses of the same training done in one process: every replica's micro-batches in one
/// loss (their mean), one backward pass, one optimizer step.
fn single_process_losses(spec: &PipelineSpec, corpus: &Corpus) -> models::Result<Vec<f64>> {
    let dev = Device::Cpu;
    let model = Llama::new(&spec.model, 1, &dev)?;
    let params = model.params();
    let mut opt = AdamW::new(spec.optim.clone(), spec.model.backend)?;
    let mut out = Vec::new();
    for step in 0..spec.steps {
        let mut losses = Vec::new();
        for r in 0..spec.replicas {
            for micro in 0..spec.micro_batches as u64 {
                let draw = step * spec.micro_batches as u64 + micro;
                let (ids, t) =
                    sample_batch(&corpus.train, spec.micro_batch, spec.seq, spec.seed, draw, r as u64, &dev)?;
                losses.push(model.loss(&ids, &t)?);
            }
        }
        let n = losses.len() as f64;
        let total = (Tensor::stack(&losses, 0)?.sum_all()? / n)?;
        out.push(f64::from(total.to_vec0::<f32>()?));
        opt.step(&params, &params.grads(&total.backward()?))?;
    }
    Ok(out)
}

fn pipeline_losses(report: &pipeline::RunReport) -> Vec<f64> {
    report.metrics.mean_by_step("train_loss").into_iter().map(|(_, v)| v).collect()
}

#[test]
fn a_two_stage_pipeline_trains_like_one_process() -> Result<()> {
    let corpus = corpus();
    let spec = spec(2, 1, 4);
    let report = run_simulation(run_simulated(&spec, corpus.clone()))??;
    let want = single_process_losses(&spec, &corpus)?;
    let got = pipeline_losses(&report);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "pipeline {got:?} vs single process {want:?}");
    }
    assert!(report.bytes_sent > 0 && report.virtual_time > Duration::ZERO);
    Ok(())
}

#[test]
fn ddp_equals_one_process_with_the_replicas_batch_and_keeps_replicas_identical() -> Result<()> {
    let corpus = corpus();
    let spec = spec(1, 3, 4);
    let report = run_simulation(run_simulated(&spec, corpus.clone()))??;
    let want = single_process_losses(&spec, &corpus)?;
    let got = pipeline_losses(&report);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "DDP {got:?} vs one process with 3x batch {want:?}");
    }
    for other in &report.replica_weights[1..] {
        for (name, t) in &report.replica_weights[0] {
            let a = t.flatten_all()?.to_vec1::<f32>()?;
            let b = other[name].flatten_all()?.to_vec1::<f32>()?;
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "replicas diverged in {name}");
        }
    }
    Ok(())
}

#[test]
fn tree_all_reduce_trains_like_the_ring_and_keeps_replicas_identical() -> Result<()> {
    let corpus = corpus();
    for replicas in [2, 3, 5] {
        let ring = run_simulation(run_simulated(&spec(1, replicas, 3), corpus.clone()))??;
        let tree_spec = PipelineSpec { sync: Arc::new(DataParallel::TREE), ..spec(1, replicas, 3) };
        let tree = run_simulation(run_simulated(&tree_spec, corpus.clone()))??;
        for (a, b) in pipeline_losses(&ring).iter().zip(pipeline_losses(&tree)) {
            assert!((a - b).abs() < 1e-4, "R={replicas}: ring {a} vs tree {b}");
        }
        for other in &tree.replica_weights[1..] {
            for (name, t) in &tree.replica_weights[0] {
                let (x, y) = (t.flatten_all()?.to_vec1::<f32>()?, other[name].flatten_all()?.to_vec1::<f32>()?);
                assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "R={replicas}: {name} diverged");
            }
        }
    }
    Ok(())
}

#[test]
fn elastic_data_parallelism_with_everyone_there_is_the_same_bits_as_plain() -> Result<()> {
    let corpus = corpus();
    for (base, replicas) in [(DataParallel::RING, 3), (DataParallel::TREE, 4)] {
        let mut plain = spec(1, replicas, 3);
        plain.model.backend = models::Backend::RepOps;
        plain.sync = Arc::new(base);
        let elastic = PipelineSpec {
            sync: Arc::new(DataParallel { elastic: Some(Duration::from_secs(1)), ..base }),
            ..plain.clone()
        };
        let a = run_simulation(run_simulated(&plain, corpus.clone()))??;
        let b = run_simulation(run_simulated(&elastic, corpus.clone()))??;
        assert_eq!(pipeline_losses(&a), pipeline_losses(&b), "R={replicas}");
        for (x, y) in a.replica_weights.iter().zip(&b.replica_weights) {
            for (name, t) in x {
                let (p, q) = (t.flatten_all()?.to_vec1::<f32>()?, y[name].flatten_all()?.to_vec1::<f32>()?);
                assert!(p.iter().zip(&q).all(|(u, v)| u.to_bits() == v.to_bits()), "R={replicas}: {name} differs");
            }
        }
    }
    Ok(())
}

#[test]
fn a_2x2_grid_learns_and_is_deterministic() -> Result<()> {
    let corpus = corpus();
    let spec = PipelineSpec { eval_every: 10, ..spec(2, 2, 30) };
    let a = run_simulation(run_simulated(&spec, corpus.clone()))??;
    let b = run_simulation(run_simulated(&spec, corpus))??;
    let (la, lb) = (pipeline_losses(&a), pipeline_losses(&b));
    assert_eq!(la, lb, "same seed, same losses");
    assert_eq!(a.virtual_time, b.virtual_time);
    assert!(la[29] < la[0] - 1.0, "loss did not fall: {la:?}");
    let val: Vec<(u64, f64)> = a.metrics.mean_by_step("val_loss");
    assert_eq!(
        val.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![0, 10, 20, 30],
        "evaluated every 10 steps and at the end"
    );
    assert!(val[3].1 < val[0].1 - 1.0, "validation loss did not fall: {val:?}");
    Ok(())
}

#[test]
fn every_replica_can_be_evaluated_and_the_loss_is_their_mean() -> Result<()> {
    let corpus = corpus();
    // Independent replicas on different data drift apart, so their validation losses differ.
    let independent = PipelineSpec { eval_every: 5, sync: Arc::new(pipeline::Independent), ..spec(2, 2, 10) };
    let first = run_simulation(run_simulated(&independent, corpus.clone()))??;
    let all = run_simulation(run_simulated(&PipelineSpec { eval_all_replicas: true, ..independent }, corpus))??;
    let rows = |r: &pipeline::RunReport| {
        let mut agents: Vec<_> = r.metrics.series("val_loss").iter().map(|s| s.agent).collect();
        agents.sort();
        agents.dedup();
        agents.len()
    };
    assert_eq!((rows(&first), rows(&all)), (1, 2), "one evaluating row, then both");
    let by_step = all.metrics.mean_by_step("val_loss");
    let at_end: Vec<f64> = all.metrics.series("val_loss").iter().filter(|s| s.step == 10).map(|s| s.value).collect();
    assert_eq!(at_end.len(), 2);
    assert_ne!(at_end[0], at_end[1], "the replicas drifted apart");
    assert_eq!(by_step.last().map(|v| v.1), Some((at_end[0] + at_end[1]) / 2.0));
    let alone = first.metrics.series("val_loss").last().map(|s| s.value).unwrap_or_default();
    assert!(at_end.contains(&alone), "replica 0's loss is one of the two: {alone} in {at_end:?}");
    assert_eq!(pipeline_losses(&first), pipeline_losses(&all), "evaluating more rows changes no training");
    Ok(())
}

#[test]
fn checkpoint_restart_puts_back_the_saved_state_and_costs_time() -> Result<()> {
    let corpus = corpus();
    let clean_spec = PipelineSpec {
        recovery: std::sync::Arc::new(pipeline::CheckpointRestart { every: 3, bytes_per_s: 1e6 }),
        ..spec(2, 2, 8)
    };
    let clean = run_simulation(run_simulated(&clean_spec, corpus.clone()))??;
    let failing_spec = PipelineSpec {
        world: genrl::World { failures: pipeline::FailurePlan { failures: vec![(5, 3)] }, ..clean_spec.world.clone() },
        ..clean_spec.clone()
    };
    let failed = run_simulation(run_simulated(&failing_spec, corpus))??;
    // Restored weights and optimizer state, then the same steps on the same data: the same final bits.
    for (name, t) in &clean.weights {
        let (a, b) = (t.flatten_all()?.to_vec1::<f32>()?, failed.weights[name].flatten_all()?.to_vec1::<f32>()?);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs after recovery");
    }
    // Steps 3 and 4 were trained twice, plus the restore: the run took longer in virtual time.
    assert!(failed.virtual_time > clean.virtual_time, "{:?} vs {:?}", failed.virtual_time, clean.virtual_time);
    let events = &failed.metrics.events;
    assert!(events.iter().any(|e| e.kind == genrl::EventKind::Failure && e.detail.contains("s1r1 failed at step 5")));
    assert!(events.iter().any(|e| e.kind == genrl::EventKind::Recovery && e.detail.contains("step-3")));
    Ok(())
}

#[test]
fn bad_specs_are_named() {
    let base = spec(1, 2, 3);
    let failures = pipeline::FailurePlan { failures: vec![(1, 9)] };
    let s = PipelineSpec { world: genrl::World { failures, ..base.world.clone() }, ..base };
    assert!(s.validate().unwrap_err().to_string().contains("world.failures"));
    let s = PipelineSpec { replicas: 3, ..spec(1, 2, 3) };
    assert!(s.validate().unwrap_err().to_string().contains("pipeline.world"), "a world of 2 agents for 3 workers");
    let s = PipelineSpec { stages: 3, ..spec(1, 1, 1) };
    assert!(s.validate().unwrap_err().to_string().contains("pipeline.stages"));
    let s = PipelineSpec { seq: 64, ..spec(1, 1, 1) };
    assert!(s.validate().unwrap_err().to_string().contains("pipeline.seq"));
    let s = PipelineSpec { replicas: 0, ..spec(1, 1, 1) };
    assert!(s.validate().unwrap_err().to_string().contains("pipeline.replicas"));
}

#[test]
fn whole_model_clipping_trains_like_one_process_and_per_stage_clipping_does_not() -> Result<()> {
    // A clip that binds at every step: one process clips the whole model's gradient; so does a pipeline
    // whose stages exchange their squared norms. Clipping each stage on its own norm is another update.
    // (Adam's epsilon well above the clipped gradients makes the update follow their scale, as SGD's.)
    let corpus = corpus();
    let clipped = |gradients| PipelineSpec {
        optim: OptimConfig { lr: 1.0, min_lr: 1.0, eps: 1e-2, grad_clip: 0.05, ..spec(2, 1, 4).optim },
        gradients,
        ..spec(2, 1, 4)
    };
    let want = single_process_losses(&clipped(GradientScaling::WholeModel), &corpus)?;
    let gap = |gradients| -> Result<f64> {
        let report = run_simulation(run_simulated(&clipped(gradients), corpus.clone()))??;
        let got = pipeline_losses(&report);
        assert_eq!(got.len(), want.len());
        Ok(got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max))
    };
    let whole = gap(GradientScaling::WholeModel)?;
    assert!(whole < 1e-4, "whole-model clipping is {whole} away from one process");
    let per_stage = gap(GradientScaling::PerStage)?;
    assert!(per_stage > 1e-3, "per-stage clipping is only {per_stage} away from one process");
    Ok(())
}

/// Micro-batch 1 skips stage 1 of 3 (an embedding, one block, a head).
#[derive(Debug)]
struct SkipsTheBlockOnce;

impl pipeline::Router for SkipsTheBlockOnce {
    fn path(&self, _step: u64, micro: u32, origin: usize, _stages: usize, _replicas: usize) -> Vec<pipeline::Hop> {
        if micro == 1 { vec![(0, origin), (2, origin)] } else { vec![(0, origin), (1, origin), (2, origin)] }
    }
}

#[test]
fn a_skipped_stage_is_rescaled_by_its_visits_only_per_stage() -> Result<()> {
    // With Adam's epsilon far above the gradients, a step moves each weight by about -lr/eps x gradient,
    // so the weight change shows the gradient's scale. The block is visited by 1 of 2 micro-batches:
    // per stage it averages over that one (twice the gradient); as one model it keeps loss / 2.
    let corpus = corpus();
    let run = |steps, gradients| {
        let spec = PipelineSpec {
            optim: OptimConfig {
                lr: 1e4,
                min_lr: 1e4,
                eps: 1e3,
                warmup_steps: 0,
                weight_decay: 0.0,
                grad_clip: 0.0,
                ..spec(3, 1, 1).optim
            },
            router: Arc::new(SkipsTheBlockOnce),
            edge_stages: true,
            gradients,
            ..PipelineSpec::new(3, 1, steps, ModelConfig::miniature(1))
        };
        run_simulation(run_simulated(&spec, corpus.clone())).map_err(pipeline::Error::from)?
    };
    let start = run(0, GradientScaling::PerStage)?.weights;
    let (per_stage, whole) = (run(1, GradientScaling::PerStage)?.weights, run(1, GradientScaling::WholeModel)?.weights);
    let moved = |w: &std::collections::BTreeMap<String, Tensor>, name: &str| -> Result<f64> {
        Ok(f64::from((&w[name] - &start[name])?.sqr()?.sum_all()?.sqrt()?.to_vec0::<f32>()?))
    };
    let mut seen = (false, false);
    for name in start.keys() {
        let ratio = moved(&per_stage, name)? / moved(&whole, name)?;
        if name.starts_with("layers.") {
            seen.0 = true;
            assert!((ratio - 2.0).abs() < 0.02, "{name}: the skipped block moved {ratio} times as far per stage");
        } else if moved(&whole, name)? > 0.0 {
            seen.1 = true;
            assert!((ratio - 1.0).abs() < 0.01, "{name}: a stage every micro-batch visits moved {ratio} times as far");
        }
    }
    assert!(seen.0 && seen.1, "names: {:?}", start.keys().collect::<Vec<_>>());
    Ok(())
}

/// A worker halted by a node that takes a place hears where the run goes on from, or that it cannot go
/// on: a `NoResume` stops it at once with the reason (rather than leave it waiting for its peer
/// timeout), and a `Resume` naming a step it kept no state for is an error naming the steps it has.
#[test]
fn a_halted_worker_stops_with_the_reason_when_the_run_cannot_resume() {
    use pipeline::collective::Mailbox;
    use pipeline::wire::Msg;
    let answers = [
        (Msg::NoResume { reason: "the rows drifted apart".into() }, "cannot resume the run: the rows drifted apart"),
        (
            Msg::Resume { step: 7, epoch: 1, checkpoint: false, departed: Vec::new() },
            "states of steps [0], not of step 7",
        ),
    ];
    for (answer, expected) in answers {
        let spec = Arc::new(PipelineSpec { replacement: pipeline::Replacement::Ready, ..spec(1, 2, 20) });
        let corpus = corpus();
        let out = run_simulation(async move {
            let swarm = genrl::SimSwarm::build(&spec.world, 3).expect("swarm");
            swarm
                .run(move |ctx| {
                    let (spec, corpus, answer) = (spec.clone(), corpus.clone(), answer.clone());
                    async move {
                        if ctx.index == 0 {
                            let trained = pipeline::worker::run_worker(ctx, spec, corpus, None).await;
                            return Ok(trained.err().map(|e| e.to_string()));
                        }
                        // Replica 1 never trains: replica 0 waits for it in step 0's all-reduce when it
                        // is told to halt.
                        let mut mail =
                            Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(60), "r");
                        let worker = ctx.peers[0];
                        mail.send(worker, &Msg::Replace).await.expect("sent");
                        let halted = |_: &transport::PeerId, m: &Msg| matches!(m, Msg::Halted { .. });
                        let (_, msg) = mail.take("the halt", halted).await.expect("halted");
                        assert!(matches!(msg, Msg::Halted { step: 0, epoch: 0, .. }), "{msg:?}");
                        mail.send(worker, &answer).await.expect("sent");
                        Ok(None)
                    }
                })
                .await
        })
        .expect("runtime");
        let error = out.into_iter().next().expect("two agents").expect("agent").expect("the worker stopped");
        assert!(error.contains(expected), "{error}");
    }
}

/// A killed worker's successor never takes its state from a worker that left the run for good: on the
/// simulated network, stage 1's replica 0 of a 2 × 3 grid leaves after step 2 (its node stops and its
/// key announces the leave), replica 2 is killed after step 5, and its successor copies replica 1 (the
/// strategy's first choice, replica 0, being gone); every worker still in the run finishes.
#[test]
fn a_successor_does_not_recover_from_a_worker_that_left() {
    /// The first replica of the failed worker's stage that did not fail (or re-initialise).
    #[derive(Debug)]
    struct FromReplica;
    impl pipeline::Recovery for FromReplica {
        fn name(&self) -> String {
            "from a replica".into()
        }
        fn source(
            &self,
            (fs, _): pipeline::Hop,
            failed: &[pipeline::Hop],
            _: usize,
            replicas: usize,
        ) -> pipeline::Source {
            (0..replicas)
                .find(|&q| !failed.contains(&(fs, q)))
                .map_or(pipeline::Source::ReInit, pipeline::Source::Replica)
        }
    }
    let spec = PipelineSpec {
        replacement: pipeline::Replacement::Ready,
        recovery: Arc::new(FromReplica),
        peer_timeout: Duration::from_secs(20),
        ..spec(2, 3, 12)
    };
    let spec = Arc::new(spec);
    let corpus = corpus();
    let out = run_simulation(async move {
        let swarm = genrl::SimSwarm::build(&spec.world, 3).expect("swarm");
        swarm
            .run(move |ctx| {
                let (spec, corpus) = (spec.clone(), corpus.clone());
                async move {
                    let early = |steps| Arc::new(PipelineSpec { steps, ..(*spec).clone() });
                    let run = |ctx, spec| pipeline::worker::run_worker(ctx, spec, corpus.clone(), None);
                    let outcome = match ctx.index {
                        // Trains two steps, then its node is gone and its key announces the leave.
                        3 => match run(ctx.clone(), early(2)).await {
                            Ok(_) => pipeline::worker::leave_run(ctx.clone(), spec, corpus.clone()).await.map(|_| None),
                            Err(e) => Err(e),
                        },
                        // Trains five steps, then its node is gone and a successor takes its place.
                        5 => match run(ctx.clone(), early(5)).await {
                            Ok(_) => {
                                let successor = Arc::new(PipelineSpec {
                                    replacement: pipeline::Replacement::Replaces,
                                    ..(*spec).clone()
                                });
                                let metrics = ctx.metrics.clone();
                                run(ctx, successor).await.map(|_| Some(format!("{:?}", metrics.snapshot().events)))
                            }
                            Err(e) => Err(e),
                        },
                        _ => run(ctx, spec).await.map(|_| None),
                    };
                    Ok(outcome.map_err(|e| e.to_string()))
                }
            })
            .await
    })
    .expect("runtime");
    let outcomes: Vec<_> = out.into_iter().map(|o| o.expect("agent")).collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "worker {i}: {outcome:?}");
    }
    let events = outcomes[5].as_ref().ok().cloned().flatten().expect("the successor's events");
    assert!(events.contains("copied the weights and optimizer moments of replica 1"), "{events}");
}

/// Trains `spec` with tensors handed on resident and as bytes, and checks the two runs end on the same
/// bits, in the same virtual time, with the same bytes counted; returns them (resident first).
fn resident_and_bytes(spec: &PipelineSpec) -> Result<(pipeline::RunReport, pipeline::RunReport)> {
    let corpus = corpus();
    let run = |resident_tensors: bool| {
        let s = PipelineSpec { resident_tensors, ..spec.clone() };
        run_simulation(run_simulated(&s, corpus.clone()))
    };
    let (resident, bytes) = (run(true)??, run(false)??);
    for (r, weights) in bytes.replica_weights.iter().enumerate() {
        for (name, t) in weights {
            let a = t.flatten_all()?.to_vec1::<f32>()?;
            let b = resident.replica_weights[r][name].flatten_all()?.to_vec1::<f32>()?;
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "replica {r}: {name} differs");
        }
    }
    assert_eq!(resident.virtual_time, bytes.virtual_time);
    assert_eq!(resident.bytes_sent, bytes.bytes_sent);
    assert!(bytes.bytes_sent > 0);
    assert_eq!(bytes.resident_bytes, 0, "nothing stays on the device when tensors travel as bytes");
    Ok((resident, bytes))
}

/// Activations and gradients handed on as resident tensors (the default on the simulated network) train
/// the same bits as when they travel as bytes, in the same virtual time, with the same bytes counted.
#[test]
fn resident_activations_train_as_bytes_do() -> Result<()> {
    let (resident, bytes) = resident_and_bytes(&PipelineSpec { eval_every: 2, ..spec(2, 2, 4) })?;
    assert!(resident.resident_bytes > resident.bytes_sent / 2, "most bytes are tensors left on their device");
    assert_eq!(resident.metrics.series("val_loss").len(), bytes.metrics.series("val_loss").len());
    assert!(!resident.metrics.series("val_loss").is_empty(), "evaluation ran, so its messages went too");
    Ok(())
}

/// A failed worker's state, sent by the worker that keeps a copy of it (weights and optimizer moments
/// after every step), arrives resident too, and the recovery is the same bits as with bytes.
#[test]
fn recovery_copies_travel_resident_and_recover_as_bytes_do() -> Result<()> {
    let base = PipelineSpec { recovery: std::sync::Arc::new(pipeline::Redundant), ..spec(2, 2, 6) };
    let failing = PipelineSpec {
        world: genrl::World { failures: pipeline::FailurePlan { failures: vec![(3, 2)] }, ..base.world.clone() },
        ..base
    };
    let (resident, _) = resident_and_bytes(&failing)?;
    let events = &resident.metrics.events;
    assert!(events.iter().any(|e| e.kind == genrl::EventKind::Recovery && e.detail.contains("redundant copy")));
    // What the copies add to the traffic is almost all elements left on their device (the rest: names,
    // shapes and headers).
    let plain = run_simulation(run_simulated(&spec(2, 2, 6), corpus()))??;
    let (added, added_resident) =
        (resident.bytes_sent - plain.bytes_sent, resident.resident_bytes - plain.resident_bytes);
    assert!(added_resident as f64 > 0.95 * added as f64, "{added_resident} of {added}");
    Ok(())
}
