//! One pipeline worker: stage `s` of replica `r`, as a genrl agent.
//!
//! Per step, GPipe-style: all micro-batches forward (activations sent on to the next stage, the last
//! stage computing the loss and starting the backward pass at once), then the backward passes as their
//! gradients come back; then the outer synchronisation and one optimizer step. Compute time is charged
//! to the agent's clock from the stage's FLOPs and the agent's device profile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use genrl::{AgentCtx, Clock};
use models::data::{Corpus, eval_batches, sample_batch};
use models::{AdamW, Stage, StageInput};
use transport::{PeerId, Transport};

use crate::collective::{GRADIENT_TAG, Mailbox, all_reduce_mean, run_outer_round};
use crate::error::{Error, Result};
use crate::plug::Recovery;
use crate::probe::WeightProbe;
use crate::spec::PipelineSpec;
use crate::sync::{OuterRound, OuterState};
use crate::wire::{Msg, from_wire, to_wire};

/// What a worker returns at the end.
#[derive(Debug)]
pub struct WorkerResult {
    /// Stage index.
    pub stage: usize,
    /// Replica index.
    pub replica: usize,
    /// Final weights of this stage, by name.
    pub weights: BTreeMap<String, Tensor>,
}

/// Flattens gradients in parameter-name order.
fn flatten(
    names: &[String],
    grads: &BTreeMap<String, Tensor>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for n in names {
        match grads.get(n) {
            Some(g) => out.extend(g.flatten_all()?.to_vec1::<f32>()?),
            None => out.extend(std::iter::repeat_n(0f32, shapes[n].iter().product())),
        }
    }
    Ok(out)
}

fn unflatten(
    names: &[String],
    flat: &[f32],
    shapes: &BTreeMap<String, Vec<usize>>,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    for n in names {
        let len: usize = shapes[n].iter().product();
        out.insert(n.clone(), Tensor::from_vec(flat[at..at + len].to_vec(), shapes[n].as_slice(), device)?);
        at += len;
    }
    Ok(out)
}

fn accumulate(into: &mut BTreeMap<String, Tensor>, from: BTreeMap<String, Tensor>) -> Result<()> {
    for (n, g) in from {
        let sum = match into.remove(&n) {
            Some(acc) => (acc + g)?,
            None => g,
        };
        into.insert(n, sum);
    }
    Ok(())
}

/// Runs worker `ctx.index` (stage `index / replicas`, replica `index % replicas`) for the whole run.
pub async fn run_worker<T: Transport, C: Clock>(
    ctx: AgentCtx<T, C>,
    spec: Arc<PipelineSpec>,
    corpus: Arc<Corpus>,
    probe: Option<Arc<WeightProbe>>,
) -> Result<WorkerResult> {
    let replicas = spec.replicas;
    let (s, r) = (ctx.index as usize / replicas, ctx.index as usize % replicas);
    let peer = |stage: usize, replica: usize| ctx.peers[stage * replicas + replica];
    let device = Device::Cpu;
    let specs = models::split_layers(spec.model.n_layers, spec.stages)?;
    let stage = Stage::new(&spec.model, specs[s].clone(), &device)?;
    let params = stage.params().clone();
    let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let shapes: BTreeMap<String, Vec<usize>> = params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    let mut optim = AdamW::new(spec.optim.clone(), spec.model.backend)?;
    let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), spec.peer_timeout, format!("s{s}r{r}"));
    let mut outer = spec.sync.start(&flatten(&names, &params.snapshot(), &shapes)?);
    let (mb, seq, m) = (spec.micro_batch, spec.seq, spec.micro_batches as u32);
    let fwd_flops = stage.forward_flops(mb, seq);
    let last = s + 1 == spec.stages;
    let eval_set = if spec.eval_every > 0 && r == 0 && s == 0 {
        eval_batches(&corpus.val, spec.eval_batches, mb, seq, &device)?
    } else {
        Vec::new()
    };

    let Recovery::CheckpointRestart { every: ckpt_every, bytes_per_s } = spec.recovery;
    let state_bytes = 3 * 4 * params.numel(); // weights and two Adam moments, f32
    let io_time = Duration::from_secs_f64(state_bytes as f64 / bytes_per_s);
    let mut checkpoint: Option<Checkpoint> = None;
    let mut pending_failures: Vec<(u64, usize)> = spec.failures.failures.clone();
    let mut step = 0u64;
    while step <= spec.steps {
        // A failure anywhere stops the swarm; everyone rolls back to its last checkpoint. (Every worker
        // knows the plan, as a coordinator would announce it.)
        if let Some(i) = pending_failures.iter().position(|&(at, _)| at == step) {
            let (_, failed) = pending_failures.remove(i);
            let (at, weights, saved_optim, saved_outer) = match &checkpoint {
                Some(c) => (c.step, c.weights.clone(), c.optim.clone(), c.outer.as_ref().map(|o| o.snapshot())),
                None => (0, BTreeMap::new(), AdamW::new(spec.optim.clone(), spec.model.backend)?, None),
            };
            if ctx.index == 0 {
                ctx.metrics.event(
                    ctx.clock.now(),
                    Some(failed as u32),
                    genrl::EventKind::Failure,
                    format!("worker {failed} failed at step {step}"),
                );
            }
            if weights.is_empty() {
                // No checkpoint yet: start over from the initial weights.
                let fresh = Stage::new(&spec.model, specs[s].clone(), &device)?;
                for (name, t) in fresh.params().snapshot() {
                    params.set(&name, &t)?;
                }
                outer = spec.sync.start(&flatten(&names, &params.snapshot(), &shapes)?);
            } else {
                for (name, t) in &weights {
                    params.set(name, t)?;
                }
                outer = saved_outer;
            }
            optim = saved_optim;
            ctx.clock.sleep(io_time).await;
            if ctx.index == 0 {
                ctx.metrics.event(
                    ctx.clock.now(),
                    None,
                    genrl::EventKind::Recovery,
                    format!("restored the step-{at} checkpoint; redoing {} steps", step - at),
                );
            }
            step = at;
            continue;
        }
        if step.is_multiple_of(ckpt_every) && step < spec.steps {
            checkpoint = Some(Checkpoint {
                step,
                weights: params.snapshot(),
                optim: optim.clone(),
                outer: outer.as_ref().map(|o| o.snapshot()),
            });
            ctx.clock.sleep(io_time).await;
        }
        if spec.eval_every > 0 && r == 0 && (step.is_multiple_of(spec.eval_every) || step == spec.steps) {
            let next = (!last).then(|| peer(s + 1, 0));
            evaluate(&ctx, &stage, &mut mail, &eval_set, spec.eval_batches, step, fwd_flops, next).await?;
        }
        if let Some(probe) = &probe
            && spec.eval_every > 0
            && (step.is_multiple_of(spec.eval_every) || step == spec.steps)
        {
            probe.add(step, s, &flatten(&names, &params.snapshot(), &shapes)?);
        }
        if step == spec.steps {
            break;
        }
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        // Kept for the backward pass of each micro-batch: its input variable, output and sender.
        let mut saved: BTreeMap<u32, (Option<Var>, Tensor, Option<PeerId>)> = BTreeMap::new();
        let mut losses = Vec::new();
        let waited_before = mail.waited();
        for micro in 0..m {
            let (input, targets, sender) = if s == 0 {
                let draw = step * u64::from(m) + u64::from(micro);
                let (ids, targets) = sample_batch(&corpus.train, mb, seq, spec.seed, draw, r as u64, &device)?;
                (Input::Tokens(ids), targets, None)
            } else {
                let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Forward { step: st, micro: mi, .. } if *st == step && *mi == micro);
                let (from, msg) = mail.take("activations", wanted).await?;
                let Msg::Forward { hidden, targets, .. } = msg else { return Err(unexpected()) };
                let h = Var::from_tensor(&from_wire(&hidden, &device)?)?;
                (Input::Hidden(h), from_wire(&targets, &device)?, Some(from))
            };
            let out = match &input {
                Input::Tokens(ids) => stage.forward(StageInput::Tokens(ids))?,
                Input::Hidden(h) => stage.forward(StageInput::Hidden(h.as_tensor()))?,
            };
            ctx.compute(fwd_flops).await;
            let input_var = match input {
                Input::Hidden(h) => Some(h),
                Input::Tokens(_) => None,
            };
            if last {
                let loss = stage.loss(&out, &targets)?;
                losses.push(f64::from(loss.to_vec0::<f32>()?));
                // Each micro-batch's loss is a mean over its tokens: scale so the step's gradient is the
                // mean over all micro-batches.
                let store = (loss / f64::from(m))?.backward()?;
                ctx.compute(2.0 * fwd_flops).await;
                accumulate(&mut grads, params.grads(&store))?;
                if let (Some(h), Some(from)) = (&input_var, sender) {
                    let g = store
                        .get(h.as_tensor())
                        .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                    mail.send(from, &Msg::Backward { step, micro, grad: to_wire(g)? }).await?;
                }
            } else {
                let next = spec.router.next_replica(step, micro, s, r, replicas);
                if next >= replicas {
                    return Err(Error::config("router", format!("replica {next} of {replicas} does not exist")));
                }
                mail.send(
                    peer(s + 1, next),
                    &Msg::Forward { step, micro, hidden: to_wire(&out)?, targets: to_wire(&targets)? },
                )
                .await?;
                saved.insert(micro, (input_var, out, sender));
            }
        }
        // Backward passes of the earlier stages, in the order their gradients arrive.
        for _ in 0..saved.len() {
            let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Backward { step: st, .. } if *st == step);
            let (_, msg) = mail.take("gradients", wanted).await?;
            let Msg::Backward { micro, grad, .. } = msg else { return Err(unexpected()) };
            let (input_var, out, sender) = saved
                .remove(&micro)
                .ok_or_else(|| Error::config("pipeline", format!("gradient for unknown micro-batch {micro}")))?;
            let g = from_wire(&grad, &device)?;
            let store = (out * g)?.sum_all()?.backward()?;
            ctx.compute(2.0 * fwd_flops).await;
            accumulate(&mut grads, params.grads(&store))?;
            if let (Some(h), Some(from)) = (&input_var, sender) {
                let gh = store
                    .get(h.as_tensor())
                    .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                mail.send(from, &Msg::Backward { step, micro, grad: to_wire(gh)? }).await?;
            }
        }
        if !losses.is_empty() {
            ctx.record("train_loss", step, losses.iter().sum::<f64>() / losses.len() as f64);
        }
        let grads = match spec.sync.gradient_collective() {
            Some(collective) if replicas > 1 => {
                let (t0, b0) = (ctx.clock.now(), mail.sent());
                let group: Vec<PeerId> = (0..replicas).map(|q| peer(s, q)).collect();
                let round = OuterRound { group: (0..replicas).collect(), collective, timeout: spec.peer_timeout };
                let flat = flatten(&names, &grads, &shapes)?;
                let mean = all_reduce_mean(&mut mail, &round, &group, r, step, GRADIENT_TAG, flat).await?;
                ctx.record("sync_time", step, (ctx.clock.now() - t0).as_secs_f64());
                ctx.record("sync_bytes", step, (mail.sent() - b0) as f64);
                unflatten(&names, &mean, &shapes, &device)?
            }
            _ => grads,
        };
        let stats = optim.step(&params, &grads)?;
        if last && r == 0 {
            ctx.record("lr", step, f64::from(stats.lr));
            ctx.record("grad_norm", step, f64::from(stats.grad_norm));
            if let Some(progress) = &spec.progress {
                progress.store(step + 1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Some(state) = outer.as_mut()
            && let Some(round) = spec.sync.round(step + 1, r, replicas)
        {
            let (t0, b0) = (ctx.clock.now(), mail.sent());
            let at = (s, r, replicas);
            outer_round(&ctx, &mut mail, state.as_mut(), &round, at, step, &params, &names, &shapes).await?;
            ctx.record("sync_time", step, (ctx.clock.now() - t0).as_secs_f64());
            ctx.record("sync_bytes", step, (mail.sent() - b0) as f64);
        }
        ctx.record("idle_time", step, (mail.waited() - waited_before).as_secs_f64());
        ctx.record("bytes_sent", step, mail.sent() as f64);
        step += 1;
    }
    Ok(WorkerResult { stage: s, replica: r, weights: params.snapshot() })
}

/// Runs the validation batches forward through replica 0's row of stages (`next`: the next stage's
/// replica 0, if any); the last stage records `val_loss`, the mean over the batches, at `step`.
#[allow(clippy::too_many_arguments)]
async fn evaluate<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    stage: &Stage,
    mail: &mut Mailbox<T, C>,
    eval_set: &[(Tensor, Tensor)],
    count: usize,
    step: u64,
    fwd_flops: f64,
    next: Option<PeerId>,
) -> Result<()> {
    let device = Device::Cpu;
    let mut losses = Vec::with_capacity(count);
    for index in 0..count as u32 {
        let (out, targets) = if stage.spec().first {
            let (ids, targets) = eval_set
                .get(index as usize)
                .ok_or_else(|| Error::config("pipeline.eval_batches", "validation set too small"))?;
            (stage.forward(StageInput::Tokens(ids))?, targets.clone())
        } else {
            let wanted =
                |_: &PeerId, m: &Msg| matches!(m, Msg::Eval { step: st, index: i, .. } if *st == step && *i == index);
            let (_, msg) = mail.take("validation activations", wanted).await?;
            let Msg::Eval { hidden, targets, .. } = msg else { return Err(unexpected()) };
            (stage.forward(StageInput::Hidden(&from_wire(&hidden, &device)?))?, from_wire(&targets, &device)?)
        };
        ctx.compute(fwd_flops).await;
        match next {
            Some(to) => {
                let msg = Msg::Eval { step, index, hidden: to_wire(&out)?, targets: to_wire(&targets)? };
                mail.send(to, &msg).await?;
            }
            None => losses.push(f64::from(stage.loss(&out, &targets)?.to_vec0::<f32>()?)),
        }
    }
    if !losses.is_empty() {
        ctx.record("val_loss", step, losses.iter().sum::<f64>() / losses.len() as f64);
    }
    Ok(())
}

/// What a checkpoint holds: the step it was taken before, the stage's weights, optimizer and outer state.
struct Checkpoint {
    step: u64,
    weights: BTreeMap<String, Tensor>,
    optim: AdamW,
    outer: Option<Box<dyn OuterState>>,
}

/// One outer round of this worker after inner step `step`, on its stage's weights.
#[allow(clippy::too_many_arguments)]
async fn outer_round<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    mail: &mut Mailbox<T, C>,
    state: &mut dyn OuterState,
    round: &OuterRound,
    (s, r, replicas): (usize, usize, usize),
    step: u64,
    params: &models::Params,
    names: &[String],
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<()> {
    let mut theta = flatten(names, &params.snapshot(), shapes)?;
    let row: Vec<PeerId> = (0..replicas).map(|q| ctx.peers[s * replicas + q]).collect();
    run_outer_round(ctx, mail, state, round, &row, (s, r), step, &mut theta).await?;
    for (name, t) in unflatten(names, &theta, shapes, &Device::Cpu)? {
        params.set(&name, &t)?;
    }
    Ok(())
}

enum Input {
    Tokens(Tensor),
    Hidden(Var),
}

fn unexpected() -> Error {
    Error::config("message", "unexpected message kind")
}
